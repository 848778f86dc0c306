//! One pass of the node autoscaler over what etcd, Swarm and Nova report: it reads, calls the
//! pure decisions ([`super::scale_up::decide`], [`super::scale_down::decide`],
//! [`super::outcome`]) and returns what to write. Reading is here; writing is in `run.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::models::{Node as SwarmNode, Service, Task};
use chrono::{DateTime, Utc};

use crate::api::{NodePoolSpec, NodeSpec, Object, Resource, WarmPoolSpec};
use crate::openstack::{AbsoluteLimits, Flavor};
use crate::swarm::labels;

use super::super::nodepool::{POOL_LABEL, desired};
use super::model::{Resources, SimNode};
use super::observe::{self, NodeLoad};
use super::outcome::{PoolOutcome, PoolPass, no_pool_fits, pool_outcome};
use super::scale_down::{self, DownNode, PoolPolicy, do_not_disrupt};
use super::scale_up::{self, PoolCandidate, Quota};
use super::template::{TemplateNode, template_node};

/// What a pass reads.
pub struct Observed<'a> {
    /// Autoscaled pools (enabled, not being deleted).
    pub pools: Vec<&'a Object<NodePoolSpec>>,
    /// Every Node object in scope.
    pub nodes: &'a [Object<NodeSpec>],
    pub swarm_nodes: &'a [SwarmNode],
    pub tasks: &'a [Task],
    pub services: &'a [Service],
    /// Flavor of each pool, by the pool's key (absent: could not be read).
    pub flavors: &'a HashMap<String, Flavor>,
    /// The project's absolute limits, when read.
    pub limits: Option<AbsoluteLimits>,
    /// This platform's id: only its own services' work is planned for.
    pub instance: &'a str,
    /// Namespace in scope (`None`: all).
    pub namespace: Option<&'a str>,
}

/// What a pass decided.
#[derive(Debug, Default)]
pub struct Decided {
    /// Per pool key.
    pub pools: BTreeMap<String, PoolOutcome>,
    /// `fn/<ns>/<name>` → message, for functions no pool's flavor can take.
    pub no_pool_fits: BTreeMap<String, String>,
    /// `fn/<ns>/<name>` → message naming the pools whose new nodes its pending replicas wait
    /// for (what the gateway tells a caller it cannot hold long enough).
    pub waiting: BTreeMap<String, String>,
    /// Pools whose template could not be built (flavor unreadable or too small), with why.
    pub broken: BTreeMap<String, String>,
    /// Pending items seen (for the decision's metrics and the next pass's quota read).
    pub pending: usize,
    /// True when some pool would grow: worth reading the quota.
    pub wants_growth: bool,
}

/// `fn/<ns>/<name>` for this platform's function services, `wp/<ns>/<name>` for its warm
/// pools' (their containers need room too), `None` for everything else.
fn owner_of(s: &Service, instance: &str, namespace: Option<&str>) -> Option<String> {
    let l = s.spec.as_ref()?.labels.as_ref()?;
    if l.get(labels::INSTANCE).map(String::as_str) != Some(instance) {
        return None;
    }
    let kind = if l.get(labels::KIND).map(String::as_str) == Some(WarmPoolSpec::KIND) {
        "wp"
    } else {
        "fn"
    };
    let ns = l.get(labels::NAMESPACE)?;
    if namespace.is_some_and(|n| n != ns) {
        return None;
    }
    Some(format!("{kind}/{ns}/{}", l.get(labels::NAME)?))
}

/// The quota left, from Nova's absolute limits (unlimited when unread).
pub fn quota(limits: Option<&AbsoluteLimits>) -> Quota {
    let Some(l) = limits else {
        return Quota::UNLIMITED;
    };
    Quota {
        instances: AbsoluteLimits::left(l.max_total_instances, l.total_instances_used)
            .map(|v| v.min(u64::from(u32::MAX)) as u32),
        cores: AbsoluteLimits::left(l.max_total_cores, l.total_cores_used),
        ram_mb: AbsoluteLimits::left(l.max_total_ram_size, l.total_ram_used),
    }
}

fn pool_key_of(n: &Object<NodeSpec>) -> Option<String> {
    let pool = n.metadata.labels.get(POOL_LABEL)?;
    Some(format!("{}/{pool}", n.metadata.namespace()))
}

/// Decides one pass at `now`.
pub fn decide(o: &Observed, now: DateTime<Utc>) -> Decided {
    let mut out = Decided::default();
    // Only this platform's function services are planned for: another platform sharing the
    // Swarm has its own autoscaler.
    let owners: HashMap<String, String> = o
        .services
        .iter()
        .filter_map(|s| Some((s.id.clone()?, owner_of(s, o.instance, o.namespace)?)))
        .collect();
    let ours: Vec<Task> = o
        .tasks
        .iter()
        .filter(|t| {
            t.service_id
                .as_ref()
                .is_some_and(|s| owners.contains_key(s))
        })
        .cloned()
        .collect();
    let (items, errors) = observe::pending_work(&ours, &owners);
    for e in errors {
        tracing::warn!(error = %e, "autoscaler: a pending task's constraints do not parse");
    }
    out.pending = items.len();
    // Every task holds resources on its node, whoever owns it.
    let (loads, _) = observe::load_by_node(o.tasks, &owners);
    let by_swarm_id: HashMap<&str, &Object<NodeSpec>> = o
        .nodes
        .iter()
        .filter_map(|n| {
            let id = n.status.as_ref()?.swarm_node_id.as_deref()?;
            Some((id, n))
        })
        .collect();
    let mut sim: Vec<SimNode> = Vec::new();
    let mut down: Vec<DownNode> = Vec::new();
    // Nodes of each pool Swarm can place on now; the rest of its count is upcoming.
    let mut present: BTreeMap<String, u32> = BTreeMap::new();
    for sn in o.swarm_nodes {
        let id = sn.id.clone().unwrap_or_default();
        let obj = by_swarm_id.get(id.as_str()).copied();
        let pool = obj.and_then(pool_key_of);
        let name = obj
            .map(|n| n.metadata.name.clone())
            .or_else(|| sn.description.as_ref()?.hostname.clone())
            .unwrap_or_else(|| id.clone());
        let load = loads.get(&id).cloned().unwrap_or_else(NodeLoad::default);
        let Some(node) = observe::sim_node(sn, name, pool.clone(), load.reserved) else {
            continue;
        };
        let deleting = obj.is_some_and(|n| n.is_deleting());
        let ready = observe::schedulable(sn) && !deleting;
        if ready {
            if let Some(p) = &pool {
                *present.entry(p.clone()).or_default() += 1;
            }
            sim.push(node.clone());
        }
        down.push(DownNode {
            node,
            tasks: load.movable,
            ready,
            deleting,
            do_not_disrupt: obj.is_some_and(|n| do_not_disrupt(&n.metadata)),
        });
    }
    let mut candidates: Vec<PoolCandidate> = Vec::new();
    let mut templates: HashMap<String, TemplateNode> = HashMap::new();
    for p in &o.pools {
        let key = p.key().to_string();
        let Some(f) = o.flavors.get(&key) else {
            out.broken.insert(
                key,
                format!("flavor {} could not be read from Nova", p.spec.flavor),
            );
            continue;
        };
        match template_node(p, f, o.instance) {
            Ok(t) => {
                let replicas = desired(p);
                candidates.push(PoolCandidate {
                    template: t.clone(),
                    replicas,
                    upcoming: replicas.saturating_sub(present.get(&key).copied().unwrap_or(0)),
                    max_replicas: p.spec.max_replicas,
                    priority: p.spec.autoscaling.as_ref().map_or(0, |a| a.priority),
                });
                templates.insert(key, t);
            }
            Err(e) => {
                out.broken.insert(key, e.to_string());
            }
        }
    }
    let up = scale_up::decide(&items, &sim, &candidates, quota(o.limits.as_ref()));
    out.wants_growth = !up.growth.is_empty();
    let policies: Vec<PoolPolicy> = o
        .pools
        .iter()
        .filter(|p| templates.contains_key(&p.key().to_string()))
        .filter_map(|p| PoolPolicy::of(p, desired(p)))
        .collect();
    let dn = scale_down::decide(&down, &policies, now);
    for p in &o.pools {
        let key = p.key().to_string();
        if !templates.contains_key(&key) {
            continue;
        }
        let mine: Vec<&DownNode> = down
            .iter()
            .filter(|d| d.node.pool.as_deref() == Some(key.as_str()) && !d.deleting)
            .collect();
        let sum = |f: fn(&SimNode) -> Resources| {
            mine.iter()
                .fold(Resources::ZERO, |a, d| a.plus(&f(&d.node)))
        };
        let names: BTreeSet<String> = o
            .nodes
            .iter()
            .filter(|n| pool_key_of(n).as_deref() == Some(key.as_str()))
            .map(|n| n.metadata.name.clone())
            .collect();
        let pass = PoolPass {
            key: key.clone(),
            replicas: desired(p),
            previous: p.status.as_ref().and_then(|s| s.autoscaler.as_ref()),
            nodes: names,
            reserved: sum(|n| n.reserved),
            allocatable: sum(|n| n.allocatable),
        };
        out.pools.insert(key, pool_outcome(&pass, &up, &dn, now));
    }
    for (owner, (_, msg)) in no_pool_fits(&up) {
        out.no_pool_fits.insert(owner, msg);
    }
    // Work that waits for nodes being added (now or by an earlier pass): name the pools
    // whose template could take it.
    for it in &items {
        if out.no_pool_fits.contains_key(&it.owner) || out.waiting.contains_key(&it.owner) {
            continue;
        }
        let booting: Vec<String> = candidates
            .iter()
            .filter_map(|c| {
                let adding =
                    up.growth_of(&c.template.pool).map_or(0, |g| g.new_nodes()) + c.upcoming;
                (adding > 0 && c.template.node.can_take(it)).then(|| {
                    format!(
                        "pool {} is adding {adding} × {} node{}",
                        c.template.pool,
                        c.template.flavor,
                        if adding == 1 { "" } else { "s" }
                    )
                })
            })
            .collect();
        if !booting.is_empty() {
            out.waiting.insert(
                it.owner.clone(),
                format!("waiting for a node: {}", booting.join("; ")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
