//! The audit after chaos: what the platform holds (etcd) against what exists (Nova, Glance, the
//! Swarm, the host's network namespaces) and against the desired state the operations left.
//!
//! Three lists: **leaks** (things no object owns: Nova servers, images, Swarm services,
//! configs, secrets, Swarm nodes, network namespaces) and **duplicates** (two servers for one
//! Node); **mismatches** (a status that says something reality does not); **pending** (the
//! desired state not reached yet). Converged = all empty.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{Config, Node as SwarmNode, Secret, Service};
use bollard::models::{NodeState, TaskState};
use lambda::api::{Conditions, FunctionSpec, NodePoolSpec, NodeSpec, Object, SnapshotImageSpec};
use lambda::openstack::{Image, ImageStatus, OpenStack, Server, ServerFilter, ServerStatus};
use lambda::reconcilers::cluster::{META_INSTANCE, ServerOwner, instance_tag};
use lambda::reconcilers::function::spec::service_name;
use lambda::store::Store;
use lambda::swarm::labels::{self, Owner};
use lambda::swarm::{Swarm, TaskFilter, task_state};

use super::common::cloud::CloudProc;
use super::findings::Audit;
use super::model::World;

/// Where to look.
pub struct Scope<'a> {
    pub store: &'a Store,
    pub os: &'a OpenStack,
    pub swarm: &'a Swarm,
    /// The `lambda cloud` (its servers' network namespaces).
    pub cloud: &'a CloudProc,
    pub instance: &'a str,
    pub ns: &'a str,
}

fn ready<K: lambda::api::Resource>(o: &Object<K>) -> bool
where
    K::Status: Conditions,
{
    o.status.as_ref().is_some_and(|s| s.is_true("Ready"))
}

/// What one audit reads: the objects in etcd, the cloud's servers and images, the Swarm's
/// objects of this instance and all its nodes.
struct Read<'a> {
    ns: &'a str,
    instance: &'a str,
    functions: Vec<Object<FunctionSpec>>,
    pools: Vec<Object<NodePoolSpec>>,
    nodes: Vec<Object<NodeSpec>>,
    snapshot: Object<SnapshotImageSpec>,
    servers: Vec<Server>,
    images: Vec<Image>,
    services: Vec<Service>,
    configs: Vec<Config>,
    secrets: Vec<Secret>,
    swarm_nodes: Vec<SwarmNode>,
}

/// `what`'s value, or an error naming it.
async fn read<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    fut.await.map_err(|e| format!("{what}: {e}"))
}

impl<'a> Read<'a> {
    async fn of(s: &Scope<'a>) -> Result<Read<'a>, String> {
        let ns = Some(s.ns);
        let label = [(labels::INSTANCE, s.instance)];
        Ok(Read {
            ns: s.ns,
            instance: s.instance,
            functions: read("functions", s.store.list::<FunctionSpec>(ns))
                .await?
                .items,
            pools: read("pools", s.store.list::<NodePoolSpec>(ns)).await?.items,
            nodes: read("nodes", s.store.list::<NodeSpec>(ns)).await?.items,
            snapshot: read("snapshot", s.store.get::<SnapshotImageSpec>(s.ns, "worker")).await?,
            servers: read(
                "servers",
                s.os.compute().list_servers(&ServerFilter::default()),
            )
            .await?,
            images: read("images", s.os.image().list_images()).await?,
            services: read("services", s.swarm.list_services(&label)).await?,
            configs: read("configs", s.swarm.list_configs(&label)).await?,
            secrets: read("secrets", s.swarm.list_secrets(&label)).await?,
            swarm_nodes: read("swarm nodes", s.swarm.list_nodes()).await?,
        })
    }

    /// The snapshot's current image id.
    fn image_id(&self) -> Option<String> {
        self.snapshot
            .status
            .as_ref()
            .and_then(|st| st.image_id.clone())
    }

    /// This instance's servers Nova has not deleted.
    fn our_servers(&self) -> Vec<&Server> {
        self.servers
            .iter()
            .filter(|sv| sv.tags.contains(&instance_tag(self.instance)))
            .filter(|sv| !matches!(sv.status, ServerStatus::Deleted | ServerStatus::SoftDeleted))
            .collect()
    }
}

/// Audits everything in scope against `world`. `Err` only when something could not be read
/// (etcd restarting…): the caller tries again.
pub async fn audit(s: &Scope<'_>, world: &World) -> Result<Audit, String> {
    let r = Read::of(s).await?;
    let mut a = Audit::default();
    snapshot(&r, world, &mut a);
    pools(&r, world, &mut a);
    servers(&r, &mut a);
    swarm_nodes(&r, &mut a);
    functions(&r, s.swarm, world, &mut a).await?;
    namespaces(&r, s.cloud, &mut a);
    Ok(a)
}

/// The snapshot image and this instance's Glance images: the current one only.
fn snapshot(r: &Read<'_>, world: &World, a: &mut Audit) {
    let si = &r.snapshot;
    let image_id = r.image_id();
    let images = &r.images;
    let sst = si.status.clone().unwrap_or_default();
    if !ready(si) || sst.observed_generation != Some(si.generation()) {
        a.pending.push(format!(
            "snapshot not Ready at its generation: {:?}",
            sst.phase
        ));
    }
    let current_setup = format!("echo v{} > /dev/null", world.snapshot_version);
    if si.spec.setup_script.as_deref() != Some(current_setup.as_str()) {
        a.pending
            .push("snapshot spec is not the last applied".into());
    }

    let ours: Vec<_> = images
        .iter()
        .filter(|i| i.properties.get(META_INSTANCE).and_then(|v| v.as_str()) == Some(r.instance))
        .collect();
    a.seen.insert("Glance images", ours.len());
    for i in &ours {
        if Some(&i.id) != image_id.as_ref() {
            a.leak(
                "Glance images",
                format!("{} {:?} ({:?})", i.id, i.name, i.status),
            );
        } else if i.status != ImageStatus::Active {
            a.mismatches
                .push(format!("snapshot image {} is {:?}", i.id, i.status));
        }
    }
    if let Some(id) = &image_id
        && !ours.iter().any(|i| &i.id == id)
    {
        a.mismatches
            .push(format!("snapshot status names image {id}, Glance has none"));
    }
}

/// Pools and their Nodes, against what the operations left.
fn pools(r: &Read<'_>, world: &World, a: &mut Audit) {
    let (pools, nodes) = (&r.pools, &r.nodes);
    let image_id = r.image_id();
    let pool_names: BTreeSet<String> = pools
        .iter()
        .filter(|p| !p.is_deleting())
        .map(|p| p.metadata.name.clone())
        .collect();
    let want_pools: BTreeSet<String> = world.pools.keys().cloned().collect();
    if pool_names != want_pools || pools.iter().any(|p| p.is_deleting()) {
        a.pending.push(format!(
            "pools {:?} (deleting: {:?}), want {want_pools:?}",
            pool_names,
            pools
                .iter()
                .filter(|p| p.is_deleting())
                .map(|p| &p.metadata.name)
                .collect::<Vec<_>>()
        ));
    }
    for p in pools {
        let want = world.pools.get(&p.metadata.name).copied().unwrap_or(0);
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        let mine: Vec<&Object<NodeSpec>> = nodes
            .iter()
            .filter(|n| n.metadata.owner_references.iter().any(|r| r.uid == uid))
            .collect();
        let ready_n = mine.iter().filter(|n| ready(n)).count() as u32;
        let st = p.status.clone().unwrap_or_default();
        if mine.len() as u32 != want || ready_n != want || !ready(p) {
            a.pending.push(format!(
                "pool {}: {} nodes ({ready_n} ready), want {want}; status {}/{} {:?}",
                p.metadata.name,
                mine.len(),
                st.ready_replicas,
                st.replicas,
                st.condition("Ready").map(|c| c.reason.clone())
            ));
        }
        if ready(p) && st.ready_replicas != ready_n {
            a.mismatches.push(format!(
                "pool {} says {} ready nodes, {ready_n} are",
                p.metadata.name, st.ready_replicas
            ));
        }
        if ready(p) {
            let names: BTreeSet<&String> = mine.iter().map(|n| &n.metadata.name).collect();
            let listed: BTreeSet<&String> = st.nodes.iter().collect();
            if names != listed {
                a.mismatches.push(format!(
                    "pool {} lists nodes {listed:?}, has {names:?}",
                    p.metadata.name
                ));
            }
        }
    }
    let pool_uids: BTreeSet<&str> = pools
        .iter()
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    for n in nodes {
        let owned = n
            .metadata
            .owner_references
            .iter()
            .any(|r| pool_uids.contains(r.uid.as_str()));
        if !owned || n.is_deleting() {
            a.pending.push(format!(
                "node {} {}",
                n.metadata.name,
                if owned { "deleting" } else { "has no pool" }
            ));
        }
        if image_id.as_ref().is_some_and(|i| &n.spec.image != i) {
            a.pending
                .push(format!("node {} not on the current image", n.metadata.name));
        }
    }
}

/// This instance's Nova servers: one per Node, none else; each Ready Node's server and Swarm
/// node as its status says.
fn servers(r: &Read<'_>, a: &mut Audit) {
    let nodes = &r.nodes;
    let by_uid: HashMap<&str, &Object<NodeSpec>> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.uid.as_deref()?, n)))
        .collect();
    let mine = r.our_servers();
    let swarm_nodes = &r.swarm_nodes;
    a.seen.insert("Nova servers", mine.len());
    let mut per_node: HashMap<&str, Vec<&str>> = HashMap::new();
    for sv in &mine {
        let owner = ServerOwner::of(sv);
        match owner.as_ref().and_then(|o| by_uid.get(o.uid.as_str())) {
            Some(n) => per_node
                .entry(n.metadata.uid.as_deref().unwrap_or_default())
                .or_default()
                .push(&sv.id),
            None => a.leak(
                "Nova servers",
                format!(
                    "{} {} ({:?}, owner {:?})",
                    sv.id,
                    sv.name,
                    sv.status,
                    owner.map(|o| format!("{} {}/{}", o.kind, o.namespace, o.name))
                ),
            ),
        }
    }
    for (uid, ids) in &per_node {
        if ids.len() > 1 {
            let name = by_uid.get(uid).map(|n| n.metadata.name.as_str());
            a.duplicates.push(format!("node {name:?}: servers {ids:?}"));
        }
    }
    let live_swarm: HashMap<&str, &bollard::models::Node> = swarm_nodes
        .iter()
        .filter_map(|sn| Some((sn.id.as_deref()?, sn)))
        .collect();
    for n in nodes {
        let st = n.status.clone().unwrap_or_default();
        let uid = n.metadata.uid.as_deref().unwrap_or_default();
        if !ready(n) {
            continue;
        }
        match st.server_id.as_deref() {
            Some(id) => match mine.iter().find(|sv| sv.id == id) {
                Some(sv) if sv.status != ServerStatus::Active => a.mismatches.push(format!(
                    "node {} Ready, its server {id} is {:?}",
                    n.metadata.name, sv.status
                )),
                Some(sv) if ServerOwner::of(sv).is_none_or(|o| o.uid != uid) => a.mismatches.push(
                    format!("node {}: server {id} is another's", n.metadata.name),
                ),
                Some(_) => {}
                None => a.mismatches.push(format!(
                    "node {} Ready, its server {id} does not exist",
                    n.metadata.name
                )),
            },
            None => a
                .mismatches
                .push(format!("node {} Ready without a server", n.metadata.name)),
        }
        match st
            .swarm_node_id
            .as_deref()
            .and_then(|id| live_swarm.get(id))
        {
            Some(sn) => {
                let state = sn.status.as_ref().and_then(|x| x.state);
                if state != Some(NodeState::READY) {
                    a.mismatches.push(format!(
                        "node {} Ready, its Swarm node is {state:?}",
                        n.metadata.name
                    ));
                }
            }
            None => a.mismatches.push(format!(
                "node {} Ready, its Swarm node {:?} does not exist",
                n.metadata.name, st.swarm_node_id
            )),
        }
    }
}

/// This test's Swarm nodes (labelled with the instance, or named after its servers): each a
/// Node's.
fn swarm_nodes(r: &Read<'_>, a: &mut Audit) {
    let (nodes, swarm_nodes) = (&r.nodes, &r.swarm_nodes);
    let claimed: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.swarm_node_id.as_deref())
        .collect();
    let host_mark = format!("-{}-", r.ns);
    let ours: Vec<_> = swarm_nodes
        .iter()
        .filter(|sn| {
            let labelled = sn
                .spec
                .as_ref()
                .and_then(|x| x.labels.as_ref())
                .and_then(|l| l.get(labels::INSTANCE))
                .is_some_and(|i| i == r.instance);
            let named = sn
                .description
                .as_ref()
                .and_then(|d| d.hostname.as_deref())
                .is_some_and(|h| h.contains(&host_mark));
            labelled || named
        })
        .collect();
    a.seen.insert("Swarm nodes", ours.len());
    for sn in ours {
        let id = sn.id.as_deref().unwrap_or_default();
        if !claimed.contains(id) {
            a.leak(
                "Swarm nodes",
                format!(
                    "{id} {:?} ({:?})",
                    sn.description.as_ref().and_then(|d| d.hostname.clone()),
                    sn.status.as_ref().and_then(|x| x.state)
                ),
            );
        }
    }
}

/// Functions: one service and one config each (used by it), their status as Swarm has it.
async fn functions(
    r: &Read<'_>,
    swarm: &Swarm,
    world: &World,
    a: &mut Audit,
) -> Result<(), String> {
    let functions = &r.functions;
    let live_fns: HashMap<String, &Object<FunctionSpec>> = functions
        .iter()
        .filter(|f| !f.is_deleting())
        .map(|f| (f.metadata.name.clone(), f))
        .collect();
    let names: BTreeSet<&String> = live_fns.keys().collect();
    let want: BTreeSet<&String> = world.functions.keys().collect();
    if names != want || functions.iter().any(|f| f.is_deleting()) {
        a.pending
            .push(format!("functions {names:?}, want {want:?}"));
    }
    let owns = |o: &Owner| {
        o.namespace == r.ns
            && live_fns
                .get(&o.name)
                .is_some_and(|f| f.metadata.uid.as_deref() == Some(o.uid.as_str()))
    };
    a.seen.insert("Swarm services", r.services.len());
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for svc in &r.services {
        let spec = svc.spec.clone().unwrap_or_default();
        let owner = spec.labels.as_ref().and_then(Owner::from_labels);
        if !owner.as_ref().is_some_and(owns) {
            a.leak(
                "Swarm services",
                format!("{:?} (owner {owner:?})", spec.name),
            );
            continue;
        }
        for c in spec
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.configs)
            .unwrap_or_default()
        {
            referenced.extend(c.config_id);
        }
    }
    a.seen.insert("Swarm configs", r.configs.len());
    for c in &r.configs {
        let spec = c.spec.clone().unwrap_or_default();
        let owner = spec.labels.as_ref().and_then(Owner::from_labels);
        let id = c.id.clone().unwrap_or_default();
        if !owner.as_ref().is_some_and(owns) || !referenced.contains(&id) {
            a.leak(
                "Swarm configs",
                format!(
                    "{:?} (owner {owner:?}, used: {})",
                    spec.name,
                    referenced.contains(&id)
                ),
            );
        }
    }
    a.seen.insert("Swarm secrets", r.secrets.len());
    for x in &r.secrets {
        let spec = x.spec.clone().unwrap_or_default();
        let owner = spec.labels.as_ref().and_then(Owner::from_labels);
        if !owner.as_ref().is_some_and(owns) {
            a.leak("Swarm secrets", format!("{:?}", spec.name));
        }
    }
    for (name, f) in &live_fns {
        let st = f.status.clone().unwrap_or_default();
        let version = world.functions.get(name).copied();
        let code = f
            .spec
            .code
            .as_ref()
            .and_then(|c| c.inline.clone())
            .unwrap_or_default();
        if version.is_some_and(|v| !code.contains(&format!("# v{v}\n"))) {
            a.pending
                .push(format!("function {name}: not the last applied code"));
        }
        if !ready(f) || st.observed_generation != Some(f.generation()) || st.ready_replicas != 1 {
            a.pending.push(format!(
                "function {name}: ready {}/{} {:?}",
                st.ready_replicas,
                st.replicas,
                st.condition("Ready")
                    .map(|c| format!("{} {}", c.reason, c.message))
            ));
        }
        let sname = service_name(r.ns, name);
        let svc = r
            .services
            .iter()
            .find(|x| x.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(sname.as_str()));
        let Some(svc) = svc else {
            if ready(f) {
                a.mismatches
                    .push(format!("function {name} Ready, service {sname} missing"));
            }
            continue;
        };
        if st.service_id.is_some() && st.service_id != svc.id {
            a.mismatches.push(format!(
                "function {name}: status names service {:?}, Swarm's is {:?}",
                st.service_id, svc.id
            ));
        }
        let tasks = swarm
            .list_tasks(&TaskFilter {
                service: Some(sname.clone()),
                desired_state: Some("running".into()),
                ..Default::default()
            })
            .await
            .map_err(|x| format!("tasks: {x}"))?;
        let running: BTreeSet<String> = tasks
            .iter()
            .filter(|t| task_state(t) == Some(TaskState::RUNNING))
            .filter_map(|t| t.id.clone())
            .collect();
        let endpoints: BTreeSet<String> = st.endpoints.iter().map(|x| x.task_id.clone()).collect();
        if ready(f) && (endpoints != running || st.ready_replicas as usize != running.len()) {
            a.mismatches.push(format!(
                "function {name}: status {} ready, endpoints {endpoints:?}; Swarm runs {running:?}",
                st.ready_replicas
            ));
        }
    }

    Ok(())
}

/// Network namespaces of this cloud's servers that Nova no longer has.
fn namespaces(r: &Read<'_>, cloud: &CloudProc, a: &mut Audit) {
    let servers = &r.servers;
    let live: BTreeSet<&str> = servers
        .iter()
        .map(|sv| &sv.id[..8.min(sv.id.len())])
        .collect();
    let netns = cloud.namespaces();
    a.seen.insert("network namespaces", netns.len());
    for id in netns {
        if !live.contains(id.as_str()) {
            a.leak("network namespaces", format!("lc-{id}"));
        }
    }
}
