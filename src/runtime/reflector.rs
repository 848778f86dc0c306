//! The reflector cache: an in-memory copy of one kind's objects, fed by a watcher, shared as
//! `Arc` objects, with lookups by label and by owner.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use tokio::sync::watch;

use crate::api::{Object, ObjectKey, Resource};
use crate::store::{CacheChange, ObjectCache};

use super::watcher::WatcherEvent;

struct Inner<K: Resource> {
    objects: ObjectCache<K>,
    /// owner uid → keys of the objects that name it in `ownerReferences`.
    by_owner: HashMap<String, HashSet<ObjectKey>>,
    /// key → the owner uids it is indexed under (to unindex without the old object).
    owners_of: HashMap<ObjectKey, Vec<String>>,
}

impl<K: Resource> Inner<K> {
    /// Re-indexes `key` by the owners of its current object (none when it is gone).
    fn reindex(&mut self, key: &ObjectKey) {
        for uid in self.owners_of.remove(key).unwrap_or_default() {
            if let Some(set) = self.by_owner.get_mut(&uid) {
                set.remove(key);
                if set.is_empty() {
                    self.by_owner.remove(&uid);
                }
            }
        }
        let Some(obj) = self.objects.get(key) else {
            return;
        };
        let uids: Vec<String> = obj
            .metadata
            .owner_references
            .iter()
            .map(|o| o.uid.clone())
            .collect();
        for uid in &uids {
            self.by_owner
                .entry(uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if !uids.is_empty() {
            self.owners_of.insert(key.clone(), uids);
        }
    }
}

/// A shared, read-mostly cache of one kind. Cheap to clone; clones see the same contents.
///
/// Invariants: it is written by exactly one watcher (the controller that was given it); it is
/// *ready* once the first complete list has been applied and stays ready across re-lists;
/// objects are never mutated in place (a change replaces the `Arc`).
pub struct Cache<K: Resource> {
    inner: Arc<RwLock<Inner<K>>>,
    ready: Arc<watch::Sender<bool>>,
}

impl<K: Resource> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Resource> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            inner: Arc::new(RwLock::new(Inner {
                objects: ObjectCache::new(),
                by_owner: HashMap::new(),
                owners_of: HashMap::new(),
            })),
            ready: Arc::new(watch::channel(false).0),
        }
    }
}

impl<K: Resource> Cache<K> {
    /// An empty cache, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // more than stopping everything, so a poisoned lock is simply taken over.
    fn read(&self) -> RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Object<K>>> {
        self.read().objects.get(key)
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<Object<K>>> {
        self.read().objects.iter().cloned().collect()
    }

    /// Every object's key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.read().objects.iter().map(|o| o.key()).collect()
    }

    /// Objects carrying label `key=value`.
    pub fn by_label(&self, key: &str, value: &str) -> Vec<Arc<Object<K>>> {
        self.read()
            .objects
            .iter()
            .filter(|o| o.metadata.labels.get(key).is_some_and(|v| v == value))
            .cloned()
            .collect()
    }

    /// Objects whose `ownerReferences` name the owner with this uid (indexed).
    pub fn by_owner(&self, owner_uid: &str) -> Vec<Arc<Object<K>>> {
        let g = self.read();
        g.by_owner
            .get(owner_uid)
            .map(|keys| keys.iter().filter_map(|k| g.objects.get(k)).collect())
            .unwrap_or_default()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the first complete list was applied.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the cache is ready.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we hold it.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Applies one watcher event; returns the changes of whole objects it caused.
    pub fn apply(&self, ev: WatcherEvent<K>) -> Vec<CacheChange<K>> {
        let mut g = self.write();
        match ev {
            WatcherEvent::Listed(list) => {
                let changes = g.objects.replace(list);
                let keys: Vec<_> = g.objects.iter().map(|o| o.key()).collect();
                g.by_owner.clear();
                g.owners_of.clear();
                for k in &keys {
                    g.reindex(k);
                }
                drop(g);
                self.ready.send_replace(true);
                changes
            }
            WatcherEvent::Event(ev) => {
                let change = g.objects.apply(ev);
                if let Some(c) = &change {
                    g.reindex(&c.key());
                }
                change.into_iter().collect()
            }
        }
    }

    /// Feeds the cache from a watcher until the stream ends, calling `on_change` for each change.
    pub async fn run(
        &self,
        stream: impl Stream<Item = WatcherEvent<K>>,
        mut on_change: impl FnMut(&CacheChange<K>),
    ) {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            for c in self.apply(ev) {
                on_change(&c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NodeSpec, OwnerReference};
    use crate::store::{ObjectList, WatchEvent};

    fn node(name: &str, owner: Option<&str>, label: Option<&str>) -> Object<NodeSpec> {
        let spec = NodeSpec {
            pool: "p".into(),
            image: "i".into(),
            flavor: "f".into(),
            network: None,
            key_pair: None,
            security_groups: vec![],
            availability_zone: None,
        };
        let mut o = Object::new("default", name, spec);
        o.metadata.uid = Some(format!("uid-{name}"));
        if let Some(u) = owner {
            o.metadata.owner_references.push(OwnerReference {
                api_version: "lambda/v1alpha1".into(),
                kind: "NodePool".into(),
                name: "p".into(),
                uid: u.into(),
                controller: Some(true),
            });
        }
        if let Some(l) = label {
            o.metadata.labels.insert("tier".into(), l.into());
        }
        o
    }

    #[test]
    fn lookups_by_owner_and_label_follow_changes() {
        let c = Cache::<NodeSpec>::new();
        assert!(!c.is_ready());
        c.apply(WatcherEvent::Listed(ObjectList {
            items: vec![
                node("a", Some("p1"), Some("x")),
                node("b", Some("p1"), None),
            ],
            invalid: vec![],
            revision: 5,
        }));
        assert!(c.is_ready());
        assert_eq!(c.by_owner("p1").len(), 2);
        assert_eq!(c.by_label("tier", "x").len(), 1);
        // "a" moves to another owner; "b" goes.
        c.apply(WatcherEvent::Event(WatchEvent::Spec(node(
            "a",
            Some("p2"),
            None,
        ))));
        c.apply(WatcherEvent::Event(WatchEvent::SpecDeleted(
            ObjectKey::new("default", "b"),
        )));
        assert!(c.by_owner("p1").is_empty());
        assert_eq!(c.by_owner("p2").len(), 1);
        assert!(c.by_label("tier", "x").is_empty());
        assert_eq!(c.len(), 1);
    }
}
