//! The REST API fuzzed from its own `/openapi.json` by schemathesis (property-based: examples,
//! coverage, fuzzing and stateful phases, for every operation the document lists — endpoints
//! added later are covered without touching this test), against a gateway started for the
//! purpose with a real etcd and RabbitMQ, no Swarm: the function reconciler's part, writing a
//! ready endpoint into each Function's status, is played by this test with a replica that
//! follows the agent's contract. First the document itself is validated as OpenAPI 3.1 by
//! openapi-spec-validator (every `$ref` resolving).
//!
//! Fails on any 500, any 503 from etcd, any error body not in the documented shape (the checks
//! of `tests/fuzz/hooks.py`), any response not as documented, any panic in the gateway, or a
//! gateway that stops answering. Bounded in time: `LAMBDA_FUZZ_SECONDS` (default 75) of
//! fuzzing. The tools come from `scripts/venv.sh` (the test command runs it).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::rabbitmq::RabbitMq;
use common::replica::{function_on, replica};
use common::{Etcd, free_port};
use lambda::api::FunctionSpec;
use lambda::api::function::Endpoint;
use lambda::gateway::authz::Access;
use tokio_util::sync::CancellationToken;

/// The virtualenv `scripts/venv.sh` made (fails loudly when it has not run).
fn venv() -> PathBuf {
    let venv = common::home().join("venv");
    for tool in ["schemathesis", "openapi-spec-validator"] {
        assert!(
            venv.join("bin").join(tool).is_file(),
            "{tool} is missing from {}: run scripts/venv.sh (scripts/test.sh does)",
            venv.display()
        );
    }
    venv
}

/// Counts panics anywhere in this process (the gateway runs in it): a handler that panics is
/// a crash even though tokio keeps serving.
fn count_panics() -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    n
}

/// Plays the function reconciler: every Function without endpoints gets `replica` as its
/// ready endpoint, so calls to functions the fuzzer creates reach a replica instead of being
/// held for a replica that never comes.
async fn serve_every_function(
    store: lambda::store::Store,
    replica: std::net::SocketAddr,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Ok(list) = store.list::<FunctionSpec>(None).await {
            for f in list.items {
                if f.status.as_ref().is_some_and(|s| !s.endpoints.is_empty()) {
                    continue;
                }
                let status = lambda::api::FunctionStatus {
                    replicas: 1,
                    ready_replicas: 1,
                    endpoints: vec![Endpoint {
                        address: replica.to_string(),
                        task_id: "task-0".into(),
                        node_id: "n".into(),
                    }],
                    ..Default::default()
                };
                // A function deleted or changed meanwhile is caught on the next round.
                let _ = store.update_status(&f, &status).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `N generated` of schemathesis' summary.
fn generated(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let l = l.trim();
        let (n, rest) = l.split_once(' ')?;
        rest.starts_with("generated").then(|| n.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_holds_its_contract_under_fuzzing() {
    let venv = venv();
    let panics = count_panics();
    let etcd = Etcd::start();
    let broker = RabbitMq::start();
    let store = etcd.store().await;
    let stop = CancellationToken::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let replica = replica(hits.clone()).await;
    tokio::spawn(serve_every_function(store.clone(), replica, stop.clone()));

    let port = free_port();
    let cfg = lambda::gateway::GatewayConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("address"),
        insecure_no_auth: false,
        amqp_url: Some(broker.url()),
        limits: Default::default(),
    };
    let gw_stop = stop.clone();
    let gateway = tokio::spawn(lambda::gateway::run(store.clone(), cfg, async move {
        gw_stop.cancelled().await
    }));
    let (_, token) = lambda::gateway::apikeys::create(&store, "fuzz", &Access::admin())
        .await
        .expect("key");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    common::eventually("the gateway answers", Duration::from_secs(10), async || {
        http.get(format!("{base}/healthz")).send().await.ok()
    })
    .await;
    // Something to find: a function with a replica and an execution of it.
    function_on(
        &store,
        "default",
        "hello",
        "runtime: shell\ncode: {inline: cat}\ntimeoutSeconds: 5\n",
        replica,
    )
    .await;
    let execution =
        common::eventually("an async invocation", Duration::from_secs(10), async || {
            let r = http
                .post(format!("{base}/v1/functions/hello/invoke"))
                .bearer_auth(&token)
                .header("prefer", "respond-async")
                .body("{}")
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["executionId"].as_str().map(String::from)
        })
        .await;

    // The document validates as OpenAPI 3.1, every $ref resolving.
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi.json")
        .bytes()
        .await
        .expect("body");
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, &doc).expect("write");
    let out = tokio::process::Command::new(venv.join("bin/openapi-spec-validator"))
        .arg(&doc_path)
        .output()
        .await
        .expect("run openapi-spec-validator");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "/openapi.json is not valid OpenAPI:\n{text}"
    );
    println!("openapi-spec-validator: {}", text.trim());

    let seconds: u64 = std::env::var("LAMBDA_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    let fuzz = common::root().join("tests/fuzz");
    // The static settings, plus the objects this run made: the operations that address one
    // function or execution are fuzzed on those (their bodies, headers and queries), so that
    // they reach a replica and a stored record instead of answering 404 to random names.
    let mut config = std::fs::read_to_string(fuzz.join("schemathesis.toml")).expect("config");
    config.push_str(&format!(
        r#"
[[operations]]
include-operation-id = ["invokeFunction", "listExecutions", "getFunction"]
parameters = {{ "path.ns" = "default", "path.name" = "hello" }}

[[operations]]
include-operation-id = "invokeDefaultFunction"
parameters = {{ "path.name" = "hello" }}

[[operations]]
include-operation-id = "getExecution"
parameters = {{ "path.ns" = "default", "path.id" = "{execution}" }}

[[operations]]
include-operation-id = "getDefaultExecution"
parameters = {{ "path.id" = "{execution}" }}
"#
    ));
    let config_path = dir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("write config");
    let started = Instant::now();
    let run = || async {
        let out = tokio::process::Command::new(venv.join("bin/schemathesis"))
            .current_dir(dir.path())
            .env("SCHEMATHESIS_HOOKS", fuzz.join("hooks.py"))
            .env("NO_COLOR", "1")
            .arg("--config-file")
            .arg(&config_path)
            .args(["run", &format!("{base}/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--max-time", &seconds.to_string()])
            .args(["--workers", "2", "--request-timeout", "20"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_schema_conformance,unsupported_method,ignored_auth,\
                 error_body_shape,no_internal_error",
            ])
            .output()
            .await
            .expect("run schemathesis");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out, text)
    };
    let (mut out, mut text) = run().await;
    if !out.status.success() && tool_crashed_only(&text) {
        // Not a finding about the API: run again once, keeping the first run's report.
        println!("{text}\nschemathesis crashed internally (no failure found): running it again");
        common::report("fuzz-tool-crash.txt", &text);
        (out, text) = run().await;
    }
    let elapsed = started.elapsed();
    println!("{text}");
    let cases = generated(&text);
    let summary = format!(
        "fuzz: {} cases in {:.0} s against {base}",
        cases.map_or("?".into(), |c| c.to_string()),
        elapsed.as_secs_f64()
    );
    println!("{summary}");
    common::report("fuzz.txt", &format!("{text}\n{summary}\n"));
    assert!(out.status.success(), "schemathesis found failures (above)");
    let cases = cases.expect("schemathesis printed no case count");
    assert!(
        cases >= 200,
        "only {cases} cases ran: the fuzz tested little"
    );
    assert!(
        hits.load(Ordering::SeqCst) > 0,
        "no call reached the replica"
    );

    // No crash: nothing panicked, and the gateway still serves.
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a panic (see above)");
    let r = http
        .get(format!("{base}/v1/namespaces/default/functions/hello"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("gateway alive");
    assert_eq!(r.status(), 200);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway).await;
}

/// True when schemathesis failed only because it crashed itself — Hypothesis describing a
/// lambda on CPython 3.11 ("AST constructor recursion depth mismatch", seen once in three CI
/// runs) — and found no failure.
fn tool_crashed_only(text: &str) -> bool {
    !text.contains("= FAILURES =")
        && text.contains("= ERRORS =")
        && text.contains("Runtime Error")
        && text.contains("AST constructor recursion depth mismatch")
}

#[test]
fn a_tool_crash_is_told_from_a_finding() {
    let crash = "== ERRORS ==\n__ GET /v1/watch __\nRuntime Error\n\nAST constructor recursion depth mismatch (before=66, after=158)";
    assert!(tool_crashed_only(crash));
    assert!(!tool_crashed_only(&format!(
        "== FAILURES ==\n- ST108\n{crash}"
    )));
    assert!(!tool_crashed_only(
        "== ERRORS ==\nRuntime Error\nConnection refused"
    ));
}
