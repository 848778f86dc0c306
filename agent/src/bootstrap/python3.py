# The lambda-agent's python3 worker: imports the function's module once, then answers framed requests
# (see the agent's frame.rs) forever. argv: CODE_DIR MODULE FUNCTION FUNCTION_NAME MEMORY_MB, or
# CODE_DIR --generic for a pool agent's generic worker: the interpreter starts, says ready, and learns
# its function (and its environment) from one `load` frame before importing it.
import io
import json
import os
import sys
import time
import traceback

# Written to stderr before each reply: the agent ends the invocation's captured output there.
END_OF_INVOCATION = b"\x1f\x1flambda-invocation-end\n"

# Compact like node's JSON.stringify: fewer bytes on every hop.
compact = json.JSONEncoder(separators=(",", ":")).encode


def main():
    code_dir = sys.argv[1]
    generic = sys.argv[2:3] == ["--generic"]
    if not generic:
        module_name, function_name, lambda_name, memory_mb = sys.argv[2:6]
    # Private copies of the protocol pipes; fds 0 and 1 then point where user code may safely use them:
    # stdin at /dev/null, stdout at stderr (the container log), so a print() cannot corrupt a frame.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), line_buffering=True, write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), line_buffering=True, write_through=True)
    sys.stdin = open(os.devnull)

    def send(kind, payload):
        if kind != b"ready":
            # Ends this invocation's output on stderr (the agent's per-invocation log capture);
            # a function that closed or replaced fd 2 costs its capture, never its reply.
            try:
                os.write(2, END_OF_INVOCATION)
            except OSError:
                pass
        proto_out.write(b"%s %d\n" % (kind, len(payload)))
        proto_out.write(payload)
        proto_out.flush()

    def error_payload(exc, skip_frames):
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        # One entry per line ("  File ..., line N, in f" then its source), without the ^^^ markers.
        stack = [
            line.rstrip()
            for entry in traceback.format_list(traceback.extract_tb(tb))
            for line in entry.splitlines()
            if line.strip() and line.strip().strip("^~") != ""
        ]
        body = {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": stack}
        return compact(body).encode()

    if generic:
        send(b"ready", b"")
        header = proto_in.readline()
        if not header:
            return  # the agent closed the pipe before specialising: shut down
        kind, length = header.split()
        if kind != b"load":
            sys.exit("generic worker: expected a load frame, got %r" % header[:40])
        spec = json.loads(proto_in.read(int(length)))
        module_name, function_name = spec["module"], spec["function"]
        lambda_name, memory_mb = spec["functionName"], str(spec["memoryMb"])
        # The function's environment, as a dedicated container would have had it from the start.
        os.environ.update(spec.get("env") or {})

    sys.path.insert(0, code_dir)
    handler, init_error = None, None
    try:
        import importlib

        module = importlib.import_module(module_name)
        handler = getattr(module, function_name, None)
        if not callable(handler):
            init_error = compact({
                "errorType": "HandlerNotFound",
                "errorMessage": "module '%s' has no function '%s'" % (module_name, function_name),
                "stackTrace": [],
            }).encode()
    except BaseException as exc:  # noqa: B902 — a SystemExit in module code is an init error too
        body = json.loads(error_payload(exc, 1))
        body["errorMessage"] = "cannot import module '%s': %s: %s" % (module_name, body["errorType"], body["errorMessage"])
        body["errorType"] = "ImportModuleError"
        init_error = compact(body).encode()
        traceback.print_exc()

    class Context:
        __slots__ = ("invocation_id", "aws_request_id", "function_name", "memory_limit_in_mb", "_deadline")

        def __init__(self, invocation_id, remaining_ms):
            self.invocation_id = self.aws_request_id = invocation_id
            self.function_name = lambda_name
            self.memory_limit_in_mb = int(memory_mb)
            self._deadline = time.monotonic() + remaining_ms / 1000.0

        def get_remaining_time_in_millis(self):
            return max(0, int((self._deadline - time.monotonic()) * 1000))

    send(b"ready", b"")
    loads = json.loads
    dumps = compact
    while True:
        header = proto_in.readline()
        if not header:
            return  # the agent closed the pipe: shut down
        invocation_id, remaining_ms, length = header.split()
        event = proto_in.read(int(length))
        if init_error is not None:
            send(b"error", init_error)
            continue
        try:
            result = handler(loads(event), Context(invocation_id.decode(), int(remaining_ms)))
        except Exception as exc:
            traceback.print_exc()
            send(b"error", error_payload(exc, 1))
            continue
        try:
            payload = dumps(result).encode()
        except (TypeError, ValueError) as exc:
            send(b"error", compact({
                "errorType": "ResultNotSerializable",
                "errorMessage": "the handler's result is not JSON: %s" % exc,
                "stackTrace": [],
            }).encode())
            continue
        send(b"ok", payload)


main()
