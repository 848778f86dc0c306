import platform


def handler(event, context):
    return {
        "hello": event.get("name", "world"),
        "python": platform.python_version(),
        "invocation": context.invocation_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
