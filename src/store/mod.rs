//! Typed access to objects in etcd (design §2): create / get / list / update / update_status /
//! delete with optimistic concurrency on `mod_revision`, and list + watch from a revision.

mod batch;
mod codec;
mod config;
mod fence;
mod keys;
mod records;
pub mod secrets;
mod status;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use crate::api::{FieldErrors, Object, ObjectKey, Resource};

pub use batch::{CondWrite, Precondition, WriteResult};
pub use codec::{create_revision_of_uid, derive_uid, encode_spec};
pub use config::StoreConfig;
pub use fence::{Fence, TxnOutcome};
pub use keys::{DEFAULT_PREFIX, KeySpace, prefix_end};
pub use records::RecordError;
pub use watch::{CacheChange, ObjectCache, WatchEvent, WatchStream};

/// Errors of the store, each with the object or etcd key it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd at {endpoints} is unreachable: {message}")]
    Unreachable { endpoints: String, message: String },
    #[error("etcd {op} of {key} failed: {source}")]
    Etcd {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op} of {key} timed out after {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    #[error("{kind} {key} not found")]
    NotFound { kind: &'static str, key: ObjectKey },
    #[error("{kind} {key} already exists")]
    AlreadyExists { kind: &'static str, key: ObjectKey },
    #[error(
        "conflict writing {kind} {key}: it changed since resourceVersion {expected} was read (re-read and retry)"
    )]
    Conflict {
        kind: &'static str,
        key: ObjectKey,
        expected: String,
    },
    #[error("stored object at {key} is invalid: {message}")]
    Invalid { key: String, message: String },
    #[error("{kind} {key} is invalid: {errors}")]
    Validation {
        kind: &'static str,
        key: ObjectKey,
        errors: FieldErrors,
    },
    #[error(
        "watch from revision {requested} is below etcd's compaction revision {compact_revision}; re-list"
    )]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    #[error("revision {requested} is beyond etcd's current revision")]
    FutureRevision { requested: i64 },
    #[error("watch of {prefix} ended: {message}")]
    WatchEnded { prefix: String, message: String },
    #[error("etcd write of {key} (committed with others) failed: {message}")]
    Batch { key: String, message: String },
    #[error("cannot encode {key}: {message}")]
    Encode { key: String, message: String },
    #[error(
        "etcd {op} of {key} fenced: leader key {leader_key} is no longer the one this process created at revision {revision} (it stopped leading)"
    )]
    Fenced {
        op: &'static str,
        key: String,
        leader_key: String,
        revision: i64,
    },
    #[error("etcd {op} of {key}: the task sending it ended: {message}")]
    WriteTask {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Tls {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// True for errors that a retry on fresh state may resolve.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True when a leader's write was refused because it no longer leads: stop, never retry.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// Maps etcd's answers to a read at a revision it no longer (or does not yet) hold to the
/// errors a caller acts on: re-list from now, or reject the revision.
fn historical_read_error(e: StoreError, requested: i64) -> StoreError {
    match &e {
        StoreError::Etcd { source, .. } => {
            let text = source.to_string();
            if text.contains("required revision has been compacted") {
                StoreError::Compacted {
                    requested,
                    compact_revision: 0,
                }
            } else if text.contains("required revision is a future revision") {
                StoreError::FutureRevision { requested }
            } else {
                e
            }
        }
        _ => e,
    }
}

/// A page of objects read at one etcd revision.
#[derive(Debug, Clone)]
pub struct ObjectList<K: Resource> {
    pub items: Vec<Object<K>>,
    /// Keys whose values do not parse: reported, never fatal.
    pub invalid: Vec<InvalidEntry>,
    /// The etcd revision the list reflects; watch from `revision + 1`.
    pub revision: i64,
}

/// A key whose stored value could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidEntry {
    pub key: String,
    pub message: String,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome<K: Resource> {
    /// The keys are gone.
    Deleted,
    /// Finalizers remain: `deletionTimestamp` is set and the object waits for them.
    Terminating(Box<Object<K>>),
}

/// What an update did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome<K: Resource> {
    /// The new state, with its new resourceVersion.
    Updated(Box<Object<K>>),
    /// The update removed the last finalizer of a deleting object, so it is gone.
    Deleted,
}

impl<K: Resource> UpdateOutcome<K> {
    /// The updated object, `None` when it was deleted.
    pub fn into_object(self) -> Option<Object<K>> {
        match self {
            UpdateOutcome::Updated(o) => Some(*o),
            UpdateOutcome::Deleted => None,
        }
    }
}

/// Typed object store over etcd. Cheap to clone: clones share one connection.
///
/// Invariant: every write goes through [`Store::txn`] (or the group commit, which sends the
/// same way), so a handle made with [`Store::fenced`] fences each one on the leader's term.
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Arc<KeySpace>,
    timeout: Duration,
    endpoints: Arc<String>,
    /// Group commit of [`Store::write_if`], started on first use and shared by the clones.
    batcher: Arc<std::sync::OnceLock<batch::Batcher>>,
    /// The leader's term every write is fenced on; `None` writes unfenced (CLI, gateway).
    fence: Option<Arc<Fence>>,
}

const PAGE: i64 = 500;

impl Store {
    /// Connects and checks that etcd answers within the configured timeouts: an unreachable etcd
    /// is a clear error within seconds, never a hang.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let (client, timeout) = cfg.connect().await?;
        Ok(Store {
            client,
            keys: Arc::new(KeySpace::new(&cfg.prefix)),
            timeout,
            endpoints: Arc::new(cfg.endpoints.join(",")),
            batcher: Arc::default(),
            fence: None,
        })
    }

    /// This store with every write fenced on `fence` (see [`fence`]): what a leader gives the
    /// components that write as leader. Its clones share the fence; its group commit is its own.
    pub fn fenced(&self, fence: Arc<Fence>) -> Store {
        Store {
            fence: Some(fence),
            batcher: Arc::default(),
            ..self.clone()
        }
    }

    /// Sends a write transaction (fenced on this handle's term, if any) and reads its outcome;
    /// `op` and `key` name it in errors. Every write of the platform's own records kept beside
    /// the objects goes through here, so that a leader's are fenced too.
    ///
    /// A fenced handle sends from a task of its own: a write once sent is seen through to
    /// etcd's verdict even when the caller is dropped (a step-down abandons reconciles), so
    /// every late write the fence refused is counted and logged.
    pub async fn txn(
        &self,
        op: &'static str,
        key: &str,
        txn: Txn,
    ) -> Result<TxnOutcome, StoreError> {
        if self.fence.is_none() {
            return self.send(op, key, txn).await;
        }
        let store = self.clone();
        let owned = key.to_string();
        let task = tokio::spawn(async move { store.send(op, &owned, txn).await });
        task.await.unwrap_or_else(|e| {
            Err(StoreError::WriteTask {
                op,
                key: key.to_string(),
                message: e.to_string(),
            })
        })
    }

    /// Sends `txn`, nested under the fence when there is one.
    async fn send(&self, op: &'static str, key: &str, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut kv = self.client.kv_client();
        match &self.fence {
            None => Ok(TxnOutcome::of(self.call(op, key, kv.txn(txn)).await?)),
            Some(f) => {
                let resp = self.call(op, key, kv.txn(f.wrap(txn))).await?;
                f.open(op, key, resp)
            }
        }
    }

    /// The underlying etcd client (for leases, elections, raw access in benchmarks).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The key layout.
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// Puts `write.puts` if `write.key` meets its precondition, in one transaction with the
    /// other writes issued meanwhile (group commit: one round trip and one fsync for the lot;
    /// see [`batch`]). `Some(revision)` when applied, `None` when the precondition failed.
    pub async fn write_if(&self, write: CondWrite) -> WriteResult {
        let batcher = self.batcher.get_or_init(|| {
            // The task's own handle has no batcher, so dropping every clone ends it.
            batch::Batcher::start(Store {
                batcher: Arc::default(),
                ..self.clone()
            })
        });
        match batcher.submit(write).await {
            Ok(r) => r,
            Err(write) => batch::alone(self, &write).await,
        }
    }

    /// Checks that etcd answers (one count-only read of the root prefix, under the timeout).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let root = self.keys.root().to_string();
        let mut kv = self.client.kv_client();
        self.call(
            "ping",
            &root,
            kv.get(
                root.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Runs one etcd call under the request timeout, mapping errors to [`StoreError`] (`op` and
    /// `key` name it). Also for records kept beside the objects with the raw client.
    pub async fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(StoreError::Etcd {
                op,
                key: key.to_string(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout {
                op,
                key: key.to_string(),
                after: self.timeout,
            }),
        }
    }

    fn decode<K: Resource>(
        &self,
        kv: &KeyValue,
        status: Option<&KeyValue>,
    ) -> Result<(Object<K>, Option<InvalidEntry>), StoreError> {
        let etcd_key = String::from_utf8_lossy(kv.key()).into_owned();
        let prefix = self.keys.spec_prefix(K::PLURAL, None);
        let key = KeySpace::parse_key(&prefix, &etcd_key).ok_or_else(|| StoreError::Invalid {
            key: etcd_key.clone(),
            message: "key is not <prefix>/<kind>/<namespace>/<name>".into(),
        })?;
        let mut obj = codec::decode_spec::<K>(
            &etcd_key,
            &key,
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
        )?;
        let mut bad = None;
        if let Some(s) = status {
            let skey = String::from_utf8_lossy(s.key()).into_owned();
            match codec::decode_status::<K>(&skey, s.value()) {
                Ok(st) => obj.status = Some(st),
                Err(e) => {
                    tracing::warn!(key = %skey, error = %e, "ignoring unreadable status");
                    bad = Some(InvalidEntry {
                        key: skey,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok((obj, bad))
    }

    /// Reads one object with its status. A value that does not parse is [`StoreError::Invalid`]
    /// naming the key; an unreadable status is logged and left out.
    pub async fn get<K: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Object<K>, StoreError> {
        let key = ObjectKey::new(namespace, name);
        let spec_key = self.keys.spec_key::<K>(&key);
        let status_key = self.keys.status_key::<K>(&key);
        let txn = Txn::new().and_then([
            TxnOp::get(spec_key.clone(), None),
            TxnOp::get(status_key, None),
        ]);
        let mut kv = self.client.kv_client();
        let resp = self.call("get", &spec_key, kv.txn(txn)).await?;
        let mut spec = None;
        let mut status = None;
        for (i, r) in resp.op_responses().into_iter().enumerate() {
            if let etcd_client::TxnOpResponse::Get(g) = r {
                let first = g.kvs().first().cloned();
                if i == 0 { spec = first } else { status = first }
            }
        }
        let spec = spec.ok_or(StoreError::NotFound { kind: K::KIND, key })?;
        Ok(self.decode::<K>(&spec, status.as_ref())?.0)
    }

    /// Reads every key under `prefix` at one revision (the first page's, unless given), in pages.
    async fn range_all(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut rev = revision;
        let mut out = Vec::new();
        let mut kv = self.client.kv_client();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_sort(SortTarget::Key, SortOrder::Ascend);
            if rev > 0 {
                opts = opts.with_revision(rev);
            }
            let mut resp = self
                .call("list", prefix, kv.get(from.clone(), Some(opts)))
                .await?;
            if rev == 0 {
                rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((out, rev))
    }

    /// Lists the objects of a kind (optionally in one namespace) at one consistent revision.
    pub async fn list<K: Resource>(
        &self,
        namespace: Option<&str>,
    ) -> Result<ObjectList<K>, StoreError> {
        self.list_at(namespace, 0).await
    }

    /// [`Store::list`] as it was at etcd revision `revision` (0: the current one), so that a
    /// watch resumed from `revision + 1` continues it exactly. A revision below etcd's
    /// compaction is [`StoreError::Compacted`]; one beyond the current revision is
    /// [`StoreError::FutureRevision`].
    pub async fn list_at<K: Resource>(
        &self,
        namespace: Option<&str>,
        revision: i64,
    ) -> Result<ObjectList<K>, StoreError> {
        let (specs, rev) = self
            .range_all(&self.keys.spec_prefix(K::PLURAL, namespace), revision)
            .await
            .map_err(|e| historical_read_error(e, revision))?;
        let status_prefix = self.keys.status_prefix(K::PLURAL, namespace);
        let (statuses, _) = self
            .range_all(&status_prefix, rev)
            .await
            .map_err(|e| historical_read_error(e, rev))?;
        let spec_prefix = self.keys.spec_prefix(K::PLURAL, None);
        let status_root = self.keys.status_prefix(K::PLURAL, None);
        let mut status_by_key: std::collections::HashMap<ObjectKey, KeyValue> = statuses
            .into_iter()
            .filter_map(|kv| {
                let k = KeySpace::parse_key(&status_root, &String::from_utf8_lossy(kv.key()))?;
                Some((k, kv))
            })
            .collect();
        let mut items = Vec::with_capacity(specs.len());
        let mut invalid = Vec::new();
        for kv in &specs {
            let etcd_key = String::from_utf8_lossy(kv.key()).into_owned();
            let status =
                KeySpace::parse_key(&spec_prefix, &etcd_key).and_then(|k| status_by_key.remove(&k));
            match self.decode::<K>(kv, status.as_ref()) {
                Ok((obj, bad)) => {
                    items.push(obj);
                    invalid.extend(bad);
                }
                Err(e) => {
                    tracing::warn!(key = %etcd_key, error = %e, "skipping unreadable object");
                    invalid.push(InvalidEntry {
                        key: etcd_key,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(ObjectList {
            items,
            invalid,
            revision: rev,
        })
    }

    fn validate<K: Resource>(obj: &Object<K>) -> Result<(), StoreError> {
        obj.validate().map_err(|errors| StoreError::Validation {
            kind: K::KIND,
            key: obj.key(),
            errors,
        })
    }

    /// Creates an object; fails with `AlreadyExists` when the key is taken. Any stale status key
    /// (left by an `etcdctl del` of the spec) is cleared in the same transaction.
    pub async fn create<K: Resource>(&self, obj: &Object<K>) -> Result<Object<K>, StoreError> {
        self.create_inner(obj, None).await
    }

    /// Like [`Store::create`], with the spec key attached to etcd lease `lease`: the object
    /// disappears when the lease expires (events).
    pub async fn create_with_lease<K: Resource>(
        &self,
        obj: &Object<K>,
        lease: i64,
    ) -> Result<Object<K>, StoreError> {
        self.create_inner(obj, Some(lease)).await
    }

    async fn create_inner<K: Resource>(
        &self,
        obj: &Object<K>,
        lease: Option<i64>,
    ) -> Result<Object<K>, StoreError> {
        Self::validate(obj)?;
        let mut obj = obj.clone();
        obj.metadata.namespace = Some(obj.metadata.namespace().to_string());
        obj.metadata.creation_timestamp.get_or_insert_with(Utc::now);
        obj.metadata.deletion_timestamp = None;
        let key = obj.key();
        let spec_key = self.keys.spec_key::<K>(&key);
        let value = codec::encode_spec(&obj)?;
        let status_key = self.keys.status_key::<K>(&key);
        let put = TxnOp::put(
            spec_key.clone(),
            value,
            lease.map(|l| PutOptions::new().with_lease(l)),
        );
        let absent = |k: &str| Compare::create_revision(k.to_string(), CompareOp::Equal, 0);
        // Common case: neither key exists — a single put. A status left behind by an `etcdctl
        // del` of the spec makes the first compare fail; then a second transaction clears it.
        let txn = Txn::new()
            .when([absent(&spec_key), absent(&status_key)])
            .and_then([put.clone()]);
        let mut resp = self.txn("create", &spec_key, txn).await?;
        if !resp.succeeded {
            let txn = Txn::new()
                .when([absent(&spec_key)])
                .and_then([put, TxnOp::delete(status_key, None)]);
            resp = self.txn("create", &spec_key, txn).await?;
            if !resp.succeeded {
                return Err(StoreError::AlreadyExists { kind: K::KIND, key });
            }
        }
        let rev = resp.revision;
        obj.metadata.uid = Some(derive_uid(&spec_key, rev));
        obj.metadata.generation = Some(rev);
        obj.metadata.resource_version = Some(rev.to_string());
        obj.status = None;
        Ok(obj)
    }

    /// Replaces metadata and spec, if the stored object still has the `resourceVersion` the
    /// caller read (else `Conflict`). Removing the last finalizer of a deleting object deletes it.
    /// The status in `obj` is ignored: use [`Store::update_status`].
    pub async fn update<K: Resource>(
        &self,
        obj: &Object<K>,
    ) -> Result<UpdateOutcome<K>, StoreError> {
        // Keep whatever lease the key has (an event updated by a user must still expire).
        self.update_inner(obj, PutOptions::new().with_ignore_lease())
            .await
    }

    /// Like [`Store::update`], moving the spec key onto etcd lease `lease` (an aggregated event
    /// gets a fresh expiry).
    pub async fn update_with_lease<K: Resource>(
        &self,
        obj: &Object<K>,
        lease: i64,
    ) -> Result<UpdateOutcome<K>, StoreError> {
        self.update_inner(obj, PutOptions::new().with_lease(lease))
            .await
    }

    async fn update_inner<K: Resource>(
        &self,
        obj: &Object<K>,
        put: PutOptions,
    ) -> Result<UpdateOutcome<K>, StoreError> {
        let key = obj.key();
        let spec_key = self.keys.spec_key::<K>(&key);
        let expected = obj.metadata.resource_version.clone().unwrap_or_default();
        let rev: i64 = expected.parse().map_err(|_| StoreError::Conflict {
            kind: K::KIND,
            key: key.clone(),
            expected: expected.clone(),
        })?;
        let compare = Compare::mod_revision(spec_key.clone(), CompareOp::Equal, rev);
        if obj.is_deleting() && obj.metadata.finalizers.is_empty() {
            let txn = Txn::new().when([compare]).and_then([
                TxnOp::delete(spec_key.clone(), None),
                TxnOp::delete(self.keys.status_key::<K>(&key), None),
            ]);
            let resp = self.txn("delete", &spec_key, txn).await?;
            return if resp.succeeded {
                Ok(UpdateOutcome::Deleted)
            } else {
                Err(StoreError::Conflict {
                    kind: K::KIND,
                    key,
                    expected,
                })
            };
        }
        // A deleting object is only ever changed in its metadata (finalizers): its spec may be
        // invalid (edited by hand) and must not block cleanup.
        if !obj.is_deleting() {
            Self::validate(obj)?;
        }
        let value = codec::encode_spec(obj)?;
        let txn =
            Txn::new()
                .when([compare])
                .and_then([TxnOp::put(spec_key.clone(), value, Some(put))]);
        let resp = self.txn("update", &spec_key, txn).await?;
        if !resp.succeeded {
            return Err(StoreError::Conflict {
                kind: K::KIND,
                key,
                expected,
            });
        }
        let new_rev = resp.revision;
        let mut out = obj.clone();
        out.metadata.generation = Some(new_rev);
        out.metadata.resource_version = Some(new_rev.to_string());
        Ok(UpdateOutcome::Updated(Box::new(out)))
    }

    /// Writes the status of the incarnation of the object identified by its uid: a status never
    /// lands on an object that was deleted and recreated meanwhile (`NotFound`). Returns the
    /// revision of the write.
    pub async fn update_status<K: Resource>(
        &self,
        obj: &Object<K>,
        status: &K::Status,
    ) -> Result<i64, StoreError> {
        let key = obj.key();
        let spec_key = self.keys.spec_key::<K>(&key);
        let create_rev = obj
            .metadata
            .uid
            .as_deref()
            .and_then(create_revision_of_uid)
            .ok_or_else(|| StoreError::NotFound {
                kind: K::KIND,
                key: key.clone(),
            })?;
        let value = codec::encode_status::<K>(&key, status)?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                spec_key.clone(),
                CompareOp::Equal,
                create_rev,
            )])
            .and_then([TxnOp::put(self.keys.status_key::<K>(&key), value, None)]);
        let resp = self.txn("update status", &spec_key, txn).await?;
        if !resp.succeeded {
            return Err(StoreError::NotFound { kind: K::KIND, key });
        }
        Ok(resp.revision)
    }

    /// Deletes an object: removes its keys when it has no finalizers, else sets
    /// `deletionTimestamp` and leaves the finalizers' owners to clean up and release it.
    pub async fn delete<K: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<DeleteOutcome<K>, StoreError> {
        for _ in 0..10 {
            let mut obj = self.get::<K>(namespace, name).await?;
            if obj.is_deleting() && !obj.metadata.finalizers.is_empty() {
                return Ok(DeleteOutcome::Terminating(Box::new(obj)));
            }
            obj.metadata.deletion_timestamp = Some(Utc::now());
            match self.update(&obj).await {
                Ok(UpdateOutcome::Deleted) => return Ok(DeleteOutcome::Deleted),
                Ok(UpdateOutcome::Updated(o)) => return Ok(DeleteOutcome::Terminating(o)),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            kind: K::KIND,
            key: ObjectKey::new(namespace, name),
            expected: "(10 attempts)".into(),
        })
    }

    /// Watches a kind (optionally one namespace) from `from_revision` (inclusive).
    pub async fn watch<K: Resource>(
        &self,
        namespace: Option<&str>,
        from_revision: i64,
    ) -> Result<WatchStream<K>, StoreError> {
        WatchStream::start(self, namespace, from_revision).await
    }

    /// Removes the keys of every object of a kind (tests and `lambda down`).
    pub async fn purge_kind<K: Resource>(&self) -> Result<(), StoreError> {
        for p in [
            self.keys.spec_prefix(K::PLURAL, None),
            self.keys.status_prefix(K::PLURAL, None),
        ] {
            let opts = etcd_client::DeleteOptions::new().with_prefix();
            let txn = Txn::new().and_then([TxnOp::delete(p.clone(), Some(opts))]);
            self.txn("purge", &p, txn).await?;
        }
        Ok(())
    }

    /// The endpoints this store talks to, for messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }
}
