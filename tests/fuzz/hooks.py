"""Schemathesis checks of the gateway's own contract, loaded by tests/api_fuzz.rs
(SCHEMATHESIS_HOOKS). Beyond the built-in checks (not_a_server_error, status codes, content
types and response schemas as /openapi.json documents them):

- error_body_shape: every error response (4xx, 5xx) is JSON in the documented `Error` shape,
  `{"error": {"code", "reason", "message", "details"?}}` with `code` equal to the status, a
  CamelCase `reason` and a message; or, where the operation documents it for that status, a
  function's own `FunctionError` (`{"errorType", "errorMessage", ...}`).
- no_internal_error: no 500 ever, and no 503 `StoreUnavailable` (etcd is up during the run:
  such a 503 is bad input that reached the store unchecked).
"""

import json
import re

import schemathesis

REASON = re.compile(r"^[A-Z][A-Za-z]*$")
ERROR_FIELDS = {"code", "reason", "message", "details"}


def _snippet(response):
    return repr((response.content or b"")[:300].decode("utf-8", "replace"))


def _documented_schema(case, status):
    responses = case.operation.definition.raw.get("responses", {})
    doc = responses.get(str(status)) or responses.get("default") or {}
    return json.dumps(doc.get("content", {}))


def _error_problem(body, status):
    if not isinstance(body, dict) or set(body) != {"error"}:
        return "the body is not an object with exactly the key `error`"
    err = body["error"]
    if not isinstance(err, dict):
        return "`error` is not an object"
    extra = set(err) - ERROR_FIELDS
    if extra:
        return f"`error` has undocumented keys {sorted(extra)}"
    if err.get("code") != status:
        return f"`error.code` is {err.get('code')!r}, not the status {status}"
    if not isinstance(err.get("reason"), str) or not REASON.match(err["reason"]):
        return f"`error.reason` {err.get('reason')!r} is not CamelCase"
    if not isinstance(err.get("message"), str) or not err["message"]:
        return "`error.message` is missing or empty"
    if "details" in err and not isinstance(err["details"], list):
        return "`error.details` is not an array"
    return None


def _function_error_problem(body):
    if not isinstance(body, dict):
        return "not an object"
    if not isinstance(body.get("errorType"), str) or not isinstance(body.get("errorMessage"), str):
        return "no string errorType and errorMessage"
    return None


@schemathesis.check
def error_body_shape(ctx, response, case):
    status = response.status_code
    if status < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/json"):
        raise AssertionError(
            f"{status} with content-type {content_type!r}, not application/json: {_snippet(response)}"
        )
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{status} body is not JSON ({e}): {_snippet(response)}")
    problem = _error_problem(body, status)
    if problem is None:
        return None
    if "FunctionError" in _documented_schema(case, status) and _function_error_problem(body) is None:
        return None
    raise AssertionError(f"{status} error body not in the documented shape: {problem}: {_snippet(response)}")


@schemathesis.check
def no_internal_error(ctx, response, case):
    status = response.status_code
    if status == 500:
        raise AssertionError(f"500: {_snippet(response)}")
    if status == 503:
        try:
            reason = json.loads(response.content).get("error", {}).get("reason")
        except (ValueError, AttributeError):
            reason = None
        if reason == "StoreUnavailable":
            raise AssertionError(f"503 StoreUnavailable while etcd is up: {_snippet(response)}")
    return None
