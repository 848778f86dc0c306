//! Periodic passes beside a controller (orphan sweeps): the first once a cache is filled — a
//! cold cache looks like a world without objects, and a sweep must never act on that — then
//! every period until stopped.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ObjectKey, Resource};
use crate::store::Store;

use super::Cache;

/// Runs `pass` once `ready` resolves, then every `period`, until `stop`.
pub async fn every<F, Fut>(
    ready: impl Future<Output = ()>,
    period: Duration,
    stop: CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::select! {
        _ = ready => {}
        _ = stop.cancelled() => return,
    }
    loop {
        pass().await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// True when the incarnation `uid` of the `K` at `key` still exists: the cache first, then etcd
/// (the cache may lag behind an object created a moment ago). An unreadable object or an
/// unreachable etcd counts as alive: deleting what a live object owns is worse than a late
/// sweep.
pub async fn still_exists<K: Resource>(
    store: &Store,
    cache: &Cache<K>,
    key: &ObjectKey,
    uid: &str,
) -> bool {
    if cache
        .get(key)
        .is_some_and(|o| o.metadata.uid.as_deref() == Some(uid))
    {
        return true;
    }
    match store.get::<K>(&key.namespace, &key.name).await {
        Ok(o) => o.metadata.uid.as_deref() == Some(uid),
        Err(e) if e.is_not_found() => false,
        Err(e) => {
            tracing::warn!(kind = K::KIND, object = %key, error = %e,
                "sweep: cannot tell whether the object exists; keeping what it owns");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn waits_for_ready_then_runs_every_period_until_stopped() {
        let n = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let (n, stop) = (n.clone(), stop.clone());
            every(
                async move {
                    let _ = rx.await;
                },
                Duration::from_secs(10),
                stop,
                move || {
                    let n = n.clone();
                    async move {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                },
            )
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            n.load(Ordering::SeqCst),
            0,
            "ran before the cache was ready"
        );
        tx.send(()).ok();
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(n.load(Ordering::SeqCst), 3, "at 0, 10 and 20 s");
        stop.cancel();
        task.await.unwrap();
    }
}
