//! Group commit of independent conditional writes.
//!
//! Many small writes that each compare one key (create if absent, or update at a revision) are
//! combined into one etcd transaction: one raft entry, one fsync and one round trip for the
//! lot, instead of one each. Writers never wait for a batch to fill: a batch is whatever
//! arrived while the previous ones were in flight ([`MAX_IN_FLIGHT`] at a time), so an idle
//! store commits a lone write at once and a busy one commits dozens per round trip.
//!
//! Invariants: a write is applied exactly as if it had been sent alone (its precondition is
//! checked against the store's state, never weakened); a batch never holds two writes that
//! touch the same key (the later waits for the next batch), because etcd refuses a
//! transaction that puts one key twice; each write is a nested transaction of the batch with
//! its own comparison, so one whose precondition fails does not hold back the others.

use std::collections::HashSet;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Store, StoreError};

/// Writes combined into one transaction at most (etcd's default `--max-txn-ops` is 128 and
/// each write here is usually two puts).
const MAX_WRITES: usize = 48;
/// Operations (puts) in one transaction at most.
const MAX_OPS: usize = 128;
/// Bytes put in one transaction at most (etcd refuses requests over 1.5 MiB by default).
const MAX_BYTES: usize = 1024 * 1024;
/// Batches committed concurrently (more would only queue inside etcd).
const MAX_IN_FLIGHT: usize = 4;
/// Writes waiting for a batch at most (back-pressure on the writers beyond that).
const QUEUE: usize = 4096;

/// The condition a [`CondWrite`] needs on its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist.
    Absent,
    /// The key was last modified at this revision.
    AtRevision(i64),
}

/// Puts applied only if `key` meets `when`.
#[derive(Debug, Clone)]
pub struct CondWrite {
    /// The key compared.
    pub key: String,
    pub when: Precondition,
    /// Keys and values put when the precondition holds (`key` itself among them, usually).
    pub puts: Vec<(String, Vec<u8>)>,
}

impl CondWrite {
    fn compare(&self) -> Compare {
        match self.when {
            Precondition::Absent => Compare::create_revision(self.key.clone(), CompareOp::Equal, 0),
            Precondition::AtRevision(r) => {
                Compare::mod_revision(self.key.clone(), CompareOp::Equal, r)
            }
        }
    }

    /// This write alone: its comparison, then its puts.
    fn txn(&self) -> Txn {
        Txn::new().when([self.compare()]).and_then(
            self.puts
                .iter()
                .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
                .collect::<Vec<_>>(),
        )
    }

    fn bytes(&self) -> usize {
        self.puts.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.puts.iter().map(|(k, _)| k.as_str()))
    }
}

/// What a write got: `Some(revision)` when applied (the keys' new mod revision), `None` when
/// its precondition did not hold.
pub type WriteResult = Result<Option<i64>, StoreError>;

struct Pending {
    write: CondWrite,
    reply: oneshot::Sender<WriteResult>,
}

/// The handle writers send to; the committing task ends when every handle is dropped.
pub(super) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the committing task on the current runtime. `store` must not itself hold this
    /// batcher (the task would keep its own channel open).
    pub(super) fn start(store: Store) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Batcher { tx }
    }

    /// Queues `write` for the next batch and waits for its outcome; the write back when the
    /// task is gone (its runtime ended), for the caller to write alone.
    pub(super) async fn submit(&self, write: CondWrite) -> Result<WriteResult, CondWrite> {
        let (reply, rx) = oneshot::channel();
        let key = write.key.clone();
        if let Err(e) = self.tx.send(Pending { write, reply }).await {
            return Err(e.0.write);
        }
        Ok(rx.await.unwrap_or_else(|_| {
            Err(StoreError::Batch {
                key,
                message: "the committing task ended before the write's outcome was known".into(),
            })
        }))
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        // Waiting for a permit first lets writes pile up while every batch is in flight.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut keys: HashSet<String> = first.write.keys().map(str::to_string).collect();
        let mut ops = first.write.puts.len();
        let mut bytes = first.write.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES {
            let Ok(p) = rx.try_recv() else { break };
            let clash = p.write.keys().any(|k| keys.contains(k));
            if clash || ops + p.write.puts.len() > MAX_OPS || bytes + p.write.bytes() > MAX_BYTES {
                carry = Some(p);
                break;
            }
            keys.extend(p.write.keys().map(str::to_string));
            ops += p.write.puts.len();
            bytes += p.write.bytes();
            batch.push(p);
        }
        let store = store.clone();
        tokio::spawn(async move {
            commit(&store, batch).await;
            drop(permit);
        });
    }
}

/// Commits a batch as one transaction of nested transactions, one per write, so that each
/// write's precondition is evaluated on its own (a failing one does not hold back the others).
async fn commit(store: &Store, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for p in batch {
            let _ = p.reply.send(alone(store, &p.write).await);
        }
        return;
    }
    let txn = Txn::new().and_then(
        batch
            .iter()
            .map(|p| TxnOp::txn(p.write.txn()))
            .collect::<Vec<_>>(),
    );
    // Sent as one write of the store: a leader's batch is fenced as a whole.
    match store.send("batch", &batch[0].write.key, txn).await {
        Ok(resp) => {
            let revision = resp.revision;
            let nested = resp.responses;
            for (i, p) in batch.into_iter().enumerate() {
                let outcome = match nested.get(i) {
                    Some(TxnOpResponse::Txn(t)) => Ok(t.succeeded().then_some(revision)),
                    // etcd answers every nested transaction; anything else is not etcd's API.
                    _ => Err(StoreError::Batch {
                        key: p.write.key.clone(),
                        message: format!("etcd's answer lacks nested transaction {i}"),
                    }),
                };
                let _ = p.reply.send(outcome);
            }
        }
        // Fenced: every write of the batch was refused as such (counted once, as one write).
        Err(StoreError::Fenced {
            op,
            leader_key,
            revision,
            ..
        }) => {
            for p in batch {
                let _ = p.reply.send(Err(StoreError::Fenced {
                    op,
                    key: p.write.key.clone(),
                    leader_key: leader_key.clone(),
                    revision,
                }));
            }
        }
        // Not retried: the transaction may have been applied (a timeout), and each writer
        // handles an error as it would its own.
        Err(e) => {
            let message = e.to_string();
            for p in batch {
                let _ = p.reply.send(Err(StoreError::Batch {
                    key: p.write.key.clone(),
                    message: message.clone(),
                }));
            }
        }
    }
}

/// One conditional write in its own transaction.
pub(super) async fn alone(store: &Store, w: &CondWrite) -> WriteResult {
    let resp = store.send("write", &w.key, w.txn()).await?;
    Ok(resp.succeeded.then_some(resp.revision))
}
