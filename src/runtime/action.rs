//! What a reconcile asks the runtime to do next ([`Action`]).

use std::time::Duration;

/// The next step a reconcile (or an error policy) asks for.
///
/// Invariant: a key is requeued at most once at a time; a later trigger (a change of the object)
/// always causes a reconcile regardless of the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(pub(crate) ActionKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionKind {
    Requeue(Duration),
    AwaitChange,
    Backoff,
}

impl Action {
    /// Reconcile the object again after `after`, even when nothing changes.
    pub fn requeue(after: Duration) -> Action {
        Action(ActionKind::Requeue(after))
    }

    /// Reconcile again only when the object (or something mapped to it) changes, or at resync.
    pub fn await_change() -> Action {
        Action(ActionKind::AwaitChange)
    }

    /// Retry after the object's exponential backoff (grows with each consecutive failure and
    /// resets on success). The default answer of an error policy.
    pub fn backoff() -> Action {
        Action(ActionKind::Backoff)
    }

    /// The fixed requeue delay, if this action has one.
    pub fn requeue_after(&self) -> Option<Duration> {
        match self.0 {
            ActionKind::Requeue(d) => Some(d),
            _ => None,
        }
    }
}
