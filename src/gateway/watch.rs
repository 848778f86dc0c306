//! The watch API: `GET /v1/watch?kind=K` (every namespace) and
//! `GET /v1/namespaces/{ns}/watch?kind=K` stream the changes of one kind's objects — whole
//! objects, spec and status merged — as Server-Sent Events, resumable from a resourceVersion.
//!
//! The stream, event by event (`event:` is the type, `data:` one JSON object):
//! - `RESET` `{"type"}` — forget every object held: a full list follows (first thing sent,
//!   unless the stream resumes exactly where an earlier one stopped);
//! - `ADDED` / `MODIFIED` / `DELETED` `{"type", "object"}` — `object` is the whole object
//!   (its last known state for `DELETED`);
//! - `SYNCED` `{"type", "resourceVersion"}` — every object of the list has been sent;
//! - `BOOKMARK` `{"type", "resourceVersion"}` — nothing changed up to that revision;
//! - `ERROR` `{"type", "key", "message"}` — a stored value that does not decode (the
//!   object's last good state stays).
//!
//! An event's `id:` is an etcd revision up to which every change has been sent; events of a
//! list carry none until its `SYNCED`. Resume with `?resourceVersion=ID` (or the
//! `Last-Event-ID` header, which browsers' `EventSource` sends): the stream continues after ID
//! without a list, or — when etcd compacted that history — with `RESET` and a fresh list.
//!
//! Every authorization decision of this API goes through [`may_watch`]: the kind's read
//! permission in the namespace watched, or — watching every namespace — in at least one of
//! the key's namespaces, and then only the objects of those namespaces are sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{Kind, ObjectKey, Resource};
use crate::store::{CacheChange, ObjectCache, ObjectList, Store, StoreError, WatchStream};

use super::Gateway;
use super::authz::{Permission, Principal};
use super::error::HttpError;

/// Watches one gateway serves at once; past it, 503 with `Retry-After`. Each holds one etcd
/// watch stream (two watchers) and a copy of the kind's objects in its namespace.
pub const MAX_WATCHES: usize = 512;

/// How often an open stream asks etcd how far it is (answered with a `BOOKMARK`): also the
/// stream's heartbeat, so a client that went away is noticed within this time.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

/// Events queued per stream before the pump waits for the client to read.
const QUEUE: usize = 64;

/// Which namespaces' objects a watch may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every object of the stream (a platform kind, or one namespace the key may read).
    All,
    /// Only objects of these namespaces (a namespace-scoped key watching every namespace).
    Namespaces(Arc<std::collections::BTreeSet<String>>),
}

impl Visible {
    /// True when an object of namespace `ns` may be sent.
    pub fn shows(&self, ns: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Namespaces(set) => set.contains(ns),
        }
    }
}

/// Whether `principal` may watch `kind` in `namespace` (`None`: every namespace), and what it
/// may see then: the one authorization decision of the watch API. Platform kinds (node pools,
/// nodes, snapshot images, warm pools) need their read permission; a namespaced kind needs it
/// in the namespace watched or, watching every namespace, in the key's own namespaces — whose
/// objects alone are sent.
pub fn may_watch(
    principal: &Principal,
    kind: Kind,
    namespace: Option<&str>,
) -> Result<Visible, HttpError> {
    let permission = Permission::read(kind);
    if permission.is_platform() {
        principal.check_platform(permission)?;
        return Ok(Visible::All);
    }
    match (namespace, principal.namespaces()) {
        (Some(ns), _) => principal.check(ns, permission).map(|()| Visible::All),
        (None, None) => principal
            .check("default", permission)
            .map(|()| Visible::All),
        (None, Some(set)) => {
            // The role decides; a key of no namespace at all is refused by this check too.
            let first = set.iter().next().map(String::as_str).unwrap_or("");
            principal.check(first, permission)?;
            Ok(Visible::Namespaces(Arc::new(set.clone())))
        }
    }
}

/// The validated query of a watch.
#[derive(Debug, PartialEq)]
struct WatchQuery {
    kind: Kind,
    /// Continue after this revision (no list), when given.
    resume_after: Option<i64>,
}

/// Parses `?kind=&resourceVersion=` (and `Last-Event-ID` when no resourceVersion is given);
/// an unknown parameter or a bad value is a 400 naming it.
fn parse_query(
    q: &HashMap<String, String>,
    last_event_id: Option<&str>,
) -> Result<WatchQuery, HttpError> {
    let bad = |m: String| HttpError::new(StatusCode::BAD_REQUEST, "BadRequest", m);
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "kind" | "resourceVersion"))
    {
        return Err(bad(format!(
            "unknown query parameter {k:?} (kind, resourceVersion)"
        )));
    }
    let kind = match q.get("kind").map(String::as_str) {
        None | Some("") => {
            return Err(bad(format!(
                "kind: required (one of {})",
                Kind::ALL.map(Kind::name).join(", ")
            )));
        }
        Some(k) => Kind::from_alias(k).ok_or_else(|| {
            bad(format!(
                "kind: unknown kind {k:?} (one of {})",
                Kind::ALL.map(Kind::name).join(", ")
            ))
        })?,
    };
    let (rv, field) = match q.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(v) => (Some(v.as_str()), "resourceVersion"),
        None => (last_event_id.filter(|v| !v.is_empty()), "Last-Event-ID"),
    };
    let resume_after = match rv {
        None => None,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(bad(format!(
                    "{field}: {v:?} is not a resourceVersion (a positive whole number)"
                )));
            }
        },
    };
    Ok(WatchQuery { kind, resume_after })
}

/// `GET /v1/watch?kind=…`
pub async fn watch_all(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<HashMap<String, String>>,
    parts: Parts,
) -> Response {
    watch(gw, None, q, parts).await
}

/// `GET /v1/namespaces/{ns}/watch?kind=…`
pub async fn watch_ns(
    State(gw): State<Arc<Gateway>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    parts: Parts,
) -> Response {
    if let Err(why) = crate::api::validation::check_dns_label(&ns) {
        return HttpError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("namespace {ns:?}: {why}"),
        )
        .into_response();
    }
    watch(gw, Some(ns), q, parts).await
}

async fn watch(
    gw: Arc<Gateway>,
    ns: Option<String>,
    q: HashMap<String, String>,
    parts: Parts,
) -> Response {
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    let query = match parse_query(&q, last_event_id) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let principal = match parts.extensions.get::<Principal>() {
        Some(p) => p.clone(),
        None => {
            return HttpError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "this route is not behind the gateway's authentication",
            )
            .into_response();
        }
    };
    let visible = match may_watch(&principal, query.kind, ns.as_deref()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Ok(permit) = gw.watches.clone().try_acquire_owned() else {
        let mut e = HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TooManyWatches",
            format!("this gateway serves {MAX_WATCHES} watches at once; retry later"),
        );
        e.retry_after = Some(5);
        return e.into_response();
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let started = crate::with_kind!(query.kind, K, {
        start::<K>(
            gw.store.clone(),
            ns,
            visible,
            query.resume_after,
            tx,
            permit,
        )
        .await
    });
    if let Err(e) = started {
        return e.into_response();
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut r = Sse::new(futures::StreamExt::map(stream, Ok::<Event, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response();
    // Reverse proxies must pass events on as they come.
    r.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    r
}

/// The objects a stream starts from: `Reset` sends them all after a `RESET`; `Resumed` holds
/// what the client already has (the state at its resourceVersion), sent again only as changes.
enum Start<K: Resource> {
    Reset(ObjectList<K>),
    Resumed(ObjectList<K>),
}

/// Reads the starting state (so that a bad resourceVersion or an unreachable etcd is an HTTP
/// error, not a broken stream), then spawns the pump that holds `permit` while it runs.
async fn start<K: Resource>(
    store: Store,
    ns: Option<String>,
    visible: Visible,
    resume_after: Option<i64>,
    tx: mpsc::Sender<Event>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), HttpError> {
    let unavailable = |e: StoreError| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            e.to_string(),
        )
    };
    let start = match resume_after {
        None => Start::Reset(store.list::<K>(ns.as_deref()).await.map_err(unavailable)?),
        Some(rv) => match store.list_at::<K>(ns.as_deref(), rv).await {
            Ok(list) => Start::Resumed(list),
            Err(StoreError::Compacted { .. }) => {
                Start::Reset(store.list::<K>(ns.as_deref()).await.map_err(unavailable)?)
            }
            Err(e @ StoreError::FutureRevision { .. }) => {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("resourceVersion: {e}"),
                ));
            }
            Err(e) => return Err(unavailable(e)),
        },
    };
    tokio::spawn(async move {
        let _permit = permit;
        Pump::<K> {
            store,
            ns,
            visible,
            cache: ObjectCache::new(),
            tx,
            last_id: 0,
        }
        .run(start)
        .await;
    });
    Ok(())
}

/// The SSE event of a type with a JSON body and, when given, an id.
fn sse(type_: &str, mut body: serde_json::Value, id: Option<i64>) -> Event {
    body["type"] = json!(type_);
    let ev = Event::default().event(type_).data(body.to_string());
    match id {
        Some(id) => ev.id(id.to_string()),
        None => ev,
    }
}

/// The type and body of the event for a change of a whole object: `ADDED` when the client did
/// not hold it (`known` false), else `MODIFIED`; `DELETED` with its last state; `ERROR` for an
/// unreadable value.
fn change_message<K: Resource>(
    change: &CacheChange<K>,
    known: bool,
) -> (&'static str, serde_json::Value) {
    match change {
        CacheChange::Applied(o) => (
            if known { "MODIFIED" } else { "ADDED" },
            json!({"object": o.as_ref()}),
        ),
        CacheChange::Deleted(o) => ("DELETED", json!({"object": o.as_ref()})),
        CacheChange::Invalid(key, entry) => (
            "ERROR",
            json!({"key": key.to_string(), "message": format!("{}: {}", entry.key, entry.message)}),
        ),
    }
}

fn change_event<K: Resource>(change: &CacheChange<K>, known: bool, id: Option<i64>) -> Event {
    let (type_, body) = change_message(change, known);
    sse(type_, body, id)
}

/// One stream's loop: its own copy of the objects (to send whole objects for status-only
/// changes and to tell ADDED from MODIFIED), fed by an etcd watch resumed after errors and
/// re-listed after compaction. Ends when the client goes away.
struct Pump<K: Resource> {
    store: Store,
    ns: Option<String>,
    /// What the key may see of the stream.
    visible: Visible,
    cache: ObjectCache<K>,
    tx: mpsc::Sender<Event>,
    /// The last id sent: a bookmark that would not move it is not sent.
    last_id: i64,
}

/// The client went away: the pump stops.
struct Gone;

impl<K: Resource> Pump<K> {
    async fn send(&self, ev: Event) -> Result<(), Gone> {
        self.tx.send(ev).await.map_err(|_| Gone)
    }

    /// Sleeps `delay` unless the client leaves first.
    async fn pause(&self, delay: Duration) -> Result<(), Gone> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.tx.closed() => Err(Gone),
        }
    }

    async fn run(mut self, start: Start<K>) {
        let _ = self.serve(start).await;
    }

    async fn serve(&mut self, start: Start<K>) -> Result<(), Gone> {
        let mut from = match start {
            Start::Reset(list) => {
                self.send(sse("RESET", json!({}), None)).await?;
                self.relist(list).await?
            }
            Start::Resumed(list) => {
                let rev = list.revision;
                self.cache.replace(list);
                rev + 1
            }
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let mut stream = match self.store.watch::<K>(self.ns.as_deref(), from).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watch API: starting an etcd watch");
                    self.pause(delay).await?;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            match self.follow(&mut stream).await? {
                Ok(()) => {}
                Err(StoreError::Compacted { .. }) => {
                    // Continuity lost: send the difference to a fresh list.
                    let list = loop {
                        match self.store.list::<K>(self.ns.as_deref()).await {
                            Ok(l) => break l,
                            Err(e) => {
                                tracing::warn!(error = %e, "watch API: re-listing");
                                self.pause(delay).await?;
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                        }
                    };
                    from = self.relist(list).await?;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch API: etcd watch broke; resuming");
                    self.pause(delay).await?;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            from = stream.resume_revision();
        }
    }

    /// Sends the difference between what the client holds and `list`, then `SYNCED`; returns
    /// the revision to watch from.
    async fn relist(&mut self, list: ObjectList<K>) -> Result<i64, Gone> {
        let rev = list.revision;
        let known: std::collections::HashSet<ObjectKey> =
            self.cache.iter().map(|o| o.key()).collect();
        for bad in &list.invalid {
            // `…/<plural>/<namespace>/<name>` (spec or status key): an unreadable object of a
            // namespace the key may not read is not even named.
            let mut parts = bad.key.split('/').skip_while(|p| *p != K::PLURAL).skip(1);
            if !parts.next().is_some_and(|ns| self.visible.shows(ns)) {
                continue;
            }
            self.send(sse(
                "ERROR",
                json!({"key": bad.key, "message": bad.message}),
                None,
            ))
            .await?;
        }
        for change in self.cache.replace(list) {
            let k = change.key();
            if !self.visible.shows(&k.namespace) {
                continue;
            }
            self.send(change_event(&change, known.contains(&k), None))
                .await?;
        }
        self.last_id = self.last_id.max(rev);
        self.send(sse(
            "SYNCED",
            json!({"resourceVersion": rev.to_string()}),
            Some(rev),
        ))
        .await?;
        Ok(rev + 1)
    }

    /// Sends the stream's changes until it fails (the inner error) or the client leaves.
    async fn follow(
        &mut self,
        stream: &mut WatchStream<K>,
    ) -> Result<Result<(), StoreError>, Gone> {
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        bookmark.tick().await;
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = bookmark.tick() => {
                    if let Err(e) = stream.request_progress().await {
                        return Ok(Err(e));
                    }
                    continue;
                }
                _ = self.tx.closed() => return Err(Gone),
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return Ok(Err(e)),
            };
            // An id only where every change up to it has been sent.
            let id = (stream.buffered() == 0).then(|| stream.resume_revision() - 1);
            if let crate::store::WatchEvent::Progress(rev) = ev {
                if let Some(id) = id.filter(|&id| id > self.last_id) {
                    self.last_id = id;
                    self.send(sse(
                        "BOOKMARK",
                        json!({"resourceVersion": rev.to_string()}),
                        Some(id),
                    ))
                    .await?;
                }
                continue;
            }
            let known = match &ev {
                crate::store::WatchEvent::Spec(o) => self.cache.get(&o.key()).is_some(),
                _ => true,
            };
            if let Some(change) = self.cache.apply(ev) {
                if let Some(id) = id {
                    self.last_id = self.last_id.max(id);
                }
                // Another namespace's change: nothing to send, but the id still moves (a
                // later bookmark carries it).
                if self.visible.shows(&change.key().namespace) {
                    self.send(change_event(&change, known, id)).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Object;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kinds_by_any_alias_and_resume_points() {
        let w = parse_query(&q(&[("kind", "np")]), None).expect("alias");
        assert_eq!(
            w,
            WatchQuery {
                kind: Kind::NodePool,
                resume_after: None
            }
        );
        let w = parse_query(
            &q(&[("kind", "Function"), ("resourceVersion", "42")]),
            Some("7"),
        )
        .expect("rv");
        assert_eq!(w.resume_after, Some(42), "the query beats Last-Event-ID");
        let w = parse_query(&q(&[("kind", "events")]), Some("7")).expect("header");
        assert_eq!((w.kind, w.resume_after), (Kind::Event, Some(7)));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (pairs, header, needle) in [
            (vec![], None, "kind: required"),
            (vec![("kind", "pods")], None, "unknown kind \"pods\""),
            (
                vec![("kind", "fn"), ("rv", "1")],
                None,
                "unknown query parameter \"rv\"",
            ),
            (
                vec![("kind", "fn"), ("resourceVersion", "x")],
                None,
                "resourceVersion:",
            ),
            (
                vec![("kind", "fn"), ("resourceVersion", "0")],
                None,
                "resourceVersion:",
            ),
            (vec![("kind", "fn")], Some("-3"), "Last-Event-ID:"),
        ] {
            let e = parse_query(&q(&pairs), header).expect_err("rejected");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }

    #[test]
    fn change_events_carry_whole_objects() {
        use crate::api::FunctionSpec;
        use crate::store::InvalidEntry;
        let spec: FunctionSpec =
            serde_saphyr::from_str("runtime: shell\ncode: {inline: cat}\n").expect("spec");
        let mut o = Object::new("team", "f", spec);
        o.metadata.labels.insert("x".into(), "<b>markup</b>".into());
        o.status = Some(Default::default());
        let applied = CacheChange::Applied(Arc::new(o.clone()));
        let (t, body) = change_message(&applied, false);
        assert_eq!(t, "ADDED");
        let back: Object<FunctionSpec> =
            serde_json::from_value(body["object"].clone()).expect("a whole object");
        assert_eq!(back, o, "spec, metadata and status round-trip");
        assert_eq!(change_message(&applied, true).0, "MODIFIED");
        let (t, body) = change_message(&CacheChange::<FunctionSpec>::Deleted(Arc::new(o)), true);
        assert_eq!(
            (t, body["object"]["metadata"]["name"].as_str()),
            ("DELETED", Some("f"))
        );
        let bad = CacheChange::<FunctionSpec>::Invalid(
            ObjectKey::new("team", "g"),
            InvalidEntry {
                key: "/lambda/registry/functions/team/g".into(),
                message: "not YAML".into(),
            },
        );
        let (t, body) = change_message(&bad, true);
        assert_eq!((t, body["key"].as_str()), ("ERROR", Some("team/g")));
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("not YAML"))
        );
    }
}
