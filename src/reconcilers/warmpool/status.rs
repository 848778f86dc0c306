//! A warm pool's counts from what Swarm runs and what gateways claimed (a pure function).

use std::collections::{BTreeMap, HashSet};

use crate::api::function::Endpoint;

use super::claims::Claim;

/// Idle and claimed containers, and the claims whose container is gone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolView {
    /// Ready containers no one claimed.
    pub idle: u32,
    /// Claimed containers still running (serving, or finishing before their exit).
    pub claimed: u32,
    /// Claims of tasks Swarm no longer runs: the container was released (or died), so the
    /// claim only blocks nothing and is deleted.
    pub stale: Vec<String>,
}

/// Counts `endpoints` (the ready containers) against `claims`; `live` are the ids of the tasks
/// Swarm still means to run (desired state running), ready or not.
pub fn view(
    endpoints: &[Endpoint],
    live: &HashSet<String>,
    claims: &BTreeMap<String, Claim>,
) -> PoolView {
    let idle = endpoints
        .iter()
        .filter(|e| !claims.contains_key(&e.task_id))
        .count();
    let claimed = claims.keys().filter(|t| live.contains(*t)).count();
    PoolView {
        idle: u32::try_from(idle).unwrap_or(u32::MAX),
        claimed: u32::try_from(claimed).unwrap_or(u32::MAX),
        stale: claims
            .keys()
            .filter(|t| !live.contains(*t))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(task: &str) -> Endpoint {
        Endpoint {
            address: format!("10.0.0.1:{}", task.len()),
            task_id: task.into(),
            node_id: "n".into(),
        }
    }

    fn claim() -> Claim {
        Claim {
            function: "a/f".into(),
            uid: "u".into(),
            gateway: "g".into(),
            address: "x".into(),
            claimed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn idle_claimed_and_stale() {
        let endpoints = [ep("t1"), ep("t2"), ep("t3")];
        let live: HashSet<String> = ["t1", "t2", "t3", "t4"].map(String::from).into();
        let claims: BTreeMap<String, Claim> = [("t2", claim()), ("t4", claim()), ("gone", claim())]
            .into_iter()
            .map(|(t, c)| (t.to_string(), c))
            .collect();
        let v = view(&endpoints, &live, &claims);
        // t4 is claimed and still meant to run (not ready: finishing its last call).
        assert_eq!((v.idle, v.claimed), (2, 2));
        assert_eq!(v.stale, vec!["gone".to_string()]);
        assert_eq!(
            view(&[], &HashSet::new(), &BTreeMap::new()),
            PoolView::default()
        );
    }
}
