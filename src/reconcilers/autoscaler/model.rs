//! The simulated cluster the autoscaler's decisions are computed on: amounts of memory and
//! CPU, nodes with their free capacity and attributes, and the work items to place.
//!
//! Units are MiB and millicores. Capacities read from Swarm (bytes, nano-CPUs) are rounded
//! down and demands rounded up ([`Resources::from_swarm_capacity`],
//! [`Resources::from_swarm_demand`]), so that rounding can only make the simulation more
//! pessimistic than Swarm, never plan a task onto a node it would not fit.

use std::fmt;

use crate::api::nodepool::ResourceAmounts;

use super::constraints::{Constraint, ConstraintError, NodeAttributes, all_match};

const MIB: i64 = 1024 * 1024;
const NANOS_PER_MILLI: i64 = 1_000_000;

/// Memory (MiB) and CPU (millicores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub memory_mb: u64,
    pub cpu_millis: u64,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        memory_mb: 0,
        cpu_millis: 0,
    };

    /// A new amount.
    pub fn new(memory_mb: u64, cpu_millis: u64) -> Self {
        Resources {
            memory_mb,
            cpu_millis,
        }
    }

    /// A node's capacity from Swarm's bytes and nano-CPUs (rounded down; negatives are 0).
    pub fn from_swarm_capacity(memory_bytes: i64, nano_cpus: i64) -> Self {
        Resources::new(
            (memory_bytes.max(0) / MIB) as u64,
            (nano_cpus.max(0) / NANOS_PER_MILLI) as u64,
        )
    }

    /// A task's reservation from Swarm's bytes and nano-CPUs (rounded up; negatives are 0).
    pub fn from_swarm_demand(memory_bytes: i64, nano_cpus: i64) -> Self {
        let up = |v: i64, unit: i64| (v.max(0) as u64).div_ceil(unit as u64);
        Resources::new(up(memory_bytes, MIB), up(nano_cpus, NANOS_PER_MILLI))
    }

    /// True when `self` fits into `free` in both dimensions.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.memory_mb <= free.memory_mb && self.cpu_millis <= free.cpu_millis
    }

    /// Component-wise sum (saturating).
    pub fn plus(&self, o: &Resources) -> Resources {
        Resources::new(
            self.memory_mb.saturating_add(o.memory_mb),
            self.cpu_millis.saturating_add(o.cpu_millis),
        )
    }

    /// Component-wise difference, floored at zero.
    pub fn minus(&self, o: &Resources) -> Resources {
        Resources::new(
            self.memory_mb.saturating_sub(o.memory_mb),
            self.cpu_millis.saturating_sub(o.cpu_millis),
        )
    }

    /// The larger of the memory and CPU shares `self` takes of `total` (0 where `total` has
    /// none of a dimension), as cluster-autoscaler measures a node's utilisation.
    pub fn share_of(&self, total: &Resources) -> f64 {
        let share = |used: u64, all: u64| {
            if all == 0 {
                0.0
            } else {
                used as f64 / all as f64
            }
        };
        share(self.memory_mb, total.memory_mb).max(share(self.cpu_millis, total.cpu_millis))
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.memory_mb)?;
        if self.cpu_millis > 0 {
            write!(f, " and {}m CPU", self.cpu_millis)?;
        }
        Ok(())
    }
}

impl From<Resources> for ResourceAmounts {
    fn from(r: Resources) -> Self {
        ResourceAmounts {
            memory_mb: r.memory_mb,
            cpu_millis: r.cpu_millis,
        }
    }
}

/// A node as the simulation sees it: a Swarm node, or a template node not booted yet.
/// Invariant: `reserved` is what tasks hold on it; it may exceed `allocatable` (Swarm was
/// told less than it placed), in which case nothing more fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNode {
    /// How results name it (the `Node` object's name for pool nodes).
    pub name: String,
    /// The key (`namespace/name`) of the pool it belongs to; `None` for nodes no pool owns
    /// (e.g. the manager).
    pub pool: Option<String>,
    pub attributes: NodeAttributes,
    pub allocatable: Resources,
    pub reserved: Resources,
}

impl SimNode {
    /// What is left for new tasks.
    pub fn free(&self) -> Resources {
        self.allocatable.minus(&self.reserved)
    }

    /// True when `item` may go here and fits now.
    pub fn can_take(&self, item: &WorkItem) -> bool {
        item.demand.fits_in(&self.free()) && all_match(&item.constraints, &self.attributes)
    }

    /// Places `item` if it may go here and fits; returns whether it did.
    pub fn take(&mut self, item: &WorkItem) -> bool {
        let ok = self.can_take(item);
        if ok {
            self.reserved = self.reserved.plus(&item.demand);
        }
        ok
    }
}

/// One piece of work that needs a node: a pending Swarm task, or a replica wanted but not
/// placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// Unique among the items of one decision (a task id, or `fn/ns/name#3`).
    pub id: String,
    /// Whose work it is, for reasons (e.g. `fn/resize`).
    pub owner: String,
    /// Its reservation.
    pub demand: Resources,
    pub constraints: Vec<Constraint>,
}

impl WorkItem {
    /// An item whose constraints are given in Swarm's syntax.
    pub fn new<S: AsRef<str>>(
        id: impl Into<String>,
        owner: impl Into<String>,
        demand: Resources,
        constraints: &[S],
    ) -> Result<Self, ConstraintError> {
        Ok(WorkItem {
            id: id.into(),
            owner: owner.into(),
            demand,
            constraints: Constraint::parse_all(constraints)?,
        })
    }
}

/// Orders items for first-fit decreasing: largest memory first, then largest CPU, then id
/// (so the same input always packs the same way).
pub fn ffd_sort(items: &mut [&WorkItem]) {
    items.sort_by(|a, b| {
        (b.demand.memory_mb, b.demand.cpu_millis)
            .cmp(&(a.demand.memory_mb, a.demand.cpu_millis))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Places `item` on the first node that takes it; returns that node's index.
pub fn first_fit(item: &WorkItem, nodes: &mut [SimNode]) -> Option<usize> {
    nodes.iter_mut().position(|n| n.take(item))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders shared by the autoscaler's unit tests.
    use std::collections::BTreeMap;

    use super::super::constraints::{NodeAttributes, Role};
    use super::*;

    /// A worker node named `name` in `pool` with `labels`.
    pub fn node(name: &str, pool: &str, alloc: (u64, u64), reserved: (u64, u64)) -> SimNode {
        SimNode {
            name: name.into(),
            pool: Some(pool.into()),
            attributes: NodeAttributes {
                id: format!("id-{name}"),
                hostname: name.into(),
                role: Role::Worker,
                os: "linux".into(),
                arch: "x86_64".into(),
                labels: BTreeMap::from([("lambda.pool".to_string(), pool.to_string())]),
                engine_labels: BTreeMap::new(),
            },
            allocatable: Resources::new(alloc.0, alloc.1),
            reserved: Resources::new(reserved.0, reserved.1),
        }
    }

    /// An item of `owner` needing `mb` MiB, with constraints.
    pub fn item(id: &str, owner: &str, mb: u64, constraints: &[&str]) -> WorkItem {
        WorkItem::new(id, owner, Resources::new(mb, 0), constraints).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn swarm_units_round_against_the_plan() {
        let cap = Resources::from_swarm_capacity(2 * 1024 * MIB - 1, 1_999_999_999);
        assert_eq!(cap, Resources::new(2047, 1999));
        let need = Resources::from_swarm_demand(128 * MIB + 1, 1);
        assert_eq!(need, Resources::new(129, 1));
        assert_eq!(Resources::from_swarm_demand(-5, -1), Resources::ZERO);
    }

    #[test]
    fn share_is_the_larger_dimension() {
        let total = Resources::new(1000, 1000);
        assert_eq!(Resources::new(250, 500).share_of(&total), 0.5);
        assert_eq!(Resources::new(10, 0).share_of(&Resources::new(100, 0)), 0.1);
        assert_eq!(Resources::new(5, 5).share_of(&Resources::ZERO), 0.0);
        assert_eq!(Resources::new(512, 0).to_string(), "512 MiB");
        assert_eq!(Resources::new(512, 250).to_string(), "512 MiB and 250m CPU");
    }

    #[test]
    fn first_fit_decreasing_respects_capacity_and_constraints() {
        let mut nodes = vec![
            node("a", "p", (1000, 1000), (800, 0)),
            node("b", "p", (1000, 1000), (0, 0)),
        ];
        nodes[1].attributes.labels.insert("tier".into(), "x".into());
        let small = item("s", "fn/f", 100, &[]);
        let big = item("b", "fn/f", 600, &[]);
        let pinned = item("p", "fn/f", 100, &["node.labels.tier==y"]);
        let mut items = vec![&small, &pinned, &big];
        ffd_sort(&mut items);
        assert_eq!(items[0].id, "b");
        assert_eq!(first_fit(items[0], &mut nodes), Some(1));
        assert_eq!(first_fit(&small, &mut nodes), Some(0));
        assert_eq!(first_fit(&pinned, &mut nodes), None);
        assert_eq!(nodes[0].free(), Resources::new(100, 1000));
        let mut over = node("o", "p", (100, 0), (200, 0));
        assert_eq!(over.free(), Resources::ZERO);
        assert!(!over.take(&small));
    }
}
