//! The gateway's watch API (Server-Sent Events of whole objects, resumable), the history the
//! console's charts draw, and the console's own files — over HTTP against a real etcd, with
//! a replica that follows the agent's contract. The console in a real browser is
//! `tests/console/console.mjs` (scripts/console-test.sh), run against `lambda up`.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::Etcd;
use common::replica::{function_on, replica};
use lambda::api::{FunctionSpec, FunctionStatus, NodePool, NodePoolSpec, NodePoolStatus, Object};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One SSE event as sent.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    data: Value,
    id: Option<String>,
}

/// An open watch, read event by event.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(base: &str, token: &str, path_and_query: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{base}{path_and_query}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("watch request")
    }

    async fn start(base: &str, token: &str, path_and_query: &str) -> Stream {
        let resp = Self::open(base, token, path_and_query).await;
        assert_eq!(resp.status(), 200, "{path_and_query}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), within 10 s.
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data, mut id) = (String::new(), String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data: Value = serde_json::from_str(&data).expect("JSON data");
                assert_eq!(data["type"].as_str(), Some(event.as_str()), "{data}");
                return Sse { event, data, id };
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream readable")
                .expect("stream open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event that is not a BOOKMARK.
    async fn change(&mut self) -> Sse {
        loop {
            let e = self.next().await;
            if e.event != "BOOKMARK" {
                return e;
            }
        }
    }
}

fn name_of(e: &Sse) -> &str {
    e.data["object"]["metadata"]["name"].as_str().unwrap_or("")
}

fn spec(extra: &str) -> FunctionSpec {
    serde_saphyr::from_str(&format!("runtime: shell\ncode: {{inline: cat}}\n{extra}"))
        .expect("spec")
}

#[tokio::test]
async fn watch_streams_whole_objects_and_resumes() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let stop = CancellationToken::new();
    let (base, token) = common::start_gateway(&store, stop.clone(), "watch").await;
    let a = store
        .create(&Object::new("team", "a", spec("")))
        .await
        .expect("a");
    store
        .create(&Object::new("other", "x", spec("")))
        .await
        .expect("x");

    // The list: RESET, the namespace's objects, SYNCED with an id.
    let mut w = Stream::start(&base, &token, "/v1/namespaces/team/watch?kind=fn").await;
    assert_eq!(w.next().await.event, "RESET");
    let added = w.next().await;
    assert_eq!((added.event.as_str(), name_of(&added)), ("ADDED", "a"));
    assert!(added.id.is_none(), "list items carry no id");
    let synced = w.next().await;
    assert_eq!(synced.event, "SYNCED");
    assert!(synced.id.is_some());

    // Changes: a new object, a status write (the whole object comes), a deletion.
    let b = store
        .create(&Object::new("team", "b", spec("")))
        .await
        .expect("b");
    let e = w.change().await;
    assert_eq!((e.event.as_str(), name_of(&e)), ("ADDED", "b"));
    let st = FunctionStatus {
        replicas: 3,
        last_error: Some("<script>x</script>".into()),
        ..Default::default()
    };
    store.update_status(&a, &st).await.expect("status");
    let e = w.change().await;
    assert_eq!((e.event.as_str(), name_of(&e)), ("MODIFIED", "a"));
    assert_eq!(e.data["object"]["status"]["replicas"], 3);
    assert_eq!(
        e.data["object"]["spec"]["runtime"], "shell",
        "spec and status"
    );
    let last_id = e.id.clone().expect("a change in a drained batch has an id");
    drop(w);

    // Resumed from that id: no list, only what changed since.
    store
        .delete::<FunctionSpec>("team", "b")
        .await
        .expect("del b");
    let mut st2 = st.clone();
    st2.replicas = 4;
    store.update_status(&a, &st2).await.expect("status");
    let mut w = Stream::start(
        &base,
        &token,
        &format!("/v1/namespaces/team/watch?kind=Function&resourceVersion={last_id}"),
    )
    .await;
    // No list: changes only — those since the id, and possibly a few already sent (an id
    // may lag behind the last change: a resume replays rather than misses).
    let (mut deleted, mut latest) = (false, Value::Null);
    while !deleted || latest != 4 {
        let e = w.change().await;
        match (e.event.as_str(), name_of(&e)) {
            ("DELETED", "b") => deleted = true,
            ("MODIFIED", "a") => latest = e.data["object"]["status"]["replicas"].clone(),
            other => panic!("a resumed stream sent {other:?}"),
        }
    }
    drop(w);
    let _ = b;

    // The same through Last-Event-ID, as EventSource resumes.
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/namespaces/team/watch?kind=fn"))
        .bearer_auth(&token)
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .expect("watch");
    let mut w = Stream {
        resp,
        buf: String::new(),
    };
    let e = w.change().await;
    assert!(
        ["DELETED", "MODIFIED"].contains(&e.event.as_str()),
        "no RESET: resumed ({e:?})"
    );
    drop(w);

    // A compacted resourceVersion starts over: RESET and the list.
    let now = store
        .list::<FunctionSpec>(None)
        .await
        .expect("list")
        .revision;
    etcd.etcdctl(&["compaction", &now.to_string()])
        .expect("compaction");
    let mut w = Stream::start(
        &base,
        &token,
        &format!("/v1/namespaces/team/watch?kind=fn&resourceVersion={last_id}"),
    )
    .await;
    assert_eq!(w.next().await.event, "RESET");
    let e = w.next().await;
    assert_eq!((e.event.as_str(), name_of(&e)), ("ADDED", "a"));
    assert_eq!(w.next().await.event, "SYNCED");
    drop(w);

    // Every namespace without the namespace segment.
    let mut w = Stream::start(&base, &token, "/v1/watch?kind=functions").await;
    assert_eq!(w.next().await.event, "RESET");
    let mut names = vec![
        name_of(&w.next().await).to_string(),
        name_of(&w.next().await).to_string(),
    ];
    names.sort();
    assert_eq!(names, ["a", "x"]);
    assert_eq!(w.next().await.event, "SYNCED");
    // A hand-written value that does not decode is an ERROR, not the end of the stream.
    etcd.put(
        "/lambda/registry/functions/team/bad",
        "spec: [not, a, function",
    );
    let e = w.change().await;
    assert_eq!(e.event, "ERROR");
    assert_eq!(e.data["key"], "team/bad");
    store
        .create(&Object::new("other", "y", spec("")))
        .await
        .expect("y");
    let e = w.change().await;
    assert_eq!((e.event.as_str(), name_of(&e)), ("ADDED", "y"));
    stop.cancel();
}

#[tokio::test]
async fn watch_requests_are_checked() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let stop = CancellationToken::new();
    let (base, token) = common::start_gateway(&store, stop.clone(), "watch").await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/v1/watch?kind=fn"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401, "the same auth as the rest of the API");
    for (q, status, needle) in [
        ("/v1/watch", 400, "kind: required"),
        ("/v1/watch?kind=pods", 400, "unknown kind"),
        ("/v1/watch?kind=fn&since=3", 400, "unknown query parameter"),
        (
            "/v1/watch?kind=fn&resourceVersion=abc",
            400,
            "resourceVersion",
        ),
        ("/v1/watch?kind=fn&resourceVersion=999999999", 400, "beyond"),
        ("/v1/namespaces/Not_A_Label/watch?kind=fn", 400, "namespace"),
    ] {
        let r = http
            .get(format!("{base}{q}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), status, "{q}");
        let body: Value = r.json().await.expect("json error");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    stop.cancel();
}

#[tokio::test]
async fn charts_history_and_console_files() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let stop = CancellationToken::new();
    let (base, token) = common::start_gateway(&store, stop.clone(), "history").await;
    let http = reqwest::Client::new();
    let addr = replica(Arc::new(AtomicUsize::new(0))).await;
    function_on(
        &store,
        "default",
        "charted",
        "runtime: shell\ncode: {inline: cat}\n",
        addr,
    )
    .await;

    // Calls by status code land in the function's history (once its route is known).
    let invoke = |body: &'static str| {
        let http = http.clone();
        let url = format!("{base}/v1/functions/charted/invoke");
        let token = token.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .expect("invoke")
                .status()
        }
    };
    common::eventually("the route", Duration::from_secs(10), async || {
        (invoke("{}").await == 200).then_some(())
    })
    .await;
    assert_eq!(invoke("{\"fail\": true}").await, 502);
    assert_eq!(invoke("{}").await, 200);
    let h: Value = http
        .get(format!(
            "{base}/v1/namespaces/default/functions/charted/history"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(h["bucketSeconds"], 10);
    let buckets = h["buckets"].as_array().expect("buckets");
    let count = |code: &str| -> u64 {
        buckets
            .iter()
            .map(|b| b["codes"][code].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(count("200") >= 2, "{h}");
    assert_eq!(count("502"), 1, "{h}");
    assert!(
        buckets
            .iter()
            .all(|b| b["p50Ms"].as_f64().is_some_and(|p| p >= 0.0)),
        "{h}"
    );
    let r = http
        .get(format!(
            "{base}/v1/namespaces/default/functions/nope/history"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("history");
    assert_eq!(r.status(), 404);

    // A pool's node counts at each change, and a mark for an edit of its replicas.
    let pool_spec: NodePoolSpec = serde_saphyr::from_str(
        "image: {glanceImage: b}\nflavor: m1.small\nreplicas: 1\nminReplicas: 1\nmaxReplicas: 3\n",
    )
    .expect("pool");
    let pool = store
        .create(&NodePool::new("default", "workers", pool_spec))
        .await
        .expect("pool");
    store
        .update_status(
            &pool,
            &NodePoolStatus {
                replicas: 1,
                ready_replicas: 1,
                ..Default::default()
            },
        )
        .await
        .expect("status");
    let pool_history = async || -> Value {
        http.get(format!(
            "{base}/v1/namespaces/default/nodepools/workers/history"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("pool history")
        .json()
        .await
        .expect("json")
    };
    common::eventually(
        "the pool's first counts",
        Duration::from_secs(10),
        async || {
            let h = pool_history().await;
            (h["samples"]
                .as_array()
                .and_then(|s| s.last())
                .map(|s| s["readyReplicas"].clone())
                == Some(1.into()))
            .then_some(())
        },
    )
    .await;
    let mut edited = store
        .get::<NodePoolSpec>("default", "workers")
        .await
        .expect("get");
    edited.spec.replicas = 2;
    store.update(&edited).await.expect("edit");
    let h = common::eventually("a mark for the edit", Duration::from_secs(10), async || {
        let h = pool_history().await;
        (!h["marks"].as_array()?.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(h["marks"][0]["source"], "Spec");
    assert_eq!(h["marks"][0]["reason"], "spec.replicas 1 → 2");
    assert_eq!(
        h["samples"]
            .as_array()
            .and_then(|s| s.last())
            .map(|s| s["specReplicas"].clone()),
        Some(2.into())
    );

    // The console: served without a key, with its policy; data comes from the API only.
    let r = http
        .get(format!("{base}/console/"))
        .send()
        .await
        .expect("console");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(r.text().await.expect("html").contains("/console/app.js"));
    let r = http
        .get(format!("{base}/console/app.js"))
        .send()
        .await
        .expect("js");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/javascript")
    );
    let r = http
        .get(format!("{base}/console/nope.js"))
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    // Every new endpoint is in the OpenAPI document.
    let doc: Value = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    for p in [
        "/v1/watch",
        "/v1/namespaces/{ns}/watch",
        "/v1/namespaces/{ns}/functions/{name}/history",
        "/v1/namespaces/{ns}/nodepools/{name}/history",
        "/console/",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} in /openapi.json");
    }
    stop.cancel();
}
