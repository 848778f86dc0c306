//! Execution records in etcd. Two keys per execution, written together in transactions:
//!
//! - `<root>/executions/<ns>/<id>`: the record as JSON (at most [`MAX_RECORD_BYTES`]); read by
//!   `GET …/executions/{id}`, and created only if absent, so a redelivered execution finds its
//!   record ([`Begin::Duplicate`]) instead of starting anew;
//! - `<root>/executionindex/<ns>/<function>/<created ms, 13 digits>-<id>`: `{"status": …}`,
//!   so that a function's history lists newest first (descending key order), filters by status
//!   and is pruned from small values only.
//!
//! Records are not objects (no spec/status, no watch): like API keys they are plain keys, JSON
//! rather than YAML because they carry arbitrary log text. Every write compares revisions, so
//! two listeners updating one record never overwrite each other silently.
//!
//! [`MAX_RECORD_BYTES`]: super::MAX_RECORD_BYTES

use chrono::{DateTime, Utc};
use etcd_client::{
    Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use serde::{Deserialize, Serialize};

use super::retention::{Entry, Retention, to_prune};
use super::{Execution, ExecutionStatus};
use crate::api::validation::check_dns_label;
use crate::store::{CondWrite, Precondition, Store, prefix_end};

/// Most records one page of [`list`] returns.
pub const MAX_PAGE: usize = 100;
/// Conflicting duplicate-count updates are retried this often before giving up.
const DUPLICATE_RETRIES: usize = 10;

/// Errors of the execution store, each naming the key or id it is about.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("stored execution record {key} is unreadable: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot encode execution {id}: {message}")]
    Encode { id: String, message: String },
    #[error("execution {id} not found in namespace {namespace}")]
    NotFound { namespace: String, id: String },
    #[error("execution {id} changed since it was read (re-read and retry)")]
    Conflict { id: String },
    #[error("invalid execution id {id:?}: 1-128 of [A-Za-z0-9._:-]")]
    InvalidId { id: String },
    #[error("invalid {what} {value:?}: {why}")]
    InvalidName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid continue token {token:?} (pass back the one a list returned)")]
    InvalidContinue { token: String },
}

/// A record with the etcd revision it was read or written at (what the next update compares).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub execution: Execution,
    pub revision: i64,
}

/// What [`begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The record did not exist: it is now stored, `Queued`.
    New(Stored),
    /// The execution was seen before (a redelivery): its record, `duplicates` incremented.
    Duplicate(Stored),
}

/// One page of a function's history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Execution>,
    /// Pass back to get the next page; `None` on the last one.
    pub continue_token: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Summary {
    status: ExecutionStatus,
}

/// The record's stored form.
pub(crate) fn encode(e: &Execution) -> Result<Vec<u8>, ExecutionError> {
    serde_json::to_vec(e).map_err(|err| ExecutionError::Encode {
        id: e.id.clone(),
        message: err.to_string(),
    })
}

/// Reads a stored record; `key` names it in the error.
pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Execution, ExecutionError> {
    serde_json::from_slice(bytes).map_err(|e| ExecutionError::Invalid {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn check_id(id: &str) -> Result<(), ExecutionError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ExecutionError::InvalidId { id: id.into() })
    }
}

fn check_name(what: &'static str, value: &str) -> Result<(), ExecutionError> {
    // Names become key segments: a `/` would reach into another namespace's keys.
    check_dns_label(value).map_err(|why| ExecutionError::InvalidName {
        what,
        value: value.into(),
        why,
    })
}

fn record_key(store: &Store, namespace: &str, id: &str) -> String {
    format!("{}/executions/{namespace}/{id}", store.keys().root())
}

fn index_prefix(store: &Store, namespace: Option<(&str, &str)>) -> String {
    match namespace {
        Some((ns, function)) => format!("{}/executionindex/{ns}/{function}/", store.keys().root()),
        None => format!("{}/executionindex/", store.keys().root()),
    }
}

fn index_key(store: &Store, e: &Execution) -> String {
    format!(
        "{}{:013}-{}",
        index_prefix(store, Some((&e.namespace, &e.function))),
        e.created_at.timestamp_millis().max(0),
        e.id
    )
}

fn summary(e: &Execution) -> Result<Vec<u8>, ExecutionError> {
    serde_json::to_vec(&Summary { status: e.status }).map_err(|err| ExecutionError::Encode {
        id: e.id.clone(),
        message: err.to_string(),
    })
}

/// Runs one etcd call under the store's request timeout (the store's own mapping).
async fn call<T>(
    store: &Store,
    op: &'static str,
    key: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ExecutionError> {
    Ok(store.call(op, key, fut).await?)
}

/// Stores `execution` if no record of its id exists: `Some` with it stored, `None` when one
/// does (nothing written). Committed together with concurrent record writes (group commit).
pub async fn create(
    store: &Store,
    execution: &Execution,
) -> Result<Option<Stored>, ExecutionError> {
    check_id(&execution.id)?;
    check_name("namespace", &execution.namespace)?;
    check_name("function", &execution.function)?;
    let key = record_key(store, &execution.namespace, &execution.id);
    let write = CondWrite {
        puts: vec![
            (key.clone(), encode(execution)?),
            (index_key(store, execution), summary(execution)?),
        ],
        key,
        when: Precondition::Absent,
    };
    Ok(store.write_if(write).await?.map(|revision| Stored {
        execution: execution.clone(),
        revision,
    }))
}

/// Stores a new execution's record, or finds the existing one of the same id (then counts the
/// delivery as a duplicate). The caller runs the execution only for [`Begin::New`], or for a
/// duplicate whose record is not final (its first delivery died mid-run).
pub async fn begin(store: &Store, execution: &Execution) -> Result<Begin, ExecutionError> {
    if let Some(stored) = create(store, execution).await? {
        return Ok(Begin::New(stored));
    }
    for _ in 0..DUPLICATE_RETRIES {
        let mut seen = get(store, &execution.namespace, &execution.id).await?;
        seen.execution.duplicates = seen.execution.duplicates.saturating_add(1);
        match update(store, &seen).await {
            Ok(s) => return Ok(Begin::Duplicate(s)),
            Err(ExecutionError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ExecutionError::Conflict {
        id: execution.id.clone(),
    })
}

/// Reads one record by id (linearizable: it reflects every write acknowledged before).
pub async fn get(store: &Store, namespace: &str, id: &str) -> Result<Stored, ExecutionError> {
    read(store, namespace, id, None).await
}

/// Reads one record by id from the etcd member the client talks to, without a quorum round
/// (serializable: it may miss the latest writes of a multi-member cluster). For the hot path's
/// "seen before?" checks, where a stale answer costs at most a duplicate run, which
/// at-least-once delivery allows anyway; on a single member it is exact.
pub async fn peek(store: &Store, namespace: &str, id: &str) -> Result<Stored, ExecutionError> {
    read(
        store,
        namespace,
        id,
        Some(GetOptions::new().with_serializable()),
    )
    .await
}

/// Reads many records of `namespace` at once (one transaction per [`MAX_PAGE`] ids), in the
/// order of `ids`; `None` for one that does not exist.
pub async fn get_many(
    store: &Store,
    namespace: &str,
    ids: &[String],
) -> Result<Vec<Option<Execution>>, ExecutionError> {
    check_name("namespace", namespace)?;
    let mut out = Vec::with_capacity(ids.len());
    let mut kv = store.client().kv_client();
    for chunk in ids.chunks(MAX_PAGE) {
        for id in chunk {
            check_id(id)?;
        }
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|id| TxnOp::get(record_key(store, namespace, id), None))
            .collect();
        let first = record_key(store, namespace, &chunk[0]);
        let resp = call(store, "get", &first, kv.txn(Txn::new().and_then(ops))).await?;
        for r in resp.op_responses() {
            let TxnOpResponse::Get(g) = r else {
                out.push(None);
                continue;
            };
            match g.kvs().first() {
                None => out.push(None),
                Some(entry) => {
                    let k = String::from_utf8_lossy(entry.key()).into_owned();
                    out.push(Some(decode(&k, entry.value())?));
                }
            }
        }
    }
    Ok(out)
}

async fn read(
    store: &Store,
    namespace: &str,
    id: &str,
    opts: Option<GetOptions>,
) -> Result<Stored, ExecutionError> {
    check_id(id)?;
    check_name("namespace", namespace)?;
    let key = record_key(store, namespace, id);
    let mut kv = store.client().kv_client();
    let resp = call(store, "get", &key, kv.get(key.clone(), opts)).await?;
    let kv = resp.kvs().first().ok_or_else(|| ExecutionError::NotFound {
        namespace: namespace.into(),
        id: id.into(),
    })?;
    Ok(Stored {
        execution: decode(&key, kv.value())?,
        revision: kv.mod_revision(),
    })
}

/// Writes `stored.execution` if the record is still at `stored.revision` (else `Conflict`:
/// re-read and decide again); returns it with its new revision. Id, namespace, function and
/// creation time are the record's identity and must not change.
pub async fn update(store: &Store, stored: &Stored) -> Result<Stored, ExecutionError> {
    let e = &stored.execution;
    check_id(&e.id)?;
    check_name("namespace", &e.namespace)?;
    check_name("function", &e.function)?;
    let key = record_key(store, &e.namespace, &e.id);
    let write = CondWrite {
        puts: vec![
            (key.clone(), encode(e)?),
            (index_key(store, e), summary(e)?),
        ],
        key,
        when: Precondition::AtRevision(stored.revision),
    };
    match store.write_if(write).await? {
        Some(revision) => Ok(Stored {
            execution: e.clone(),
            revision,
        }),
        None => Err(ExecutionError::Conflict { id: e.id.clone() }),
    }
}

/// The id of an index key (`…/<ms>-<id>`), and its sort suffix (the continue token).
fn index_suffix<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    let suffix = key.strip_prefix(prefix)?;
    let (ms, id) = suffix.split_once('-')?;
    (ms.len() == 13 && ms.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
        .then_some((suffix, id))
}

/// A page of a function's records, newest first, optionally only those in `status`; `limit`
/// is clamped to 1..=[`MAX_PAGE`]. A record whose index entry outlived it is skipped.
pub async fn list(
    store: &Store,
    namespace: &str,
    function: &str,
    status: Option<ExecutionStatus>,
    limit: usize,
    continue_token: Option<&str>,
) -> Result<Page, ExecutionError> {
    check_name("namespace", namespace)?;
    check_name("function", function)?;
    let limit = limit.clamp(1, MAX_PAGE);
    let prefix = index_prefix(store, Some((namespace, function)));
    let mut end = match continue_token {
        None => prefix_end(&prefix),
        Some(t) => {
            let key = format!("{prefix}{t}");
            index_suffix(&prefix, &key)
                .ok_or_else(|| ExecutionError::InvalidContinue { token: t.into() })?;
            key.into_bytes()
        }
    };
    let mut kv = store.client().kv_client();
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut more = true;
    // Fetch index pages until `limit` entries pass the filter (or the history ends).
    while ids.len() < limit && more {
        let opts = GetOptions::new()
            .with_range(end.clone())
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit((limit * 2) as i64);
        let resp = call(store, "list", &prefix, kv.get(prefix.clone(), Some(opts))).await?;
        more = resp.more();
        let n = resp.kvs().len();
        for (i, entry) in resp.kvs().iter().enumerate() {
            let k = String::from_utf8_lossy(entry.key()).into_owned();
            end = entry.key().to_vec();
            let Some((suffix, id)) = index_suffix(&prefix, &k) else {
                tracing::warn!(key = %k, "skipping malformed execution index key");
                continue;
            };
            let matches = match status {
                None => true,
                Some(want) => serde_json::from_slice::<Summary>(entry.value())
                    .map(|s| s.status == want)
                    .unwrap_or(false),
            };
            if matches {
                ids.push((suffix.to_string(), id.to_string()));
                if ids.len() == limit {
                    // Full: a next page exists if anything is left (it may turn out empty
                    // under a filter, as Kubernetes' continue tokens may).
                    more = more || i + 1 < n;
                    break;
                }
            }
        }
    }
    let continue_token = more.then(|| ids.last().map(|(s, _)| s.clone())).flatten();
    let mut items = Vec::with_capacity(ids.len());
    if !ids.is_empty() {
        let ops: Vec<TxnOp> = ids
            .iter()
            .map(|(_, id)| TxnOp::get(record_key(store, namespace, id), None))
            .collect();
        let resp = call(store, "list", &prefix, kv.txn(Txn::new().and_then(ops))).await?;
        for r in resp.op_responses() {
            let TxnOpResponse::Get(g) = r else { continue };
            for entry in g.kvs() {
                let k = String::from_utf8_lossy(entry.key()).into_owned();
                match decode(&k, entry.value()) {
                    Ok(e) => items.push(e),
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable execution record"),
                }
            }
        }
    }
    Ok(Page {
        items,
        continue_token,
    })
}

/// One index entry as the sweep read it.
struct Indexed {
    key: String,
    /// Its mod revision: the delete compares it, so an entry updated since is kept.
    revision: i64,
    id: String,
    entry: Entry,
}

/// Applies `policy` to every function's history at `now`; returns how many records went. An
/// entry that changed since it was read (its execution moved on) is left for the next sweep.
pub async fn prune_all(
    store: &Store,
    policy: &Retention,
    now: DateTime<Utc>,
) -> Result<usize, ExecutionError> {
    let prefix = index_prefix(store, None);
    let mut kv = store.client().kv_client();
    let mut from = prefix.clone().into_bytes();
    let end = prefix_end(&prefix);
    let mut groups: std::collections::BTreeMap<(String, String), Vec<Indexed>> = Default::default();
    loop {
        let opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
        let resp = call(store, "prune", &prefix, kv.get(from.clone(), Some(opts))).await?;
        for entry in resp.kvs() {
            let k = String::from_utf8_lossy(entry.key()).into_owned();
            let parsed = k.strip_prefix(&prefix).and_then(|rest| {
                let mut parts = rest.splitn(3, '/');
                let (ns, function, suffix) = (parts.next()?, parts.next()?, parts.next()?);
                let (ms, id) = suffix.split_once('-')?;
                let created = DateTime::from_timestamp_millis(ms.parse().ok()?)?;
                let s: Summary = serde_json::from_slice(entry.value()).ok()?;
                Some((
                    ns.to_string(),
                    function.to_string(),
                    id.to_string(),
                    created,
                    s.status,
                ))
            });
            let Some((ns, function, id, created_at, status)) = parsed else {
                tracing::warn!(key = %k, "skipping malformed execution index entry");
                continue;
            };
            let e = Entry {
                created_at,
                terminal: status.is_terminal(),
            };
            groups.entry((ns, function)).or_default().push(Indexed {
                key: k,
                revision: entry.mod_revision(),
                id,
                entry: e,
            });
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    let mut removed = 0;
    for ((ns, _), entries) in groups {
        let view: Vec<Entry> = entries.iter().map(|e| e.entry).collect();
        for i in to_prune(&view, now, policy) {
            let e = &entries[i];
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    e.key.clone(),
                    CompareOp::Equal,
                    e.revision,
                )])
                .and_then([
                    TxnOp::delete(e.key.clone(), None),
                    TxnOp::delete(record_key(store, &ns, &e.id), None),
                ]);
            if store.txn("prune", &e.key, txn).await?.succeeded {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_index_keys() {
        assert!(check_id("0123abcd").is_ok());
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
        assert!(check_id(&"a".repeat(129)).is_err());
        assert!(check_name("namespace", "../x").is_err());
        let p = "/lambda/executionindex/ns/fn/";
        assert_eq!(
            index_suffix(p, "/lambda/executionindex/ns/fn/0001800000000-abc"),
            Some(("0001800000000-abc", "abc"))
        );
        assert_eq!(index_suffix(p, "/lambda/executionindex/ns/fn/18-abc"), None);
        assert_eq!(
            index_suffix(p, "/lambda/executionindex/ns/fn/0001800000000-"),
            None
        );
    }
}
