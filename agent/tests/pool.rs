//! Pool mode end to end on the real agent binary: generic workers of each runtime specialised
//! once over the authenticated endpoint, serving that function only, secrets as files that go
//! with the agent, release and idle exit.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, free_port, request};
use serde_json::json;

const TOKEN: &str = "test-pool-token-0123456789";

/// Starts a pool agent for `runtime` and waits until its generic workers are warm.
fn pool_agent(runtime: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let log = dir.path().join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_lambda-agent"))
        .env("LAMBDA_POOL", "1")
        .env("LAMBDA_RUNTIME", runtime)
        .env("LAMBDA_POOL_WORKERS", "2")
        .env("LAMBDA_POOL_TOKEN_FILE", &token)
        .env("LAMBDA_SECRETS_DIR", dir.path().join("secrets"))
        .env("LAMBDA_WORK_DIR", dir.path().join("work"))
        .env("LAMBDA_PORT", port.to_string())
        .env("LAMBDA_MEMORY_MB", "256")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        port,
        dir,
        log,
    };
    agent.wait_healthy(Duration::from_secs(20));
    agent
}

fn specialise(agent: &Agent, body: &serde_json::Value) -> common::Resp {
    let auth = format!("Bearer {TOKEN}");
    request(
        agent.port,
        "POST",
        "/specialize",
        &[("Authorization", auth.as_str())],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

fn body(function: &str, runtime: &str, handler: Option<&str>, code: &str) -> serde_json::Value {
    json!({
        "function": function,
        "runtime": runtime,
        "handler": handler,
        "code": code,
        "env": {"GREETING": "hi 'there'"},
        "secrets": [{"name": "db-password", "data": "czNjcjN0", "env": "DB_PASSWORD_FILE"}],
        "timeoutMs": 5000,
        "maxPayloadBytes": 10000,
        "concurrency": 3,
    })
}

const PY: &str = r#"
import os, time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    with open(os.environ["DB_PASSWORD_FILE"]) as f:
        secret = f.read()
    return {"greeting": os.environ["GREETING"], "secret": secret, "fn": context.function_name,
            "mem": context.memory_limit_in_mb, "event": event}
"#;

const JS: &str = r#"
const fs = require('fs');
exports.handler = async (event, context) => ({
  greeting: process.env.GREETING,
  secret: fs.readFileSync(process.env.DB_PASSWORD_FILE, 'utf8'),
  fn: context.functionName, mem: context.memoryLimitInMB, event,
});
"#;

const SH: &str = r#"printf '{"greeting":"%s","secret":"%s","fn":"%s","event":%s}' "$GREETING" "$(cat "$DB_PASSWORD_FILE")" a/b "$(cat)""#;

#[test]
fn each_runtime_is_specialised_once_and_serves_that_function_only() {
    for (runtime, handler, code) in [
        ("python3", Some("main.handler"), PY),
        ("node", Some("index.handler"), JS),
        ("shell", None, SH),
    ] {
        let mut agent = pool_agent(runtime);
        let health = request(agent.port, "GET", "/healthz", &[], b"").unwrap();
        assert_eq!(health.json()["status"], "idle", "{runtime}");
        // Nothing to invoke before the specialisation.
        let r = agent.invoke("{}");
        assert_eq!(r.status, 503, "{runtime}: {}", r.text());
        assert_eq!(r.json()["errorType"], "NotSpecialised");

        // Without the token: refused, and the container stays generic.
        let r = request(
            agent.port,
            "POST",
            "/specialize",
            &[("Authorization", "Bearer wrong-token-0000000000")],
            body("a/b", runtime, handler, code).to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 401, "{runtime}: {}", r.text());

        let t = Instant::now();
        let r = specialise(&agent, &body("a/b", runtime, handler, code));
        let took = t.elapsed();
        assert_eq!(
            r.status,
            200,
            "{runtime}: {}\n{}",
            r.text(),
            agent.log_text()
        );
        assert_eq!(r.json()["function"], "a/b");
        eprintln!(
            "{runtime}: specialised in {took:?} ({} ms in the agent)",
            r.json()["ms"]
        );

        let r = agent.invoke_with(&[("X-Lambda-Function", "a/b")], br#"{"n":1}"#);
        assert_eq!(
            r.status,
            200,
            "{runtime}: {}\n{}",
            r.text(),
            agent.log_text()
        );
        let v = r.json();
        assert_eq!(v["greeting"], "hi 'there'", "{runtime}: env");
        assert_eq!(v["secret"], "s3cr3t", "{runtime}: secret file");
        assert_eq!(v["fn"], "a/b", "{runtime}");
        assert_eq!(v["event"], json!({"n": 1}), "{runtime}");
        let secret = agent.dir.path().join("secrets/db-password");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&secret).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o400, "{runtime}: secret file mode");

        // Never another function, whoever asks, and never a second specialisation.
        let r = agent.invoke_with(&[("X-Lambda-Function", "other/b")], b"{}");
        assert_eq!(r.status, 421, "{runtime}: {}", r.text());
        assert_eq!(r.json()["errorType"], "WrongFunction");
        let r = specialise(&agent, &body("other/b", runtime, handler, code));
        assert_eq!(r.status, 409, "{runtime}: {}", r.text());
        assert!(r.text().contains("a/b"), "{runtime}: {}", r.text());
        let h = request(agent.port, "GET", "/healthz", &[], b"")
            .unwrap()
            .json();
        assert_eq!(
            (h["status"].as_str(), h["function"].as_str()),
            (Some("ok"), Some("a/b"))
        );

        // The two warm interpreters serve; a third (concurrency 3) starts only when a call
        // finds both busy, so it never competes with the first calls for the CPU.
        common::eventually_workers(&agent, 2);
        if runtime == "python3" {
            let port = agent.port;
            let calls: Vec<_> = (0..3)
                .map(|_| {
                    std::thread::spawn(move || {
                        request(port, "POST", "/invoke", &[], br#"{"sleep": 0.5}"#)
                            .unwrap()
                            .status
                    })
                })
                .collect();
            for c in calls {
                assert_eq!(c.join().unwrap(), 200);
            }
            common::eventually_workers(&agent, 3);
        }

        // Released: it finishes and exits 0 (Swarm's restart policy replaces it).
        let auth = format!("Bearer {TOKEN}");
        let r = request(
            agent.port,
            "POST",
            "/release",
            &[("Authorization", auth.as_str())],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 202, "{runtime}: {}", r.text());
        let status = agent.wait_exit(Duration::from_secs(10));
        assert!(
            status.success(),
            "{runtime}: {status}\n{}",
            agent.log_text()
        );
    }
}

#[test]
fn an_idle_specialised_agent_exits_and_bad_bodies_name_their_field() {
    let mut agent = pool_agent("python3");
    let mut bad = body("a/b", "python3", Some("main.handler"), PY);
    bad["env"] = json!({"LAMBDA_PORT": "1"});
    let r = specialise(&agent, &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("env.LAMBDA_PORT"), "{}", r.text());
    let mut wrong = body("a/b", "node", Some("index.handler"), JS);
    wrong["idleExitMs"] = json!(300);
    let r = specialise(&agent, &wrong);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("runtime"), "{}", r.text());
    // A refused body does not use the container up.
    let mut ok = body("a/b", "python3", Some("main.handler"), PY);
    ok["idleExitMs"] = json!(300);
    let r = specialise(&agent, &ok);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(agent.invoke("{}").status, 200);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(agent.log_text().contains("idle"), "{}", agent.log_text());
}

#[test]
fn a_pool_agent_without_its_token_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lambda-agent"))
        .env("LAMBDA_POOL", "1")
        .env("LAMBDA_RUNTIME", "shell")
        .env("LAMBDA_POOL_TOKEN_FILE", dir.path().join("missing"))
        .env("LAMBDA_WORK_DIR", dir.path().join("work"))
        .env("LAMBDA_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LAMBDA_POOL_TOKEN_FILE"), "{err}");
}
