//! `lambda watch`: list, then stream every change of spec and status as table rows.
//! Survives etcd restarts (resumes from the last revision) and compaction (re-lists).

use std::time::Duration;

use anyhow::Result;

use crate::api::{Kind, ObjectKey, Resource};
use crate::store::{CacheChange, ObjectCache, Store, StoreError};

use super::GlobalArgs;
use super::output::{Printable, headers, row, table};

/// Calls `on_change` for every change of the kind's objects in `namespace` (all current objects
/// first), until it returns `false`. Resumes watches after errors; re-lists after compaction.
pub async fn follow<K: Resource>(
    store: &Store,
    namespace: Option<&str>,
    mut on_change: impl FnMut(&CacheChange<K>) -> bool,
) -> Result<()> {
    let mut cache = ObjectCache::<K>::new();
    let mut resume: Option<i64> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let from = match resume {
            Some(r) => r,
            None => {
                let list = match store.list::<K>(namespace).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("warning: {e}; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                let rev = list.revision;
                for change in cache.replace(list) {
                    if !on_change(&change) {
                        return Ok(());
                    }
                }
                rev + 1
            }
        };
        let mut stream = match store.watch::<K>(namespace, from).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("warning: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                resume = Some(from);
                continue;
            }
        };
        loop {
            match stream.next().await {
                Ok(ev) => {
                    delay = Duration::from_millis(100);
                    if let Some(change) = cache.apply(ev)
                        && !on_change(&change)
                    {
                        return Ok(());
                    }
                }
                Err(StoreError::Compacted { .. }) => {
                    resume = None;
                    break;
                }
                Err(e) => {
                    eprintln!("warning: {e}; resuming");
                    resume = Some(stream.resume_revision());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    break;
                }
            }
        }
    }
}

async fn watch_kind<K: Printable>(store: &Store, ns: &str, name: Option<&str>) -> Result<()> {
    let mut header = true;
    let key = name.map(|n| ObjectKey::new(ns, n));
    follow::<K>(store, Some(ns), |change| {
        if key.as_ref().is_some_and(|k| *k != change.key()) {
            return true;
        }
        let mut rows = Vec::new();
        if header {
            let mut h = vec!["EVENT".to_string()];
            h.extend(headers::<K>(false, false));
            rows.push(h);
            header = false;
        }
        match change {
            CacheChange::Applied(o) => {
                let mut r = vec!["APPLIED".to_string()];
                r.extend(row(o, false, false));
                rows.push(r);
            }
            CacheChange::Deleted(o) => {
                let mut r = vec!["DELETED".to_string()];
                r.extend(row(o, false, false));
                rows.push(r);
            }
            CacheChange::Invalid(k, e) => {
                eprintln!("warning: {k}: {}", e.message);
            }
        }
        if !rows.is_empty() {
            print!("{}", table(&rows));
        }
        true
    })
    .await
}

pub async fn run(g: &GlobalArgs, kind: Kind, name: Option<&str>) -> Result<()> {
    let store = g.store().await?;
    let fut =
        async { crate::with_kind!(kind, K, watch_kind::<K>(&store, &g.namespace(), name).await) };
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
