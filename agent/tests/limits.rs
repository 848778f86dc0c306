//! Limits and lifecycle: timeout, payload, bad input, concurrency, queueing, health, SIGTERM, config.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{Agent, request, wait_file};
use serde_json::json;

const PY: &str = r#"
import os, time
if os.environ.get("SLOW_IMPORT"):
    time.sleep(float(os.environ["SLOW_IMPORT"]))

def handler(event, context):
    start = time.time()
    if event.get("marker"):
        open(event["marker"], "w").close()
    time.sleep(event.get("s", 0))
    return {"start": start, "end": time.time(), "pid": os.getpid()}
"#;

fn py(env: &[(&str, &str)]) -> Agent {
    let mut all = vec![("LAMBDA_HANDLER", "code.handler")];
    all.extend_from_slice(env);
    Agent::start("python3", PY, &all)
}

#[test]
fn overrun_is_killed_and_the_next_call_succeeds() {
    let agent = py(&[("LAMBDA_TIMEOUT_MS", "600")]);
    let pid = agent.invoke("{}").json()["pid"].as_i64().unwrap();
    let r = agent.invoke(r#"{"s": 30}"#);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-lambda-status"), Some("timeout"));
    let v = r.json();
    assert_eq!(v["errorType"], "Timeout");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("exceeded 600 ms"),
        "{v}"
    );
    // The overrunning worker was killed, not left sleeping (in the background: the 504 does not wait).
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..200 {
        if !proc.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!proc.exists(), "worker {pid} still alive");
    let r = agent.invoke("{}");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), agent.log_text());
    assert_ne!(r.json()["pid"].as_i64().unwrap(), pid);

    // The caller's deadline applies when it is shorter than the function's timeout.
    let r = agent.invoke_with(&[("X-Lambda-Deadline-Ms", "100")], br#"{"s": 5}"#);
    assert_eq!(r.status, 504);
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("exceeded 100 ms")
    );
    assert_eq!(agent.invoke("{}").status, 200);
    // A caller with no time left gets a 504 without costing a worker.
    let pid = agent.invoke("{}").json()["pid"].as_i64();
    let r = agent.invoke_with(&[("X-Lambda-Deadline-Ms", "0")], b"{}");
    assert_eq!(r.status, 504);
    assert_eq!(agent.invoke("{}").json()["pid"].as_i64(), pid);
}

#[test]
fn shell_overrun_kills_the_script_too() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("sleeper.pid");
    let script = "read x\nsh -c 'echo $$ > \"$MARK\"; exec sleep 30'\necho done\n";
    let agent = Agent::start(
        "shell",
        script,
        &[
            ("LAMBDA_TIMEOUT_MS", "300"),
            ("MARK", mark.to_str().unwrap()),
        ],
    );
    let r = agent.invoke("{}");
    assert_eq!(r.status, 504);
    // The script's own child (a grandchild of the worker) died with the worker's process group.
    let pid = std::fs::read_to_string(&mark).unwrap();
    let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    for _ in 0..100 {
        if !proc.exists()
            || std::fs::read_to_string(proc.join("stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "script child still running: {stat}"
    );
    std::fs::remove_file(&mark).unwrap();
    // The replacement worker serves the next call (which overruns again, on a fresh worker).
    assert_eq!(
        agent
            .invoke_with(&[("X-Lambda-Deadline-Ms", "5000")], b"{}")
            .status,
        504
    );
    assert!(
        mark.exists(),
        "the replacement worker did not run the script"
    );
}

#[test]
fn payload_limit_and_invalid_events() {
    let agent = Agent::start("shell", "cat\n", &[("LAMBDA_MAX_PAYLOAD_BYTES", "100")]);
    let fits = format!("\"{}\"", "a".repeat(98));
    assert_eq!(agent.invoke(&fits).status, 200);
    let r = agent.invoke(&format!("\"{}\"", "a".repeat(99)));
    assert_eq!(r.status, 413);
    assert_eq!(r.header("x-lambda-status"), Some("too-large"));
    assert_eq!(r.json()["errorType"], "PayloadTooLarge");
    assert!(r.header("x-lambda-invocation-id").is_some());

    // Chunked (no Content-Length): refused once the limit is passed.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    s.write_all(b"POST /invoke HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 80, "1".repeat(80));
    s.write_all(chunk.as_bytes()).unwrap();
    s.write_all(chunk.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(s);
    assert_eq!(common::read_response(&mut reader).unwrap().status, 413);

    for bad in ["", "{", "{\"a\":}", "nope", "[1,]"] {
        let r = agent.invoke(bad);
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(r.json()["errorType"], "InvalidEvent");
    }
    let r = agent.invoke_with(&[("X-Lambda-Invocation-Id", "has space")], b"{}");
    assert_eq!(
        (r.status, r.json()["errorType"].as_str()),
        (400, Some("InvalidInvocationId"))
    );
    let r = agent.invoke_with(&[("X-Lambda-Deadline-Ms", "soon")], b"{}");
    assert_eq!(
        (r.status, r.json()["errorType"].as_str()),
        (400, Some("InvalidDeadline"))
    );
}

#[test]
fn workers_run_in_parallel_and_calls_queue_when_all_are_busy() {
    let agent = py(&[("LAMBDA_CONCURRENCY", "3")]);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let port = agent.port;
            std::thread::spawn(move || {
                request(port, "POST", "/invoke", &[], br#"{"s": 0.4}"#)
                    .unwrap()
                    .json()
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let latest_start = results
        .iter()
        .map(|r| r["start"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let earliest_end = results
        .iter()
        .map(|r| r["end"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "calls did not overlap: {results:?}"
    );
    let mut pids: Vec<i64> = results.iter().map(|r| r["pid"].as_i64().unwrap()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three distinct workers: {results:?}");

    // One worker: a second call waits for the first; with a short deadline it times out waiting.
    let agent = py(&[]);
    let marker = agent.path("started");
    let port = agent.port;
    let body = json!({"s": 0.8, "marker": marker}).to_string();
    let first =
        std::thread::spawn(move || request(port, "POST", "/invoke", &[], body.as_bytes()).unwrap());
    wait_file(&marker, Duration::from_secs(10));
    let health = request(port, "GET", "/healthz", &[], b"").unwrap().json();
    assert_eq!(health["busy"], 1);
    let r = agent.invoke_with(&[("X-Lambda-Deadline-Ms", "100")], b"{}");
    assert_eq!(r.status, 504);
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("no worker became free")
    );
    let queued = agent.invoke("{}");
    assert_eq!(queued.status, 200);
    let first = first.join().unwrap().json();
    assert!(queued.json()["start"].as_f64().unwrap() >= first["end"].as_f64().unwrap());
    assert_eq!(
        queued.json()["pid"],
        first["pid"],
        "the busy worker was not replaced"
    );
}

#[test]
fn healthz_is_503_until_the_workers_are_warm() {
    let agent = Agent::spawn(
        "python3",
        PY,
        &[("LAMBDA_HANDLER", "code.handler"), ("SLOW_IMPORT", "1.5")],
    );
    let mut saw_503 = false;
    for _ in 0..100 {
        if let Ok(r) = request(agent.port, "GET", "/healthz", &[], b"") {
            assert_eq!(
                r.status,
                503,
                "healthy before the import finished: {}",
                r.text()
            );
            assert_eq!(r.json()["status"], "starting");
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "no healthz answer; log:\n{}", agent.log_text());
    let bin = env!("CARGO_BIN_EXE_lambda-agent");
    let check = || {
        Command::new(bin)
            .arg("healthcheck")
            .env("LAMBDA_PORT", agent.port.to_string())
            .status()
            .unwrap()
    };
    assert!(!check().success());
    agent.wait_healthy(Duration::from_secs(20));
    assert!(check().success());
    let r = request(agent.port, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(
        r.json(),
        json!({"status": "ok", "runtime": "python3", "workers": 1, "busy": 0, "function": "tests/fn"})
    );
    let nobody = common::free_port();
    assert!(
        !Command::new(bin)
            .arg("healthcheck")
            .env("LAMBDA_PORT", nobody.to_string())
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn sigterm_finishes_in_flight_invocations() {
    let mut agent = py(&[]);
    let marker = agent.path("started");
    let port = agent.port;
    let body = json!({"s": 0.7, "marker": marker}).to_string();
    let call =
        std::thread::spawn(move || request(port, "POST", "/invoke", &[], body.as_bytes()).unwrap());
    wait_file(&marker, Duration::from_secs(10));
    agent.sigterm();
    let r = call.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", agent.log_text());
    assert!(
        request(port, "GET", "/healthz", &[], b"").is_err(),
        "still accepting after SIGTERM"
    );
    let pid = r.json()["pid"].as_i64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "worker {pid} outlived the agent"
    );
}

#[test]
fn bad_configuration_fails_with_a_clear_message() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda-agent"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("LAMBDA_RUNTIME is not set"), "{err}");
    let (code, err) = run(&[("LAMBDA_RUNTIME", "python3"), ("LAMBDA_TIMEOUT_MS", "-5")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("LAMBDA_TIMEOUT_MS=\"-5\" is not a positive integer"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("w");
    let (code, err) = run(&[
        ("LAMBDA_RUNTIME", "shell"),
        ("LAMBDA_CODE", "/nonexistent/code"),
        ("LAMBDA_WORK_DIR", work.to_str().unwrap()),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read the function code at /nonexistent/code"),
        "{err}"
    );
    std::fs::write(dir.path().join("code"), "x").unwrap();
    let (code, err) = run(&[
        ("LAMBDA_RUNTIME", "python3"),
        ("LAMBDA_PYTHON", "/nonexistent/python9"),
        ("LAMBDA_CODE", dir.path().join("code").to_str().unwrap()),
        ("LAMBDA_WORK_DIR", work.to_str().unwrap()),
        ("LAMBDA_PORT", &common::free_port().to_string()),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot start the python3 worker (/nonexistent/python9)"),
        "{err}"
    );
    let mut out = String::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lambda-agent"))
        .arg("bogus")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(2));
    assert!(out.contains("unknown command"), "{out}");
}
