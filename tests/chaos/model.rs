//! The chaos plan, a pure function of the seed: which operations run, in which order, with
//! which pauses, where the leader is killed and where etcd restarts; and the desired state the
//! platform must end in (the model the operations leave behind).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Names of the functions the plan creates and deletes.
pub const FUNCTIONS: usize = 8;
/// The pool that always exists (at least one node: the functions' home).
pub const POOL_A: &str = "pool-a";
/// The pool that comes and goes.
pub const POOL_B: &str = "pool-b";
/// Snapshot spec changes in one run at most (each is a build and a rolling update of every
/// node: the slowest thing the platform does).
pub const MAX_SNAPSHOT_CHANGES: u32 = 2;

/// One operation on the platform, the way a user makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `lambda apply` of a new function (or one deleted before).
    CreateFunction { name: String, version: u32 },
    /// `lambda apply` of a changed function (new code: a new config and a service update).
    UpdateFunction { name: String, version: u32 },
    /// `lambda delete fn`.
    DeleteFunction { name: String },
    /// `etcdctl del` of the function's key: gone behind the controller's back.
    EtcdDelFunction { name: String },
    /// `lambda apply` of a pool with another `replicas` (or a pool deleted before).
    ScalePool { pool: String, replicas: u32 },
    /// `lambda delete np`.
    DeletePool { pool: String },
    /// `etcdctl del` of the pool's key.
    EtcdDelPool { pool: String },
    /// `etcdctl del` of one of the Nodes (the `pick`-th, modulo how many there are then).
    EtcdDelNode { pick: u32 },
    /// `lambda apply` of the snapshot image with another setup script.
    ChangeSnapshot { version: u32 },
}

/// One step of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Milliseconds to wait before the operation.
    pub pause_ms: u64,
    pub op: Op,
    /// Kill the leading controller (-9) after the operation, this many ms later.
    pub kill_after_ms: Option<u64>,
    /// Restart etcd (kill -9, start again) before the operation.
    pub restart_etcd: bool,
    /// After the operation, pause the leading controller (SIGSTOP) for this many ms, past its
    /// 3 s lease, while the run goes on (then SIGCONT): it wakes up as an ex-leader.
    pub stop_leader_ms: Option<u64>,
}

/// The desired state the operations leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    /// Function name → code version.
    pub functions: BTreeMap<String, u32>,
    /// Pool → replicas.
    pub pools: BTreeMap<String, u32>,
    pub snapshot_version: u32,
}

impl World {
    /// What the run starts from: the snapshot, pool-a with one node, pool-b with one, and two
    /// functions.
    pub fn initial() -> World {
        World {
            functions: BTreeMap::from([("f0".into(), 0), ("f1".into(), 0)]),
            pools: BTreeMap::from([(POOL_A.into(), 1), (POOL_B.into(), 1)]),
            snapshot_version: 0,
        }
    }

    /// The state after `op`.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::CreateFunction { name, version } | Op::UpdateFunction { name, version } => {
                self.functions.insert(name.clone(), *version);
            }
            Op::DeleteFunction { name } | Op::EtcdDelFunction { name } => {
                self.functions.remove(name);
            }
            Op::ScalePool { pool, replicas } => {
                self.pools.insert(pool.clone(), *replicas);
            }
            Op::DeletePool { pool } | Op::EtcdDelPool { pool } => {
                self.pools.remove(pool);
            }
            Op::EtcdDelNode { .. } => {}
            Op::ChangeSnapshot { version } => self.snapshot_version = *version,
        }
    }
}

/// The plan of `ops` operations for `seed`: pauses of 200–900 ms, `kills` leader kills and a
/// third as many leader pauses (SIGSTOP for 4–7 s) after random operations, one etcd restart
/// somewhere in the middle third, one snapshot change in the first half and maybe a second one
/// later.
pub fn plan(seed: u64, ops: usize, kills: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::initial();
    let between =
        |rng: &mut StdRng, from: usize, to: usize| rng.random_range(from..to.max(from + 1));
    let restart_at = between(&mut rng, ops / 3, 2 * ops / 3);
    let mut snapshot_at = vec![between(&mut rng, ops / 5, ops / 2)];
    if MAX_SNAPSHOT_CHANGES > 1 && rng.random_bool(0.5) {
        snapshot_at.push(between(&mut rng, ops / 2, 4 * ops / 5));
    }
    // Where the leader is killed and where it is paused: distinct operations.
    let stops = (kills / 3).max(1);
    let chosen = rand::seq::index::sample(&mut rng, ops, (kills + stops).min(ops)).into_vec();
    let (kill_at, stop_at) = chosen.split_at(kills.min(chosen.len()));
    let mut steps = Vec::with_capacity(ops);
    for i in 0..ops {
        let version = i as u32 + 1;
        let op = if snapshot_at.contains(&i) {
            Op::ChangeSnapshot {
                version: world.snapshot_version + 1,
            }
        } else {
            loop {
                if let Some(op) = pick(&mut rng, &world, version) {
                    break op;
                }
            }
        };
        world.apply(&op);
        steps.push(Step {
            pause_ms: rng.random_range(200..900),
            op,
            kill_after_ms: kill_at.contains(&i).then(|| rng.random_range(0..1500)),
            restart_etcd: i == restart_at,
            stop_leader_ms: stop_at.contains(&i).then(|| rng.random_range(4000..7000)),
        });
    }
    steps
}

/// One operation that makes sense in `world`, or `None` to draw again.
fn pick(rng: &mut StdRng, world: &World, version: u32) -> Option<Op> {
    let name = format!("f{}", rng.random_range(0..FUNCTIONS));
    let exists = world.functions.contains_key(&name);
    Some(match rng.random_range(0..100) {
        0..25 if !exists => Op::CreateFunction { name, version },
        0..25 => Op::UpdateFunction { name, version },
        25..37 if exists => Op::DeleteFunction { name },
        37..45 if exists => Op::EtcdDelFunction { name },
        45..75 => {
            let pool = if rng.random_bool(0.5) { POOL_A } else { POOL_B };
            // pool-a keeps at least one node, so every function has somewhere to run.
            let least = u32::from(pool == POOL_A);
            Op::ScalePool {
                pool: pool.into(),
                replicas: rng.random_range(least..=2),
            }
        }
        75..82 if world.pools.contains_key(POOL_B) => {
            if rng.random_bool(0.5) {
                Op::DeletePool {
                    pool: POOL_B.into(),
                }
            } else {
                Op::EtcdDelPool {
                    pool: POOL_B.into(),
                }
            }
        }
        82..92 => Op::EtcdDelNode {
            pick: rng.random_range(0..1000),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_a_function_of_its_seed_and_covers_every_operation() {
        let a = plan(7, 200, 10);
        assert_eq!(a, plan(7, 200, 10));
        assert_ne!(a, plan(8, 200, 10));
        assert_eq!(a.len(), 200);
        assert_eq!(a.iter().filter(|s| s.restart_etcd).count(), 1);
        let kills = a.iter().filter(|s| s.kill_after_ms.is_some()).count();
        let stops = a.iter().filter(|s| s.stop_leader_ms.is_some()).count();
        assert_eq!((kills, stops), (10, 3));
        assert!(
            a.iter()
                .all(|s| s.kill_after_ms.is_none() || s.stop_leader_ms.is_none())
        );
        let kinds: std::collections::BTreeSet<&str> = a
            .iter()
            .map(|s| match s.op {
                Op::CreateFunction { .. } => "create",
                Op::UpdateFunction { .. } => "update",
                Op::DeleteFunction { .. } => "delete",
                Op::EtcdDelFunction { .. } => "etcd-del-fn",
                Op::ScalePool { .. } => "scale",
                Op::DeletePool { .. } => "delete-pool",
                Op::EtcdDelPool { .. } => "etcd-del-pool",
                Op::EtcdDelNode { .. } => "etcd-del-node",
                Op::ChangeSnapshot { .. } => "snapshot",
            })
            .collect();
        assert_eq!(kinds.len(), 9, "{kinds:?}");
        let changes = a
            .iter()
            .filter(|s| matches!(s.op, Op::ChangeSnapshot { .. }))
            .count();
        assert!(changes as u32 <= MAX_SNAPSHOT_CHANGES);
        // pool-a is never deleted nor emptied: the functions always have a home.
        let mut w = World::initial();
        for s in &a {
            w.apply(&s.op);
            assert!(w.pools.get(POOL_A).is_some_and(|r| *r >= 1), "{s:?}");
        }
    }
}
