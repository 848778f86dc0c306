//! The three runtimes end to end through the real agent binary: results, context, errors, logs.

mod common;

use common::{Agent, Conn};
use serde_json::json;

const PY: &str = r#"
import os, sys, time

def handler(event, context):
    op = event.get("op")
    if op == "echo":
        return {"event": event, "id": context.invocation_id, "fn": context.function_name,
                "mem": context.memory_limit_in_mb, "remaining": context.get_remaining_time_in_millis(),
                "pid": os.getpid()}
    if op == "raise":
        raise ValueError(event["msg"])
    if op == "print":
        print("printed on stdout")
        sys.stdout.write("written on stdout\n")
        return "clean"
    if op == "exit":
        os._exit(3)
    if op == "set":
        return {1, 2}
    if op == "none":
        return None
    if op == "sleep":
        start = time.time()
        if event.get("marker"):
            open(event["marker"], "w").close()
        time.sleep(event["s"])
        return {"start": start, "end": time.time(), "pid": os.getpid()}
    return event
"#;

#[test]
fn python_result_context_and_headers() {
    let agent = Agent::start(
        "python3",
        PY,
        &[
            ("LAMBDA_HANDLER", "code.handler"),
            ("LAMBDA_MEMORY_MB", "256"),
        ],
    );
    let r = agent.invoke_with(
        &[
            ("X-Lambda-Invocation-Id", "inv-1"),
            ("X-Lambda-Deadline-Ms", "5000"),
        ],
        br#"{"op":"echo","x":[1,2]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-lambda-status"), Some("ok"));
    assert_eq!(r.header("x-lambda-invocation-id"), Some("inv-1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let ms: f64 = r.header("x-lambda-duration-ms").unwrap().parse().unwrap();
    assert!(ms >= 0.0);
    let v = r.json();
    assert_eq!(v["event"], json!({"op": "echo", "x": [1, 2]}));
    assert_eq!(
        (v["id"].as_str(), v["fn"].as_str(), v["mem"].as_i64()),
        (Some("inv-1"), Some("tests/fn"), Some(256))
    );
    let remaining = v["remaining"].as_i64().unwrap();
    assert!(remaining > 4000 && remaining <= 5000, "{remaining}");

    // A generated id when none is given; None → null; prints don't corrupt the protocol but reach the log.
    let r = agent.invoke(r#"{"op":"none"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, "null"));
    assert_eq!(r.header("x-lambda-invocation-id").map(str::len), Some(32));
    let r = agent.invoke(r#"{"op":"print"}"#);
    assert_eq!((r.status, r.json()), (200, json!("clean")));
    common::wait_log(&agent, "printed on stdout");
    common::wait_log(&agent, "written on stdout");
}

#[test]
fn python_exception_is_structured() {
    let agent = Agent::start("python3", PY, &[("LAMBDA_HANDLER", "code.handler")]);
    let r = agent.invoke(r#"{"op":"raise","msg":"bad input"}"#);
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-lambda-status"), Some("error"));
    let v = r.json();
    assert_eq!(
        (v["errorType"].as_str(), v["errorMessage"].as_str()),
        (Some("ValueError"), Some("bad input"))
    );
    let stack: Vec<&str> = v["stackTrace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        stack
            .iter()
            .any(|l| l.contains("code.py") && l.contains("in handler")),
        "{stack:?}"
    );
    assert!(!stack.iter().any(|l| l.contains("bootstrap")), "{stack:?}");
    // The traceback is logged with the invocation id.
    // (Forwarded asynchronously, so it may land just after the reply.)
    let id = r.header("x-lambda-invocation-id").unwrap();
    let line = format!("[tests/fn {id}] ValueError: bad input");
    common::wait_log(&agent, &line);

    let r = agent.invoke(r#"{"op":"set"}"#);
    assert_eq!(
        (r.status, r.json()["errorType"].as_str()),
        (502, Some("ResultNotSerializable"))
    );
    // The worker survives function errors.
    assert_eq!(agent.invoke(r#"{"op":"echo"}"#).status, 200);
}

#[test]
fn python_import_error_and_missing_handler() {
    let agent = Agent::start("python3", "import nonexistent_module_xyz\n", &[]);
    let r = agent.invoke("{}");
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["errorType"], "ImportModuleError");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("nonexistent_module_xyz"),
        "{v}"
    );

    let agent = Agent::start("python3", "def other(e, c): return 1\n", &[]);
    let v = agent.invoke("{}").json();
    assert_eq!(v["errorType"], "HandlerNotFound");
}

#[test]
fn worker_that_dies_is_replaced() {
    let agent = Agent::start("python3", PY, &[("LAMBDA_HANDLER", "code.handler")]);
    let pid = agent.invoke(r#"{"op":"echo"}"#).json()["pid"].as_i64();
    let r = agent.invoke(r#"{"op":"exit"}"#);
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["errorType"], "WorkerExited");
    let r = agent.invoke(r#"{"op":"echo"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.json()["pid"].as_i64(), pid);
}

const NODE: &str = r#"
exports.handler = async (event, context) => {
  if (event.op === 'throw') { throw new TypeError('wrong type: ' + event.v); }
  if (event.op === 'string') { throw 'plain string'; }
  if (event.op === 'sleep') { await new Promise((r) => setTimeout(r, event.ms)); }
  if (event.op === 'log') { console.log('node says hi'); process.stdout.write('raw write\n'); }
  return { event, id: context.invocationId, fn: context.functionName, pid: process.pid,
           remaining: context.getRemainingTimeInMillis() };
};
exports.sync = (event) => event.n * 2;
exports.callback = (event, context, cb) => setTimeout(() => cb(null, { cb: event.n }), 5);
"#;

#[test]
fn node_async_sync_callback_and_errors() {
    let agent = Agent::start("node", NODE, &[]);
    let r = agent.invoke_with(
        &[("X-Lambda-Invocation-Id", "n-1")],
        br#"{"op":"echo","a":"b"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["event"]["a"].as_str(), v["id"].as_str(), v["fn"].as_str()),
        (Some("b"), Some("n-1"), Some("tests/fn"))
    );

    let r = agent.invoke(r#"{"op":"throw","v":7}"#);
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(
        (v["errorType"].as_str(), v["errorMessage"].as_str()),
        (Some("TypeError"), Some("wrong type: 7"))
    );
    let stack = v["stackTrace"].as_array().unwrap();
    assert!(stack[0].as_str().unwrap().contains("index.js"), "{stack:?}");
    assert!(
        !stack
            .iter()
            .any(|l| l.as_str().unwrap().contains("bootstrap")),
        "{stack:?}"
    );

    let v = agent.invoke(r#"{"op":"string"}"#).json();
    assert_eq!(
        (v["errorType"].as_str(), v["errorMessage"].as_str()),
        (Some("Error"), Some("plain string"))
    );
    let r = agent.invoke(r#"{"op":"log"}"#);
    assert_eq!(r.status, 200);
    common::wait_log(&agent, "node says hi");
    common::wait_log(&agent, "raw write");

    let agent = Agent::start("node", NODE, &[("LAMBDA_HANDLER", "index.sync")]);
    assert_eq!(agent.invoke(r#"{"n":21}"#).json(), json!(42));
    let agent = Agent::start("node", NODE, &[("LAMBDA_HANDLER", "index.callback")]);
    assert_eq!(agent.invoke(r#"{"n":3}"#).json(), json!({"cb": 3}));
}

#[test]
fn node_es_module_and_load_errors() {
    let agent = Agent::start(
        "node",
        "export const handler = async (e) => ({ esm: e.x });\n",
        &[("LAMBDA_HANDLER", "app.handler")],
    );
    assert_eq!(agent.invoke(r#"{"x":1}"#).json(), json!({"esm": 1}));
    let agent = Agent::start("node", "this is not javascript", &[]);
    let v = agent.invoke("{}").json();
    assert_eq!(v["errorType"], "ImportModuleError", "{v}");
    let agent = Agent::start("node", "exports.other = () => 1;", &[]);
    assert_eq!(agent.invoke("{}").json()["errorType"], "HandlerNotFound");
}

const SH: &str = r#"
event=$(cat)
case "$event" in
  *fail*) echo "first problem" >&2; echo "second problem" >&2; exit 3 ;;
  *text*) echo "just some text" ;;
  *env*) printf '{"id":"%s"}' "$LAMBDA_INVOCATION_ID" ;;
  *) printf '{"got":%s}\n' "$event" ;;
esac
"#;

#[test]
fn shell_stdout_json_text_and_exit_status() {
    let agent = Agent::start("shell", SH, &[]);
    let r = agent.invoke(r#"{"a": [1, 2]}"#);
    assert_eq!((r.status, r.json()), (200, json!({"got": {"a": [1, 2]}})));
    assert_eq!(
        agent.invoke(r#"{"text":1}"#).json(),
        json!("just some text")
    );
    let r = agent.invoke_with(&[("X-Lambda-Invocation-Id", "sh-9")], br#"{"env":1}"#);
    assert_eq!(r.json(), json!({"id": "sh-9"}));
    let r = agent.invoke(r#"{"fail":1}"#);
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["errorType"], "ExitStatus");
    assert_eq!(v["errorMessage"], "first problem\nsecond problem");
    common::wait_log(&agent, "second problem");
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let agent = Agent::start("shell", "cat\n", &[]);
    let mut conn = Conn::open(agent.port).unwrap();
    for i in 0..20 {
        let r = conn
            .send("POST", "/invoke", &[], format!("{{\"i\":{i}}}").as_bytes())
            .unwrap();
        assert_eq!((r.status, r.json()), (200, json!({"i": i})));
    }
    let r = conn.send("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(
        r.json(),
        json!({"status": "ok", "runtime": "shell", "function": "tests/fn", "workers": 1, "busy": 0})
    );
    assert_eq!(conn.send("GET", "/nope", &[], b"").unwrap().status, 404);
    assert_eq!(conn.send("GET", "/invoke", &[], b"").unwrap().status, 405);
}

/// `X-Lambda-Log-Type: Tail` → the invocation's own output, base64 in `X-Lambda-Log-Result`.
fn log_result(r: &common::Resp) -> Option<String> {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-lambda-log-result")?)
        .expect("base64");
    Some(String::from_utf8(b).expect("utf-8"))
}

#[test]
fn each_invocation_can_get_its_own_output_back() {
    let tail = [("X-Lambda-Log-Type", "Tail")];
    let py = Agent::start("python3", PY, &[("LAMBDA_HANDLER", "code.handler")]);
    let r = py.invoke_with(&tail, br#"{"op":"print"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        log_result(&r).as_deref(),
        Some("printed on stdout\nwritten on stdout\n")
    );
    // The next one has only its own (none here), and only when asked.
    let r = py.invoke_with(&tail, br#"{"op":"none"}"#);
    assert_eq!(log_result(&r).as_deref(), Some(""));
    assert_eq!(log_result(&py.invoke(r#"{"op":"print"}"#)), None);
    // An exception's traceback is the failed invocation's output.
    let r = py.invoke_with(&tail, br#"{"op":"raise","msg":"bad input"}"#);
    assert_eq!(r.status, 502);
    let logs = log_result(&r).expect("logs");
    assert!(logs.contains("ValueError: bad input"), "{logs}");
    // The end markers never reach the container log.
    common::wait_log(&py, "written on stdout");
    assert!(!py.log_text().contains("lambda-invocation-end"));

    let sh = Agent::start("shell", SH, &[]);
    let r = sh.invoke_with(&tail, br#"{"fail": 1}"#);
    assert_eq!(r.status, 502);
    assert_eq!(
        log_result(&r).as_deref(),
        Some("first problem\nsecond problem\n")
    );
}

#[test]
fn node_output_is_captured_per_invocation() {
    let agent = Agent::start("node", NODE, &[]);
    let r = agent.invoke_with(&[("X-Lambda-Log-Type", "tail")], br#"{"op":"log"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = log_result(&r).expect("logs");
    assert!(logs.contains("node says hi"), "{logs}");
}
