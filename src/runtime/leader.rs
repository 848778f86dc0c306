//! Leader election on an etcd lease: only the leader runs the controllers.
//!
//! Protocol: a candidate that sees no leader key grants a lease of `ttl` and creates the key in a
//! transaction (`create_revision == 0`) bound to that lease; it then keeps the lease alive every
//! `ttl / 4`. A standby watches the key and campaigns when it is deleted — which etcd does when
//! the leader's lease expires (crash) or is revoked (graceful stop) — so a takeover happens
//! within the TTL plus etcd's expiry check (~0.5 s).
//!
//! Safety: the leader records the time of its last successful keep-alive; when `2/3 × ttl` has
//! passed without one, it stops its controllers (and abandons runs still in flight by the
//! deadline) before etcd can expire the lease and let another process lead.
//!
//! Fencing: a process can be paused (SIGSTOP, a stalled VM) or cut off between deciding a write
//! and sending it, and wake up after its lease is gone. Each term therefore comes with a
//! [`Fence`] on the leader key's create revision, which the controllers write through
//! ([`Store::fenced`](crate::store::Store::fenced)): etcd itself refuses every write of a past
//! term, and the first refusal ends the term here at once. A leader key deleted by hand ends
//! the term the same way (its watch sees the delete).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::store::Fence;

/// Errors of one election step (logged; the elector retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("etcd {op} on leader key {key}: {source}")]
    Etcd {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op} on leader key {key} timed out")]
    Timeout { op: &'static str, key: String },
    #[error("watch of leader key {key} ended")]
    WatchEnded { key: String },
}

/// Settings of an election.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The etcd key holding the leader's identity, e.g. `/lambda/leader/controller`.
    pub key: String,
    /// This process' identity (host and pid).
    pub identity: String,
    /// Lease TTL: a dead leader is replaced within it (+ ~0.5 s).
    pub ttl: Duration,
    /// Deadline of each etcd request.
    pub request_timeout: Duration,
}

impl LeaderConfig {
    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(2) as i64
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs() as u64)
    }

    /// Time without a successful keep-alive after which the leader steps down.
    pub fn step_down_after(&self) -> Duration {
        self.ttl() * 2 / 3
    }
}

async fn timed<T>(
    cfg: &LeaderConfig,
    op: &'static str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, LeaderError> {
    match tokio::time::timeout(cfg.request_timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(LeaderError::Etcd {
            op,
            key: cfg.key.clone(),
            source,
        }),
        Err(_) => Err(LeaderError::Timeout {
            op,
            key: cfg.key.clone(),
        }),
    }
}

/// A won election: the lease kept alive and the revision the leader key was created at.
#[derive(Debug, Clone, Copy)]
struct Won {
    lease: i64,
    revision: i64,
}

/// Tries once to become leader. `Ok(Ok(won))` when this process now leads; `Ok(Err(rev))` with
/// the revision to watch from when another process leads.
async fn campaign(client: &Client, cfg: &LeaderConfig) -> Result<Result<Won, i64>, LeaderError> {
    let mut kv = client.kv_client();
    let current = timed(cfg, "get", kv.get(cfg.key.clone(), None)).await?;
    let rev = current.header().map(|h| h.revision()).unwrap_or(0);
    if !current.kvs().is_empty() {
        return Ok(Err(rev));
    }
    let mut lease = client.lease_client();
    let grant = timed(cfg, "lease grant", lease.grant(cfg.ttl_secs(), None)).await?;
    let id = grant.id();
    let txn = Txn::new()
        .when([Compare::create_revision(
            cfg.key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            cfg.key.clone(),
            cfg.identity.clone(),
            Some(PutOptions::new().with_lease(id)),
        )]);
    let resp = timed(cfg, "campaign", kv.txn(txn)).await?;
    if resp.succeeded() {
        // The put is the transaction's only write: its revision is the key's create revision.
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(Ok(Won {
            lease: id,
            revision,
        }))
    } else {
        // Lost the race: give the unused lease back now rather than at its expiry.
        let _ = timed(cfg, "lease revoke", lease.revoke(id)).await;
        Ok(Err(resp.header().map(|h| h.revision()).unwrap_or(rev)))
    }
}

/// Waits until the leader key is deleted (after `rev`), or `stop`.
async fn await_vacancy(
    client: &Client,
    cfg: &LeaderConfig,
    rev: i64,
    stop: &CancellationToken,
) -> Result<(), LeaderError> {
    let mut w = client.watch_client();
    let opts = WatchOptions::new().with_start_revision(rev + 1);
    let mut stream = timed(cfg, "watch", w.watch(cfg.key.clone(), Some(opts))).await?;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = stop.cancelled() => return Ok(()),
        };
        let msg = msg.map_err(|source| LeaderError::Etcd {
            op: "watch",
            key: cfg.key.clone(),
            source,
        })?;
        let Some(resp) = msg else {
            return Err(LeaderError::WatchEnded {
                key: cfg.key.clone(),
            });
        };
        if resp.canceled() {
            return Err(LeaderError::WatchEnded {
                key: cfg.key.clone(),
            });
        }
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
}

/// Keeps lease `id` alive until it is lost; returns the instant by which this process must have
/// stopped acting as leader (last successful keep-alive + TTL, minus a safety margin).
async fn keep_leading(client: &Client, cfg: &LeaderConfig, id: i64) -> Instant {
    let ttl = cfg.ttl();
    let mut last_ok = Instant::now();
    let mut keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> = None;
    let mut tick = tokio::time::interval(ttl / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Step down on time even when a keep-alive hangs.
            _ = tokio::time::sleep_until(last_ok + cfg.step_down_after()) => {
                tracing::warn!(key = %cfg.key, "no lease keep-alive for {:?}; stepping down", cfg.step_down_after());
                return last_ok + ttl;
            }
        }
        let attempt = async {
            if keeper.is_none() {
                keeper = Some(client.lease_client().keep_alive(id).await?);
            }
            let Some((k, s)) = keeper.as_mut() else {
                return Ok(None);
            };
            k.keep_alive().await?;
            Ok::<_, etcd_client::Error>(s.message().await?.map(|r| r.ttl()))
        };
        let deadline = last_ok + cfg.step_down_after();
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(Some(ttl_left))) if ttl_left > 0 => last_ok = Instant::now(),
            Ok(Ok(_)) => {
                tracing::warn!(key = %cfg.key, "leader lease expired; stepping down");
                return Instant::now();
            }
            Ok(Err(e)) => {
                tracing::warn!(key = %cfg.key, error = %e, "lease keep-alive failed");
                keeper = None;
            }
            Err(_) => {
                tracing::warn!(key = %cfg.key, "lease keep-alive timed out; stepping down");
                return last_ok + ttl;
            }
        }
    }
}

/// One term of leadership, as the elector hands it to the work it runs.
pub struct Term {
    /// Cancelled when the term ends (leadership lost, or the process stopping).
    pub stop: CancellationToken,
    /// This term's fence: whatever writes as leader writes through
    /// [`Store::fenced`](crate::store::Store::fenced) with it.
    pub fence: Arc<Fence>,
}

/// Watches the leader key while this process leads with the key created at `revision`; cancels
/// `lost` once the key is gone or another's. Re-reads the key and watches again after errors
/// (etcd restarting, history compacted) until `end`.
async fn watch_own_key(
    client: &Client,
    cfg: &LeaderConfig,
    revision: i64,
    lost: &CancellationToken,
    end: &CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    let mut kv = client.kv_client();
    while !end.is_cancelled() {
        let watched = async {
            let now = timed(cfg, "get", kv.get(cfg.key.clone(), None)).await?;
            if now.kvs().first().map(|k| k.create_revision()) != Some(revision) {
                return Ok(());
            }
            let from = now.header().map(|h| h.revision()).unwrap_or(revision);
            await_vacancy(client, cfg, from, end).await
        };
        match watched.await {
            Ok(()) if end.is_cancelled() => return,
            Ok(()) => {
                tracing::warn!(key = %cfg.key, "the leader key is gone; stepping down");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "watching the leader key; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = end.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Campaigns until `stop`; while leading, runs `lead(term)`. `term.stop` is cancelled when
/// leadership is lost or `stop` is cancelled; `lead` must then return promptly (in-flight work
/// finishes). On loss, `lead` is dropped at the lease deadline if still running — at once when
/// the fence refused a write or the leader key was deleted (another process may lead already).
/// On `stop`, the lease is revoked after `lead` returns so a standby takes over at once.
pub async fn run_elected<F, Fut>(
    client: Client,
    cfg: LeaderConfig,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
    mut lead: F,
) where
    F: FnMut(Term) -> Fut,
    Fut: Future<Output = ()>,
{
    let set_leader = |v: i64| {
        if let Some(m) = &metrics {
            m.leader.set(v);
        }
    };
    let builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let mut backoff = builder.build();
    while !stop.is_cancelled() {
        let step = async {
            match campaign(&client, &cfg).await? {
                Ok(id) => Ok(Some(id)),
                Err(rev) => {
                    tracing::debug!(key = %cfg.key, "another process leads; standing by");
                    await_vacancy(&client, &cfg, rev, &stop).await?;
                    Ok::<_, LeaderError>(None)
                }
            }
        };
        let won = match step.await {
            Ok(Some(won)) => won,
            Ok(None) => {
                backoff = builder.build();
                continue;
            }
            Err(e) => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?d, "leader election");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
        };
        backoff = builder.build();
        let lease = won.lease;
        tracing::info!(
            key = %cfg.key, identity = %cfg.identity, lease, term = won.revision,
            "became leader"
        );
        set_leader(1);
        let mut fence = Fence::new(cfg.key.clone(), won.revision);
        if let Some(m) = &metrics {
            fence = fence.counting(m.fenced_writes.clone());
        }
        let fence = Arc::new(fence);
        // Cancelled by a fenced write or the leader key's deletion: the term is over for sure.
        let fenced = fence.lost().clone();
        let term = CancellationToken::new();
        let work = lead(Term {
            stop: term.clone(),
            fence,
        });
        futures::pin_mut!(work);
        // The lease is kept alive for as long as `work` runs, including while it drains.
        let keep = keep_leading(&client, &cfg, lease);
        futures::pin_mut!(keep);
        let watched = CancellationToken::new();
        let watch = watch_own_key(&client, &cfg, won.revision, &fenced, &watched);
        futures::pin_mut!(watch);
        // Stop acting before the lease can pass to another process.
        let margin = Duration::from_millis(200);
        let finish_by = |deadline: Instant| deadline.checked_sub(margin).unwrap_or(deadline);
        enum End {
            Returned,
            Stop,
            Lost(Instant),
        }
        let end = tokio::select! {
            _ = &mut work => End::Returned,
            _ = stop.cancelled() => End::Stop,
            deadline = &mut keep => End::Lost(deadline),
            _ = fenced.cancelled() => End::Lost(Instant::now()),
            // Ends only when it cancelled `fenced` (or was told to): the arm above decides.
            _ = &mut watch => End::Lost(Instant::now()),
        };
        let lost = match end {
            End::Returned => false,
            End::Stop => {
                term.cancel();
                tokio::select! {
                    _ = &mut work => false,
                    deadline = &mut keep => {
                        if tokio::time::timeout_at(finish_by(deadline), &mut work).await.is_err() {
                            tracing::warn!("abandoning reconciles still running at the lease deadline");
                        }
                        true
                    }
                    _ = fenced.cancelled() => {
                        tracing::warn!("abandoning reconciles still running: fenced");
                        true
                    }
                }
            }
            End::Lost(deadline) => {
                term.cancel();
                if tokio::time::timeout_at(finish_by(deadline), &mut work)
                    .await
                    .is_err()
                {
                    tracing::warn!("abandoning reconciles still running at the lease deadline");
                }
                true
            }
        };
        watched.cancel();
        set_leader(0);
        if lost {
            tracing::warn!(key = %cfg.key, "lost leadership");
            if fenced.is_cancelled() {
                // The lease may still be alive (its key deleted by hand): it guards nothing now.
                let mut l = client.lease_client();
                let _ = timed(&cfg, "lease revoke", l.revoke(lease)).await;
            }
        } else {
            // Give the lease back so a standby takes over at once.
            let mut l = client.lease_client();
            match timed(&cfg, "lease revoke", l.revoke(lease)).await {
                Ok(_) => tracing::info!(key = %cfg.key, "released leadership"),
                Err(e) => tracing::warn!(error = %e, "releasing the leader lease"),
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}
