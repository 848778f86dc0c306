//! The gateway over HTTP against a real etcd, with replicas that speak the agent's HTTP
//! contract served by this test (the function reconciler's part — writing ready endpoints into
//! status — is played by the test). End-to-end runs through the real Swarm and agent live in
//! the functions tests.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::Etcd;
use common::replica::replica;
use lambda::api::function::Endpoint;
use lambda::api::{FunctionSpec, FunctionStatus};
use lambda::gateway::authz::Access;
use lambda::gateway::{GatewayConfig, apikeys};
use serde_json::{Value, json};

struct Setup {
    _etcd: Etcd,
    store: lambda::store::Store,
    base: String,
    token: String,
    http: reqwest::Client,
}

async fn setup(auth: bool) -> Setup {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = GatewayConfig {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        insecure_no_auth: !auth,
        amqp_url: None,
        limits: Default::default(),
    };
    tokio::spawn(lambda::gateway::run(
        store.clone(),
        cfg,
        std::future::pending(),
    ));
    let (_, token) = apikeys::create(&store, "test", &Access::admin())
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Setup {
        _etcd: etcd,
        store,
        base,
        token,
        http,
    }
}

impl Setup {
    /// Creates a function whose status lists `replicas` as ready endpoints.
    async fn function(&self, name: &str, extra: &str, replicas: &[SocketAddr]) {
        let spec: FunctionSpec =
            serde_saphyr::from_str(&format!("runtime: shell\ncode: {{inline: cat}}\n{extra}"))
                .unwrap();
        let f = self
            .store
            .create(&lambda::api::Function::new("default", name, spec))
            .await
            .unwrap();
        let endpoints = replicas
            .iter()
            .enumerate()
            .map(|(i, a)| Endpoint {
                address: a.to_string(),
                task_id: format!("task-{i}"),
                node_id: "n".into(),
            })
            .collect();
        let n = replicas.len() as u32;
        self.store
            .update_status(
                &f,
                &FunctionStatus {
                    replicas: n,
                    ready_replicas: n,
                    endpoints,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // The gateway follows etcd; wait until it routes the function.
        for _ in 0..100 {
            let r = self.invoke(name, "{}").await;
            if r.0 != 404 && r.0 != 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway never routed {name}");
    }

    async fn invoke(&self, name: &str, body: &str) -> (u16, Value, HeaderMap) {
        let r = self
            .http
            .post(format!("{}/v1/functions/{name}/invoke", self.base))
            .bearer_auth(&self.token)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v, headers)
    }
}

#[tokio::test]
async fn invoke_status_codes_and_balancing() {
    let s = setup(true).await;
    let (h1, h2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, b) = (replica(h1.clone()).await, replica(h2.clone()).await);
    s.function(
        "echo",
        "timeoutSeconds: 1\nmaxPayloadBytes: 100\nconcurrency: 2\nautoscaling: {maxHeldRequests: 1}\n",
        &[a, b],
    )
    .await;

    let (code, v, h) = s.invoke("echo", r#"{"x": 1}"#).await;
    assert_eq!(code, 200);
    assert_eq!(v, json!({"echo": {"x": 1}}));
    assert!(h.contains_key("x-lambda-invocation-id") && h.contains_key("x-lambda-duration-ms"));

    // Both replicas serve.
    for _ in 0..20 {
        s.invoke("echo", "{}").await;
    }
    assert!(h1.load(Ordering::SeqCst) > 0 && h2.load(Ordering::SeqCst) > 0);

    // Function error → 502 with the structured error.
    let (code, v, _) = s.invoke("echo", r#"{"fail": true}"#).await;
    assert_eq!(code, 502);
    assert_eq!(v["errorType"], "ValueError");
    // Timeout → 504; the next call succeeds.
    let (code, _, _) = s.invoke("echo", r#"{"sleep_ms": 5000}"#).await;
    assert_eq!(code, 504);
    assert_eq!(s.invoke("echo", "{}").await.0, 200);
    // Oversize → 413 (limit 100 bytes).
    let (code, v, _) = s
        .invoke("echo", &format!(r#"{{"pad": "{}"}}"#, "x".repeat(200)))
        .await;
    assert_eq!(code, 413, "{v}");
    // Unknown → 404.
    assert_eq!(s.invoke("nope", "{}").await.0, 404);
    // Concurrency: 2 replicas x 2 → a fifth concurrent call waits for a slot (held, within
    // maxHeldRequests: 1) and is served; a sixth gets 429 with Retry-After.
    let slow: Vec<_> = (0..4)
        .map(|_| s.invoke("echo", r#"{"sleep_ms": 700}"#))
        .collect();
    let fifth = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.invoke("echo", r#"{"x": 5}"#).await
    };
    let sixth = async {
        tokio::time::sleep(Duration::from_millis(350)).await;
        s.invoke("echo", "{}").await
    };
    let (results, (code5, v5, _), (code, v, h)) =
        tokio::join!(futures::future::join_all(slow), fifth, sixth);
    assert_eq!(
        (code5, v5),
        (200, json!({"echo": {"x": 5}})),
        "held, then served"
    );
    assert_eq!(code, 429, "{v}");
    assert_eq!(h.get("retry-after").unwrap(), "1");
    assert!(results.iter().all(|r| r.0 == 200));

    // No token / bad token → 401.
    let r = s
        .http
        .post(format!("{}/v1/functions/echo/invoke", s.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .post(format!("{}/v1/functions/echo/invoke", s.base))
        .bearer_auth("lk_nope_nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health, metrics, OpenAPI and its page need no token.
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let m = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(
            "lambda_gateway_invocations_total{namespace=\"default\",function=\"echo\",code=\"200\"}"
        ),
        "{m}"
    );
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/v1/namespaces/{ns}/functions/{name}/invoke"]["post"]["responses"]["429"]
            .is_object()
    );
    let page = s
        .http
        .get(format!("{}/docs", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/v1/functions/{name}/invoke"));
}

#[tokio::test]
async fn function_crud_over_rest() {
    let s = setup(true).await;
    let url = format!("{}/v1/namespaces/team/functions", s.base);
    let post = |body: &str| {
        s.http
            .post(&url)
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    // Malformed JSON → 400 naming line and column.
    let r = post("{\"metadata\": {\"name\": \"a\"},").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{v}"
    );
    // Invalid → 400 with field paths.
    let r = post(r#"{"metadata": {"name": "a"}, "spec": {"runtime": "shell", "code": {"inline": "cat"}, "minReplicas": 5, "maxReplicas": 1}}"#).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["details"][0]["field"], "spec.minReplicas", "{v}");
    // Create → 201, again → 409.
    let body = r#"{"metadata": {"name": "a"}, "spec": {"runtime": "python3", "code": {"inline": "def handler(e, c):\n    return e\n"}}}"#;
    assert_eq!(post(body).await.unwrap().status(), 201);
    assert_eq!(post(body).await.unwrap().status(), 409);
    // Get / list.
    let v: Value = s
        .http
        .get(format!("{url}/a"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["spec"]["runtime"], "python3");
    let v: Value = s
        .http
        .get(&url)
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // Replace → 200 and the change is stored; create via PUT → 201.
    let r = s
        .http
        .put(format!("{url}/a"))
        .bearer_auth(&s.token)
        .body(
            body.replace("python3", "shell")
                .replace("def handler(e, c):\\n    return e\\n", "cat"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.store
            .get::<FunctionSpec>("team", "a")
            .await
            .unwrap()
            .spec
            .runtime,
        lambda::api::Runtime::Shell
    );
    let r = s
        .http
        .put(format!("{url}/b"))
        .bearer_auth(&s.token)
        .body(r#"{"spec": {"runtime": "shell", "code": {"inline": "cat"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Delete → 200; unknown → 404.
    assert_eq!(
        s.http
            .delete(format!("{url}/a"))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.http
            .delete(format!("{url}/a"))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(
        s.store
            .get::<FunctionSpec>("team", "a")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // No token → 401.
    assert_eq!(s.http.get(&url).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn no_ready_replica_is_503_and_a_deleted_key_stops_working() {
    let s = setup(true).await;
    let spec: FunctionSpec =
        serde_saphyr::from_str("runtime: shell\ntimeoutSeconds: 3\ncode: {inline: cat}\n").unwrap();
    s.store
        .create(&lambda::api::Function::new("default", "cold", spec))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let (code, v, h) = s.invoke("cold", "{}").await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(h.get("retry-after").unwrap(), "1");
    assert!(
        t.elapsed() >= Duration::from_millis(2900),
        "held for the function's timeout"
    );
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("no ready replica after 3 s"), "{v}");

    let (key, token) = apikeys::create(&s.store, "short-lived", &Access::admin())
        .await
        .unwrap();
    let ok = s
        .http
        .get(format!("{}/v1/namespaces/default/functions", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    apikeys::delete(&s.store, &key.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let gone = s
        .http
        .get(format!("{}/v1/namespaces/default/functions", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
}

/// The gateway's load reports in etcd, what the function autoscaler sizes functions from: a
/// call in flight shows as demand with its arrival, and a call held for a function without a
/// replica shows as queued — published when it is held, not at the next report.
#[tokio::test]
async fn load_reports_show_calls_in_flight_and_held() {
    let s = setup(false).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let a = replica(hits).await;
    s.function("busy", "timeoutSeconds: 5\n", &[a]).await;
    let spec: FunctionSpec =
        serde_saphyr::from_str("runtime: shell\ntimeoutSeconds: 5\ncode: {inline: cat}\n").unwrap();
    s.store
        .create(&lambda::api::Function::new("default", "cold", spec))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let report_of =
        async |f: &str, check: &dyn Fn(&lambda::gateway::load::FunctionLoad) -> bool| {
            common::eventually(
                &format!("a load report for {f}"),
                Duration::from_secs(5),
                async || {
                    let reports = lambda::gateway::load::read_all(&s.store).await.ok()?;
                    reports
                        .reports
                        .into_iter()
                        .filter(|(_, r)| r.instance.starts_with("gateway-"))
                        .find_map(|(_, r)| r.functions.get(f).filter(|l| check(l)).cloned())
                },
            )
            .await
        };
    let (_, busy) = tokio::join!(
        s.invoke("busy", r#"{"sleep_ms": 2500}"#),
        report_of("default/busy", &|l| l.concurrency > 0.5 && l.arrivals >= 1),
    );
    assert!(busy.max >= 1, "{busy:?}");
    // Three calls at once on one replica of concurrency 1: two wait for a slot, and a report
    // says so with the demand of that moment (what the autoscaler sizes a burst from).
    let narrow = replica(Arc::new(AtomicUsize::new(0))).await;
    s.function("narrow", "timeoutSeconds: 5\nconcurrency: 1\n", &[narrow])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call = || s.invoke("narrow", r#"{"sleep_ms": 1500}"#);
    let (a, b, c, waiting) = tokio::join!(
        call(),
        call(),
        call(),
        report_of("default/narrow", &|l| l.queued >= 1 && l.current >= 3),
    );
    assert_eq!(
        (a.0, b.0, c.0),
        (200, 200, 200),
        "{:?} {:?} {:?}",
        a.1,
        b.1,
        c.1
    );
    assert!(waiting.current > waiting.queued, "{waiting:?}");
    let (cold, held) = tokio::join!(
        s.invoke("cold", "{}"),
        report_of("default/cold", &|l| l.queued >= 1),
    );
    assert_eq!(cold.0, 503, "no replica came: {:?}", cold.1);
    assert!(held.queued >= 1, "{held:?}");
}

/// A replica whose connect hangs (its accept queue full, so the kernel drops the SYN, as a node
/// going away does) costs a call the gateway's connect timeout, not the function's: the call
/// moves to the other replica and succeeds instead of timing out.
#[tokio::test]
async fn a_hanging_connect_moves_to_another_replica() {
    let s = setup(false).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let good = replica(hits.clone()).await;
    // Backlog 0 holds one unaccepted connection; a second SYN finds the queue full.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = sock.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let _filler = tokio::net::TcpStream::connect(stuck_addr).await.unwrap();
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(stuck_addr),
    )
    .await;
    assert!(probe.is_err(), "the stuck replica's connect must hang");

    s.function(
        "half",
        "timeoutSeconds: 10
",
        &[stuck_addr, good],
    )
    .await;
    // Without a connect timeout, a call sent to the stuck replica ends in 504 after 10.5 s.
    for i in 0..4 {
        let (code, v, _) = s.invoke("half", &format!(r#"{{"i": {i}}}"#)).await;
        assert_eq!(code, 200, "call {i}: {v}");
        assert_eq!(v, json!({"echo": {"i": i}}));
    }
    assert!(hits.load(Ordering::SeqCst) >= 4);
    drop(stuck);
}

/// Execution records read over REST: one by id (namespaced and default), a function's history
/// newest first through continue tokens, the status filter, and the errors a caller can act on.
#[tokio::test]
async fn execution_records_over_rest() {
    use lambda::api::ObjectKey;
    use lambda::events::cloudevent::CloudEvent;
    use lambda::events::execution::store as records;
    use lambda::events::execution::{EventRef, Execution, ExecutionStatus, Outcome, Trigger};

    let s = setup(true).await;
    let base = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let key = ObjectKey::new("alice", "on-create");
    let mut ids = Vec::new();
    for i in 0..5i64 {
        let event = CloudEvent::new(format!("e-{i}"), "S1", "FileCreate").expect("event");
        let at = base + chrono::Duration::seconds(i);
        let e = Execution::new(
            lambda::events::execution::execution_id(&key, &event),
            &key,
            Trigger::Event { index: 0 },
            Some(EventRef::of(&event)),
            at,
        );
        records::begin(&s.store, &e).await.expect("begin");
        if i % 2 == 0 {
            let mut st = records::get(&s.store, "alice", &e.id).await.expect("get");
            st.execution.start_attempt(at).expect("start");
            st.execution
                .finish_attempt(at, Outcome::Succeeded, Some(200), None)
                .expect("end");
            st.execution.set_logs("hello from e\n");
            st.execution
                .finish(ExecutionStatus::Succeeded, None, at)
                .expect("final");
            records::update(&s.store, &st).await.expect("update");
        }
        ids.push(e.id);
    }
    let get = |path: String| {
        s.http
            .get(format!("{}{path}", s.base))
            .bearer_auth(&s.token)
            .send()
    };

    // One record, with its attempts and logs.
    let r = get(format!("/v1/namespaces/alice/executions/{}", ids[0]))
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let rec: Value = r.json().await.expect("json");
    assert_eq!(rec["id"], ids[0].as_str());
    assert_eq!(rec["status"], "Succeeded");
    assert_eq!(rec["function"], "on-create");
    assert_eq!(rec["event"]["source"], "S1");
    assert_eq!(rec["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(rec["logs"], "hello from e\n");

    // Unauthenticated reads are refused like every other API call.
    let r = s
        .http
        .get(format!(
            "{}/v1/namespaces/alice/executions/{}",
            s.base, ids[0]
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Newest first, two per page, until `continue` is gone.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let mut path = "/v1/namespaces/alice/functions/on-create/executions?limit=2".to_string();
        if let Some(t) = &next {
            path.push_str(&format!("&continue={}", urlencode(t)));
        }
        let r = get(path).await.expect("list");
        assert_eq!(r.status(), StatusCode::OK);
        let page: Value = r.json().await.expect("json");
        assert_eq!(page["kind"], "ExecutionList");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_string()),
        );
        next = page["continue"].as_str().map(String::from);
        if next.is_none() {
            break;
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // The status filter.
    let r = get("/v1/namespaces/alice/functions/on-create/executions?status=Queued".into())
        .await
        .expect("list");
    let page: Value = r.json().await.expect("json");
    let queued: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    assert_eq!(queued, vec![ids[3].as_str(), ids[1].as_str()]);

    // Errors name what is wrong.
    for (path, code, needle) in [
        (
            "/v1/namespaces/alice/executions/nope".to_string(),
            404,
            "nope",
        ),
        (
            "/v1/namespaces/alice/executions/bad%20id".to_string(),
            400,
            "bad id",
        ),
        ("/v1/executions/missing".to_string(), 404, "default"),
        (
            "/v1/namespaces/alice/functions/on-create/executions?status=Done".to_string(),
            400,
            "status",
        ),
        (
            "/v1/namespaces/alice/functions/on-create/executions?limit=1000".to_string(),
            400,
            "limit",
        ),
        (
            "/v1/namespaces/alice/functions/on-create/executions?stauts=Failed".to_string(),
            400,
            "stauts",
        ),
        (
            "/v1/namespaces/alice/functions/on-create/executions?continue=garbage".to_string(),
            400,
            "continue",
        ),
    ] {
        let r = get(path.clone()).await.expect("get");
        assert_eq!(r.status().as_u16(), code, "{path}");
        let body: Value = r.json().await.expect("error body");
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
