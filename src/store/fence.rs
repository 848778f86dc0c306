//! Write fencing: the leader's writes apply only while it still leads.
//!
//! Leader election (`runtime::leader`) creates the leader key in a transaction with
//! `create_revision == 0`, so the key's create revision names one term of one process. A
//! [`Store`](super::Store) handle made with [`Store::fenced`](super::Store::fenced) sends every
//! write as a transaction guarded by `create_revision(leader key) == the term's revision`
//! around the write's own transaction: once the key expired (the lease ran out while this
//! process was paused or cut off), was deleted or belongs to another term, every late write of
//! the old term fails in etcd itself, whatever it compared on its own. Reads are not fenced.
//!
//! A fenced write is reported as [`StoreError::Fenced`] — never a conflict to retry — counts in
//! the fence's metric and cancels [`Fence::lost`], which the elector takes as the end of the
//! term: the controllers stop at once.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use super::StoreError;

/// One term of leadership that writes are fenced on.
#[derive(Debug)]
pub struct Fence {
    key: String,
    revision: i64,
    lost: CancellationToken,
    rejected: Counter,
}

impl Fence {
    /// The term whose leader key `key` was created at `revision`.
    pub fn new(key: impl Into<String>, revision: i64) -> Fence {
        Fence {
            key: key.into(),
            revision,
            lost: CancellationToken::new(),
            rejected: Counter::default(),
        }
    }

    /// Counts rejected writes in `counter` too (a process-wide metric shared by its terms).
    pub fn counting(mut self, counter: Counter) -> Fence {
        self.rejected = counter;
        self
    }

    /// The leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The leader key's create revision in this term.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Cancelled when a write was fenced: this process no longer leads.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Writes rejected by the fence so far (of every term counting into the same metric).
    pub fn rejected(&self) -> u64 {
        self.rejected.get()
    }

    /// The guard: the leader key still has the term's create revision (a missing key has 0).
    fn compare(&self) -> Compare {
        Compare::create_revision(self.key.clone(), CompareOp::Equal, self.revision)
    }

    /// `txn` nested under the guard: applied as it would be alone, but only within the term.
    pub(super) fn wrap(&self, txn: Txn) -> Txn {
        Txn::new()
            .when([self.compare()])
            .and_then([TxnOp::txn(txn)])
    }

    /// The error of a write the guard refused; counts it and ends the term.
    pub(super) fn reject(&self, op: &'static str, key: &str) -> StoreError {
        self.rejected.inc();
        self.lost.cancel();
        tracing::warn!(
            op, key, leader_key = %self.key, term = self.revision,
            "write fenced: this process no longer holds the leadership it won"
        );
        StoreError::Fenced {
            op,
            key: key.to_string(),
            leader_key: self.key.clone(),
            revision: self.revision,
        }
    }

    /// Reads etcd's answer to [`Fence::wrap`]: the nested transaction's outcome, or
    /// [`StoreError::Fenced`] when the guard failed.
    pub(super) fn open(
        &self,
        op: &'static str,
        key: &str,
        resp: TxnResponse,
    ) -> Result<TxnOutcome, StoreError> {
        if !resp.succeeded() {
            return Err(self.reject(op, key));
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Txn(inner)) => Ok(TxnOutcome {
                succeeded: inner.succeeded(),
                revision,
                responses: inner.op_responses(),
            }),
            // etcd answers every operation of a transaction that applied; anything else is not
            // etcd's API.
            _ => Err(StoreError::Batch {
                key: key.to_string(),
                message: "etcd's answer lacks the fenced transaction's own".into(),
            }),
        }
    }
}

/// What a write transaction did (the fence, if any, already taken off).
#[derive(Debug, Clone)]
pub struct TxnOutcome {
    /// Whether the transaction's own comparisons held (its `and_then` branch ran).
    pub succeeded: bool,
    /// etcd's revision after the transaction: the written keys' mod revision when it wrote.
    pub revision: i64,
    /// The answers of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnOutcome {
    /// The outcome of a transaction sent without a fence.
    pub(super) fn of(resp: TxnResponse) -> TxnOutcome {
        TxnOutcome {
            succeeded: resp.succeeded(),
            revision: resp.header().map(|h| h.revision()).unwrap_or(0),
            responses: resp.op_responses(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debug<T: std::fmt::Debug>(t: &T) -> String {
        format!("{t:?}")
    }

    #[test]
    fn a_fenced_transaction_nests_the_write_under_the_leader_keys_create_revision() {
        let fence = Fence::new("/lambda/leader/controller", 42);
        let write = || {
            Txn::new()
                .when([Compare::mod_revision("/k", CompareOp::Equal, 7)])
                .and_then([TxnOp::put("/k", "v", None)])
                .or_else([TxnOp::get("/k", None)])
        };
        let expected = Txn::new()
            .when([Compare::create_revision(
                "/lambda/leader/controller",
                CompareOp::Equal,
                42,
            )])
            .and_then([TxnOp::txn(write())]);
        // The write's own comparisons and both of its branches are kept, untouched, inside.
        let wrapped = debug(&fence.wrap(write()));
        assert_eq!(wrapped, debug(&expected));
        assert!(
            wrapped.contains("ModRevision(7)") && wrapped.contains("RequestRange"),
            "{wrapped}"
        );
        // Another term is another guard.
        let other = Fence::new("/lambda/leader/controller", 43);
        assert_ne!(debug(&other.wrap(write())), wrapped);
    }

    #[test]
    fn a_rejected_write_is_fenced_not_a_conflict_counts_and_ends_the_term() {
        let metric = Counter::default();
        let fence = Fence::new("/lambda/leader/controller", 9).counting(metric.clone());
        assert!(!fence.lost().is_cancelled());
        let e = fence.reject("update status", "/lambda/status/nodes/default/n1");
        assert!(
            e.is_fenced() && !e.is_conflict() && !e.is_not_found(),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("/lambda/status/nodes/default/n1")
                && text.contains("/lambda/leader/controller")
                && text.contains('9'),
            "{text}"
        );
        assert!(fence.lost().is_cancelled());
        fence.reject("create", "/x");
        assert_eq!((fence.rejected(), metric.get()), (2, 2));
    }
}
