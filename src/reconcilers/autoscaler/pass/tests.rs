//! One pass over simulated etcd, Swarm and Nova inputs.

use std::collections::HashMap;

use bollard::models::{
    NodeDescription, NodeSpec as SwarmNodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum,
    NodeState, NodeStatus, Platform, ResourceObject, ServiceSpec, TaskSpec, TaskSpecResources,
    TaskState, TaskStatus,
};

use super::*;
use crate::api::nodepool::AutoscalingPolicy;
use crate::api::{NodeStatus as LambdaNodeStatus, Object};

const MIB: i64 = 1024 * 1024;

fn service(id: &str, instance: &str, name: &str) -> Service {
    Service {
        id: Some(id.into()),
        spec: Some(ServiceSpec {
            labels: Some(HashMap::from([
                (labels::INSTANCE.to_string(), instance.to_string()),
                (labels::NAMESPACE.to_string(), "default".to_string()),
                (labels::NAME.to_string(), name.to_string()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(id: &str, svc: &str, node: Option<&str>, mb: i64) -> Task {
    let (state, err) = match node {
        Some(_) => (TaskState::RUNNING, None),
        None => (
            TaskState::PENDING,
            Some("no suitable node (insufficient resources on 1 node)".to_string()),
        ),
    };
    Task {
        id: Some(id.into()),
        service_id: Some(svc.into()),
        node_id: node.map(Into::into),
        desired_state: Some(TaskState::RUNNING),
        spec: Some(TaskSpec {
            resources: Some(TaskSpecResources {
                reservations: Some(ResourceObject {
                    memory_bytes: Some(mb * MIB),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(TaskStatus {
            state: Some(state),
            err,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn swarm_node(id: &str, mb: i64) -> SwarmNode {
    SwarmNode {
        id: Some(id.into()),
        spec: Some(SwarmNodeSpec {
            role: Some(NodeSpecRoleEnum::WORKER),
            availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
            labels: Some(HashMap::from([
                (labels::INSTANCE.to_string(), "i1".to_string()),
                ("lambda.pool".to_string(), "workers".to_string()),
            ])),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: Some(id.into()),
            platform: Some(Platform {
                architecture: Some(std::env::consts::ARCH.into()),
                os: Some("linux".into()),
            }),
            resources: Some(ResourceObject {
                memory_bytes: Some(mb * MIB),
                nano_cpus: Some(1_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: Some(NodeState::READY),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pool(replicas: u32, desired: Option<u32>) -> Object<NodePoolSpec> {
    let mut spec: NodePoolSpec = serde_saphyr::from_str(
        "image: {glanceImage: b}\nflavor: m1.small\nminReplicas: 0\nmaxReplicas: 5\n",
    )
    .unwrap();
    spec.replicas = replicas;
    spec.autoscaling = Some(AutoscalingPolicy {
        enabled: true,
        ..AutoscalingPolicy::default()
    });
    let mut p = Object::new("default", "workers", spec);
    p.status = Some(crate::api::NodePoolStatus {
        desired_replicas: desired,
        ..Default::default()
    });
    p
}

fn node(name: &str, swarm_id: &str) -> Object<NodeSpec> {
    let spec: NodeSpec =
        serde_saphyr::from_str("pool: workers\nimage: b\nflavor: m1.small\n").unwrap();
    let mut n = Object::new("default", name, spec);
    n.metadata
        .labels
        .insert(POOL_LABEL.to_string(), "workers".to_string());
    n.status = Some(LambdaNodeStatus {
        swarm_node_id: Some(swarm_id.into()),
        ..Default::default()
    });
    n
}

fn flavors() -> HashMap<String, Flavor> {
    HashMap::from([(
        "default/workers".to_string(),
        Flavor {
            id: "2".into(),
            name: "m1.small".into(),
            vcpus: 1,
            ram: 2048,
            disk: 20,
            ephemeral: 0,
            is_public: true,
        },
    )])
}

fn observed<'a>(
    pools: Vec<&'a Object<NodePoolSpec>>,
    nodes: &'a [Object<NodeSpec>],
    swarm_nodes: &'a [SwarmNode],
    tasks: &'a [Task],
    services: &'a [Service],
    flavors: &'a HashMap<String, Flavor>,
) -> Observed<'a> {
    Observed {
        pools,
        nodes,
        swarm_nodes,
        tasks,
        services,
        flavors,
        limits: None,
        instance: "i1",
        namespace: None,
    }
}

#[test]
fn a_pool_at_zero_grows_for_its_platforms_pending_work_only() {
    let p = pool(0, None);
    let services = [
        service("s1", "i1", "resize"),
        service("s2", "other", "theirs"),
    ];
    // 3 × 900 MiB of ours (a 2048 MiB flavor less 256 reserved takes 1), 2 of another platform.
    let tasks = [
        task("t1", "s1", None, 900),
        task("t2", "s1", None, 900),
        task("t3", "s1", None, 900),
        task("u1", "s2", None, 900),
        task("u2", "s2", None, 900),
    ];
    let f = flavors();
    let d = decide(
        &observed(vec![&p], &[], &[], &tasks, &services, &f),
        Utc::now(),
    );
    assert_eq!(d.pending, 3, "another platform's work is not ours");
    let o = &d.pools["default/workers"];
    assert_eq!(o.desired_replicas, 3);
    assert!(o.news);
    assert_eq!(o.status.pending.tasks, 3);
    assert_eq!(o.status.pending.owners, ["fn/default/resize"]);
    assert!(
        o.status.reason.starts_with("scale up 0 → 3"),
        "{}",
        o.status.reason
    );
    assert_eq!(
        d.waiting["fn/default/resize"],
        "waiting for a node: pool default/workers is adding 3 × m1.small nodes"
    );
    assert!(d.wants_growth);
}

#[test]
fn a_repeated_pass_counts_the_nodes_being_added_and_asks_for_nothing_twice() {
    // The decision above was written (desired 3); one node joined, two are still booting.
    let p = pool(0, Some(3));
    let services = [service("s1", "i1", "resize")];
    let tasks = [
        task("t1", "s1", Some("w1"), 900),
        task("t2", "s1", None, 900),
        task("t3", "s1", None, 900),
    ];
    let nodes = [node("workers-a", "w1")];
    let swarm = [swarm_node("w1", 2048)];
    let f = flavors();
    let d = decide(
        &observed(vec![&p], &nodes, &swarm, &tasks, &services, &f),
        Utc::now(),
    );
    let o = &d.pools["default/workers"];
    assert_eq!(o.desired_replicas, 3, "{:?}", o.status);
    assert!(!d.wants_growth);
    assert_eq!(o.status.reserved.memory_mb, 900);
    assert_eq!(o.status.allocatable.memory_mb, 2048);
    assert_eq!(
        d.waiting["fn/default/resize"],
        "waiting for a node: pool default/workers is adding 2 × m1.small nodes"
    );
}

#[test]
fn work_no_flavor_takes_is_no_pool_fits_and_an_unreadable_flavor_is_reported() {
    let p = pool(0, None);
    let services = [service("s1", "i1", "huge")];
    let tasks = [task("t1", "s1", None, 4096)];
    let f = flavors();
    let d = decide(
        &observed(vec![&p], &[], &[], &tasks, &services, &f),
        Utc::now(),
    );
    let msg = &d.no_pool_fits["fn/default/huge"];
    assert!(msg.contains("4096") && msg.contains("m1.small"), "{msg}");
    assert!(d.waiting.is_empty());
    assert_eq!(d.pools["default/workers"].desired_replicas, 0);

    let none = HashMap::new();
    let d = decide(
        &observed(vec![&p], &[], &[], &tasks, &services, &none),
        Utc::now(),
    );
    assert!(d.pools.is_empty());
    assert!(
        d.broken["default/workers"].contains("flavor m1.small"),
        "{:?}",
        d.broken
    );
}

#[test]
fn the_quota_comes_from_novas_absolute_limits() {
    let l = AbsoluteLimits {
        max_total_instances: 10,
        total_instances_used: 12,
        max_total_cores: -1,
        total_cores_used: 3,
        max_total_ram_size: 51200,
        total_ram_used: 2048,
    };
    let q = quota(Some(&l));
    assert_eq!(q.instances, Some(0), "over quota is no room, not negative");
    assert_eq!(q.cores, None, "-1 is unlimited");
    assert_eq!(q.ram_mb, Some(49152));
    assert_eq!(quota(None), Quota::UNLIMITED);
}
