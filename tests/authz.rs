//! Namespace-scoped API keys with roles, end to end: keys made by `lambda apikey create`, a
//! gateway with a real etcd and RabbitMQ, replicas that follow the agent's contract. A key of
//! namespace `a` can neither invoke, read, list, nor edit anything of namespace `b` (functions,
//! executions, events), each refusal a 403 naming the permission; within its namespace each
//! role does what it holds and no more; a key made before roles keeps working as an admin.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::rabbitmq::RabbitMq;
use common::replica::{function_on, replica};
use common::{Etcd, free_port, lambda};
use lambda::api::FunctionSpec;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// `lambda apikey create ARGS…`: the token it printed.
fn create_key(etcd: &Etcd, args: &[&str]) -> String {
    let mut all = vec!["apikey", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = lambda(etcd, &all, None);
    assert!(ok, "lambda {all:?}: {err}");
    out.trim().to_string()
}

struct Gw {
    base: String,
    http: reqwest::Client,
}

impl Gw {
    /// One request with `token`: (status, JSON body or null).
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let stream = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if stream {
            // A watch that was let in streams until closed: its status is the answer.
            return (status, Value::Null);
        }
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

const FUNCTION: &str = r#"{"spec": {"runtime": "shell", "code": {"inline": "cat"}}}"#;

/// A request: method, path, headers, body, and the permission it needs.
type Row = (Method, String, Headers, Option<String>, &'static str);
type Headers = Vec<(&'static str, &'static str)>;

/// Every request that touches namespace `ns` (function `f`, execution `exec`), with the
/// permission it needs. A new endpoint that addresses a namespace adds its row here, so
/// that the cross-namespace test below covers it.
fn requests_in(ns: &str, exec: &str) -> Vec<Row> {
    let default = ns == "default";
    let mut v = vec![
        (
            Method::POST,
            format!("/v1/namespaces/{ns}/functions/f/invoke"),
            vec![],
            Some("{}".into()),
            "functions:invoke",
        ),
        (
            Method::POST,
            format!("/v1/namespaces/{ns}/functions/f/invoke"),
            vec![("prefer", "respond-async")],
            Some("{}".into()),
            "functions:invoke",
        ),
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/functions"),
            vec![],
            None,
            "functions:read",
        ),
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/functions/f"),
            vec![],
            None,
            "functions:read",
        ),
        (
            Method::POST,
            format!("/v1/namespaces/{ns}/functions"),
            vec![],
            Some(FUNCTION.replace("{\"spec\"", "{\"metadata\": {\"name\": \"g\"}, \"spec\"")),
            "functions:write",
        ),
        (
            Method::PUT,
            format!("/v1/namespaces/{ns}/functions/f"),
            vec![],
            Some(FUNCTION.into()),
            "functions:write",
        ),
        (
            Method::DELETE,
            format!("/v1/namespaces/{ns}/functions/f"),
            vec![],
            None,
            "functions:write",
        ),
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/functions/f/executions"),
            vec![],
            None,
            "executions:read",
        ),
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/executions/{exec}"),
            vec![],
            None,
            "executions:read",
        ),
        (
            Method::POST,
            format!("/v1/namespaces/{ns}/events"),
            vec![
                ("ce-id", "1"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                ("ce-specversion", "1.0"),
            ],
            Some("{}".into()),
            "events:publish",
        ),
        // The un-namespaced event endpoint, with the event addressed to `ns` by its extension.
        (
            Method::POST,
            "/v1/events".into(),
            vec![
                ("ce-id", "2"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                ("ce-specversion", "1.0"),
                (
                    "ce-lambdanamespace",
                    match ns {
                        "a" => "a",
                        "b" => "b",
                        _ => "default",
                    },
                ),
            ],
            Some("{}".into()),
            "events:publish",
        ),
        // The watch API and the console's history of a function.
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/watch?kind=functions"),
            vec![],
            None,
            "functions:read",
        ),
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/watch?kind=events"),
            vec![],
            None,
            "events:read",
        ),
        (
            Method::GET,
            format!("/v1/namespaces/{ns}/functions/f/history"),
            vec![],
            None,
            "functions:read",
        ),
    ];
    if default {
        v.push((
            Method::POST,
            "/v1/functions/f/invoke".into(),
            vec![],
            Some("{}".into()),
            "functions:invoke",
        ));
        v.push((
            Method::GET,
            format!("/v1/executions/{exec}"),
            vec![],
            None,
            "executions:read",
        ));
    }
    v
}

/// The namespaces of the objects a watch lists before its `SYNCED` event, sorted.
async fn watched_namespaces(gw: &Gw, key: &str, path: &str) -> Vec<String> {
    let mut resp = gw
        .http
        .get(format!("{}{path}", gw.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    while !text.contains("event: SYNCED") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("the list arrives")
            .expect("a chunk")
            .expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["type"] == "ADDED")
        .filter_map(|v| {
            v["object"]["metadata"]["namespace"]
                .as_str()
                .map(String::from)
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_one_namespace_reaches_nothing_of_another() {
    let etcd = Etcd::start();
    let broker = RabbitMq::start();
    let store = etcd.store().await;
    let rep = replica(Arc::new(AtomicUsize::new(0))).await;
    let spec = "runtime: shell\ncode: {inline: cat}\ntimeoutSeconds: 5\n";
    for ns in ["a", "b", "default"] {
        function_on(&store, ns, "f", spec, rep).await;
    }
    let port = free_port();
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(lambda::gateway::run(
        store.clone(),
        lambda::gateway::GatewayConfig {
            listen: format!("127.0.0.1:{port}").parse().expect("address"),
            insecure_no_auth: false,
            amqp_url: Some(broker.url()),
            limits: Default::default(),
        },
        async move { s2.cancelled().await },
    ));
    let gw = Gw {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };

    let root = create_key(&etcd, &["root", "--role", "admin", "--all-namespaces"]);
    let a_admin = create_key(&etcd, &["a-admin", "-n", "a", "--role", "admin"]);
    let a_dev = create_key(&etcd, &["a-dev", "--namespace", "a", "--role", "developer"]);
    let a_inv = create_key(&etcd, &["a-inv", "-n", "a"]);
    common::eventually(
        "the gateway routes b/f",
        Duration::from_secs(10),
        async || {
            let (code, _) = gw
                .call(
                    &root,
                    Method::POST,
                    "/v1/namespaces/b/functions/f/invoke",
                    &[],
                    Some("{}"),
                )
                .await;
            (code == 200).then_some(())
        },
    )
    .await;
    // An execution in each namespace, started by the all-namespaces admin.
    let mut exec = std::collections::HashMap::new();
    for ns in ["a", "b", "default"] {
        let (code, v) = gw
            .call(
                &root,
                Method::POST,
                &format!("/v1/namespaces/{ns}/functions/f/invoke"),
                &[("prefer", "respond-async")],
                Some("{}"),
            )
            .await;
        assert_eq!(code, 202, "{v}");
        exec.insert(ns, v["executionId"].as_str().expect("id").to_string());
    }
    let before_b = store.get::<FunctionSpec>("b", "f").await.expect("b/f");

    // Across namespaces: every request of `b` and `default` is refused to every key of `a`,
    // naming the permission and the namespace, before anything is touched.
    for key in [&a_admin, &a_dev, &a_inv] {
        for ns in ["b", "default"] {
            for (method, path, headers, body, permission) in requests_in(ns, &exec[ns]) {
                let (code, v) = gw
                    .call(key, method.clone(), &path, &headers, body.as_deref())
                    .await;
                assert_eq!(code, 403, "{method} {path}: {v}");
                let msg = v["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    msg.contains(&format!("lacks {permission} in namespace {ns}")),
                    "{method} {path}: {msg}"
                );
                assert_eq!(v["error"]["reason"], "Forbidden");
                assert_eq!(
                    v["error"]["details"],
                    json!([{"permission": permission, "namespace": ns}])
                );
            }
        }
    }
    // Nothing of `b` changed: the same spec revision, no function `g`, no new execution.
    let after_b = store
        .get::<FunctionSpec>("b", "f")
        .await
        .expect("b/f still there");
    assert_eq!(
        after_b.metadata.resource_version,
        before_b.metadata.resource_version
    );
    assert!(store.get::<FunctionSpec>("b", "g").await.is_err());
    let (_, list) = gw
        .call(
            &root,
            Method::GET,
            "/v1/namespaces/b/functions/f/executions",
            &[],
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // Within `a`, each role holds what it should.
    for (method, path, headers, body, permission) in requests_in("a", &exec["a"]) {
        for (key, role) in [
            (&a_inv, "invoker"),
            (&a_dev, "developer"),
            (&a_admin, "admin"),
        ] {
            let holds = role != "invoker"
                || matches!(
                    permission,
                    "functions:invoke" | "executions:read" | "events:publish"
                );
            let (code, v) = gw
                .call(key, method.clone(), &path, &headers, body.as_deref())
                .await;
            if holds {
                assert_ne!(code, 403, "{role}: {method} {path}: {v}");
                assert!(code < 400, "{role}: {method} {path}: {code} {v}");
                if method == Method::DELETE {
                    // Put it back for the next key.
                    function_on(&store, "a", "f", spec, rep).await;
                }
                if method == Method::POST && path.ends_with("/functions") {
                    let (code, _) = gw
                        .call(
                            &root,
                            Method::DELETE,
                            "/v1/namespaces/a/functions/g",
                            &[],
                            None,
                        )
                        .await;
                    assert_eq!(code, 200);
                }
            } else {
                assert_eq!(code, 403, "{role}: {method} {path}: {v}");
                let msg = v["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    msg.contains(&format!(
                        "lacks {permission} in namespace a: it needs role developer"
                    )),
                    "{msg}"
                );
            }
        }
    }
    // Watching every namespace, a key of `a` sees `a`'s functions and nothing of `b`'s or
    // `default`'s; an invoker may not watch functions at all.
    let names = watched_namespaces(&gw, &a_dev, "/v1/watch?kind=functions").await;
    assert_eq!(names, ["a"], "{names:?}");
    let (code, v) = gw
        .call(&a_inv, Method::GET, "/v1/watch?kind=functions", &[], None)
        .await;
    assert_eq!(code, 403, "{v}");
    let all = watched_namespaces(&gw, &root, "/v1/watch?kind=functions").await;
    assert_eq!(all, ["a", "b", "default"], "{all:?}");

    // The all-namespaces admin reaches `b`; a bad key and no key are 401, not 403.
    let (code, _) = gw
        .call(
            &root,
            Method::GET,
            "/v1/namespaces/b/functions/f",
            &[],
            None,
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = gw
        .call(
            "lk_nope_nope",
            Method::GET,
            "/v1/namespaces/a/functions",
            &[],
            None,
        )
        .await;
    assert_eq!(
        (code, v["error"]["reason"].clone()),
        (401, json!("Unauthorized"))
    );

    // A key stored before keys had roles is an admin of every namespace (the token `lambda
    // up` wrote stays the platform's admin).
    let id = "legacy01";
    let secret = "0123456789abcdef";
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    };
    etcd.put(
        &format!("/lambda/apikeys/{id}"),
        &format!("id: {id}\nname: old\nsha256: {sha}\ncreatedAt: 2026-01-01T00:00:00Z\n"),
    );
    let legacy = format!("lk_{id}_{secret}");
    let (code, v) = gw
        .call(
            &legacy,
            Method::PUT,
            "/v1/namespaces/b/functions/f",
            &[],
            Some(FUNCTION),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // A hand-edited key whose scope makes no sense authenticates nothing.
    etcd.put(
        &format!("/lambda/apikeys/{id}"),
        &format!(
            "id: {id}\nname: old\nsha256: {sha}\ncreatedAt: 2026-01-01T00:00:00Z\nrole: admin\n"
        ),
    );
    tokio::time::sleep(Duration::from_secs(6)).await; // past the verifier's cache
    let (code, _) = gw
        .call(
            &legacy,
            Method::GET,
            "/v1/namespaces/b/functions",
            &[],
            None,
        )
        .await;
    assert_eq!(code, 401);

    // `lambda apikey list` shows each key's role and namespaces.
    let (ok, out, err) = lambda(&etcd, &["apikey", "list"], None);
    assert!(ok, "{err}");
    let header = out.lines().next().unwrap_or_default();
    for col in ["ID", "NAME", "ROLE", "NAMESPACES", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("root").contains("admin") && row("root").contains('*'),
        "{out}"
    );
    assert!(
        row("a-dev").contains("developer") && row("a-dev").contains(" a "),
        "{out}"
    );
    assert!(row("a-inv").contains("invoker"), "{out}");
    assert!(row("old").contains("invalid"), "{out}");
    stop.cancel();
}

#[test]
fn apikey_create_checks_its_scope() {
    let etcd = Etcd::start();
    let token = create_key(&etcd, &["two", "-n", "a", "-n", "b", "--role", "developer"]);
    assert!(token.starts_with("lk_"), "{token}");
    let (ok, out, _) = lambda(&etcd, &["apikey", "list"], None);
    assert!(
        ok && out.contains("a,b") && out.contains("developer"),
        "{out}"
    );
    // The context's namespace when none is given, and invoker when no role is.
    let (ok, _, err) = lambda(&etcd, &["-n", "team", "apikey", "create", "one"], None);
    assert!(ok, "{err}");
    assert!(err.contains("invoker in namespace team"), "{err}");
    for (args, needle) in [
        (
            vec!["apikey", "create", "x", "-n", "a", "--all-namespaces"],
            "exclude each other",
        ),
        (
            vec!["apikey", "create", "x", "--role", "root"],
            "unknown role",
        ),
        (
            vec!["apikey", "create", "x", "-n", "Not_A_Label"],
            "Not_A_Label",
        ),
        (
            vec!["get", "fn", "-n", "a", "-n", "b"],
            "only `lambda apikey create` takes several",
        ),
    ] {
        let (ok, _, err) = lambda(&etcd, &args, None);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
