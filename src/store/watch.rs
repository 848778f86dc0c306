//! Watching a kind: one etcd watch stream carrying two watchers (spec keys and status keys),
//! decoded into typed events, and [`ObjectCache`], which merges them back into whole objects.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use etcd_client::{EventType, WatchOptions, WatchResponse};

use crate::api::{Object, ObjectKey, Resource};

use super::keys::KeySpace;
use super::{InvalidEntry, ObjectList, Store, StoreError, codec};

const SPEC_WATCH: i64 = 1;
const STATUS_WATCH: i64 = 2;

/// A typed change of one kind's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K: Resource> {
    /// A spec key was written: the object's metadata and spec (no status).
    Spec(Object<K>),
    /// A spec key was deleted: the object is gone.
    SpecDeleted(ObjectKey),
    /// A status key was written.
    Status(ObjectKey, K::Status),
    /// A status key was deleted.
    StatusDeleted(ObjectKey),
    /// A key was written with a value that does not decode.
    Invalid(Option<ObjectKey>, InvalidEntry),
    /// Every change up to this revision has been delivered (an etcd progress notification).
    Progress(i64),
}

/// A live watch of one kind. Resume after an error with [`WatchStream::resume_revision`].
pub struct WatchStream<K: Resource> {
    stream: etcd_client::WatchStream,
    spec_prefix: String,
    status_prefix: String,
    spec_root: String,
    status_root: String,
    spec_rev: i64,
    status_rev: i64,
    created: u8,
    buffer: VecDeque<WatchEvent<K>>,
}

impl<K: Resource> WatchStream<K> {
    pub(super) async fn start(
        store: &Store,
        namespace: Option<&str>,
        from: i64,
    ) -> Result<Self, StoreError> {
        let keys = store.keys();
        let spec_prefix = keys.spec_prefix(K::PLURAL, namespace);
        let status_prefix = keys.status_prefix(K::PLURAL, namespace);
        let opts = |id| {
            let mut o = WatchOptions::new()
                .with_prefix()
                .with_progress_notify()
                .with_watch_id(id);
            if from > 0 {
                o = o.with_start_revision(from);
            }
            o
        };
        let mut client = store.client().watch_client();
        let mut stream = store
            .call(
                "watch",
                &spec_prefix,
                client.watch(spec_prefix.clone(), Some(opts(SPEC_WATCH))),
            )
            .await?;
        store
            .call(
                "watch",
                &status_prefix,
                stream.watch(status_prefix.clone(), Some(opts(STATUS_WATCH))),
            )
            .await?;
        Ok(WatchStream {
            stream,
            spec_root: keys.spec_prefix(K::PLURAL, None),
            status_root: keys.status_prefix(K::PLURAL, None),
            spec_prefix,
            status_prefix,
            spec_rev: from - 1,
            status_rev: from - 1,
            created: 0,
            buffer: VecDeque::new(),
        })
    }

    /// The revision to pass to a new watch after this one fails: everything before it was
    /// delivered by both watchers.
    pub fn resume_revision(&self) -> i64 {
        self.spec_rev.min(self.status_rev) + 1
    }

    /// Asks etcd for a progress notification (answered once both watchers are caught up).
    pub async fn request_progress(&mut self) -> Result<(), StoreError> {
        self.stream
            .request_progress()
            .await
            .map_err(|source| StoreError::Etcd {
                op: "watch progress",
                key: self.spec_prefix.clone(),
                source,
            })
    }

    /// The next event. An error ends the stream: compaction (`Compacted`, re-list), a broken
    /// connection (`Etcd`) or a closed stream (`WatchEnded`) — resume from `resume_revision`.
    pub async fn next(&mut self) -> Result<WatchEvent<K>, StoreError> {
        loop {
            if let Some(ev) = self.buffer.pop_front() {
                return Ok(ev);
            }
            let msg = self
                .stream
                .message()
                .await
                .map_err(|source| StoreError::Etcd {
                    op: "watch",
                    key: self.spec_prefix.clone(),
                    source,
                })?;
            let Some(resp) = msg else {
                return Err(StoreError::WatchEnded {
                    prefix: self.spec_prefix.clone(),
                    message: "stream closed by etcd".into(),
                });
            };
            self.absorb(resp)?;
        }
    }

    fn absorb(&mut self, resp: WatchResponse) -> Result<(), StoreError> {
        if resp.canceled() {
            let requested = self.resume_revision();
            if resp.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    requested,
                    compact_revision: resp.compact_revision(),
                });
            }
            return Err(StoreError::WatchEnded {
                prefix: self.spec_prefix.clone(),
                message: format!("canceled by etcd: {}", resp.cancel_reason()),
            });
        }
        if resp.created() {
            self.created += 1;
            return Ok(());
        }
        let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let id = resp.watch_id();
        if resp.events().is_empty() {
            // Progress: watch_id -1 answers request_progress for the whole stream.
            match id {
                SPEC_WATCH => self.spec_rev = self.spec_rev.max(header_rev),
                STATUS_WATCH => self.status_rev = self.status_rev.max(header_rev),
                _ => {
                    self.spec_rev = self.spec_rev.max(header_rev);
                    self.status_rev = self.status_rev.max(header_rev);
                }
            }
            self.buffer
                .push_back(WatchEvent::Progress(self.resume_revision() - 1));
            return Ok(());
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let etcd_key = String::from_utf8_lossy(kv.key()).into_owned();
            let rev = kv.mod_revision();
            let is_spec = id == SPEC_WATCH;
            if is_spec {
                self.spec_rev = self.spec_rev.max(rev);
            } else {
                self.status_rev = self.status_rev.max(rev);
            }
            let root = if is_spec {
                &self.spec_root
            } else {
                &self.status_root
            };
            let Some(key) = KeySpace::parse_key(root, &etcd_key) else {
                self.buffer.push_back(WatchEvent::Invalid(
                    None,
                    InvalidEntry {
                        key: etcd_key,
                        message: "key is not <prefix>/<kind>/<namespace>/<name>".into(),
                    },
                ));
                continue;
            };
            let event = match (is_spec, ev.event_type()) {
                (true, EventType::Delete) => WatchEvent::SpecDeleted(key),
                (false, EventType::Delete) => WatchEvent::StatusDeleted(key),
                (true, EventType::Put) => {
                    match codec::decode_spec::<K>(
                        &etcd_key,
                        &key,
                        kv.value(),
                        kv.create_revision(),
                        rev,
                    ) {
                        Ok(obj) => WatchEvent::Spec(obj),
                        Err(e) => invalid(key, etcd_key, e),
                    }
                }
                (false, EventType::Put) => match codec::decode_status::<K>(&etcd_key, kv.value()) {
                    Ok(st) => WatchEvent::Status(key, st),
                    Err(e) => invalid(key, etcd_key, e),
                },
            };
            self.buffer.push_back(event);
        }
        Ok(())
    }

    /// Events received from etcd and not yet returned by [`WatchStream::next`]. While it is 0,
    /// `resume_revision() - 1` is a revision up to which every change was returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The status prefix watched (for messages).
    pub fn status_prefix(&self) -> &str {
        &self.status_prefix
    }

    /// True once etcd confirmed both watchers.
    pub fn is_created(&self) -> bool {
        self.created >= 2
    }
}

fn invalid<K: Resource>(key: ObjectKey, etcd_key: String, e: StoreError) -> WatchEvent<K> {
    tracing::warn!(key = %etcd_key, error = %e, "unreadable value in watch");
    WatchEvent::Invalid(
        Some(key),
        InvalidEntry {
            key: etcd_key,
            message: e.to_string(),
        },
    )
}

/// A change of a whole object, as seen by [`ObjectCache`].
#[derive(Debug, Clone)]
pub enum CacheChange<K: Resource> {
    /// Created or changed (spec, metadata or status).
    Applied(Arc<Object<K>>),
    /// Gone; the last known state.
    Deleted(Arc<Object<K>>),
    /// A key of this object now holds a value that does not decode; the last good state stays.
    Invalid(ObjectKey, InvalidEntry),
}

impl<K: Resource> CacheChange<K> {
    /// The object key the change is about.
    pub fn key(&self) -> ObjectKey {
        match self {
            CacheChange::Applied(o) | CacheChange::Deleted(o) => o.key(),
            CacheChange::Invalid(k, _) => k.clone(),
        }
    }
}

/// Whole objects rebuilt from spec and status events. An unreadable value keeps the last good
/// state (a typo in a hand edit must not look like a deletion and tear down a function's VMs).
pub struct ObjectCache<K: Resource> {
    objects: HashMap<ObjectKey, Arc<Object<K>>>,
    /// Status seen before its spec (possible across two watchers): applied when the spec comes.
    pending_status: HashMap<ObjectKey, K::Status>,
}

impl<K: Resource> Default for ObjectCache<K> {
    fn default() -> Self {
        ObjectCache {
            objects: HashMap::new(),
            pending_status: HashMap::new(),
        }
    }
}

impl<K: Resource> ObjectCache<K> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Object<K>>> {
        self.objects.get(key).cloned()
    }

    /// Every cached object.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Object<K>>> {
        self.objects.values()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Applies one watch event; returns the resulting change of a whole object, if any.
    pub fn apply(&mut self, event: WatchEvent<K>) -> Option<CacheChange<K>> {
        match event {
            WatchEvent::Spec(mut obj) => {
                let key = obj.key();
                obj.status = match self.objects.get(&key) {
                    // Same incarnation keeps its status; a recreated object starts without.
                    Some(old) if old.metadata.uid == obj.metadata.uid => old.status.clone(),
                    _ => self.pending_status.remove(&key),
                };
                let arc = Arc::new(obj);
                self.objects.insert(key, arc.clone());
                Some(CacheChange::Applied(arc))
            }
            WatchEvent::SpecDeleted(key) => {
                self.pending_status.remove(&key);
                self.objects.remove(&key).map(CacheChange::Deleted)
            }
            WatchEvent::Status(key, status) => self.set_status(key, Some(status)),
            WatchEvent::StatusDeleted(key) => self.set_status(key, None),
            WatchEvent::Invalid(Some(key), entry) => Some(CacheChange::Invalid(key, entry)),
            WatchEvent::Invalid(None, _) | WatchEvent::Progress(_) => None,
        }
    }

    fn set_status(&mut self, key: ObjectKey, status: Option<K::Status>) -> Option<CacheChange<K>> {
        match self.objects.get(&key) {
            Some(old) => {
                if old.status == status {
                    return None;
                }
                let mut obj = (**old).clone();
                obj.status = status;
                let arc = Arc::new(obj);
                self.objects.insert(key, arc.clone());
                Some(CacheChange::Applied(arc))
            }
            None => {
                match status {
                    Some(s) => self.pending_status.insert(key, s),
                    None => self.pending_status.remove(&key),
                };
                None
            }
        }
    }

    /// Replaces the contents with a fresh list; returns the changes against the old contents
    /// (objects gone since, and every listed object whose state differs).
    pub fn replace(&mut self, list: ObjectList<K>) -> Vec<CacheChange<K>> {
        let mut fresh: HashMap<ObjectKey, Arc<Object<K>>> =
            HashMap::with_capacity(list.items.len());
        let mut changes = Vec::new();
        for obj in list.items {
            let key = obj.key();
            let changed = self.objects.get(&key).is_none_or(|old| **old != obj);
            let arc = if changed {
                let a = Arc::new(obj);
                changes.push(CacheChange::Applied(a.clone()));
                a
            } else {
                self.objects[&key].clone()
            };
            fresh.insert(key, arc);
        }
        for (key, old) in self.objects.drain() {
            if !fresh.contains_key(&key) {
                changes.push(CacheChange::Deleted(old));
            }
        }
        self.objects = fresh;
        self.pending_status.clear();
        changes
    }
}
