//! Node pools against the real OpenStack of `scripts/openstack/up.sh` (Nova's fake driver: its
//! servers go ACTIVE but never run user-data, so they never join the Swarm). What is checked is
//! the Nova side: the servers a pool asks for (flavor, image, network, key pair, security
//! group, user-data that joins the Swarm, ownership metadata and tags), their deletion on
//! scale-down and pool deletion, and a quota error surfacing as a condition.
//!
//! Target: `LAMBDA_OS_ENV` (the env file `scripts/openstack/up.sh` writes). Without it the test
//! says so and passes, unless `LAMBDA_OPENSTACK_CONTRACT=1` (set by the test command), which
//! makes a missing target a failure.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use common::{Etcd, eventually, lambda, runtime_images, swarm_env};
use lambda::api::{Conditions, NodeSpec, Object};
use lambda::openstack::config::parse_openrc;
use lambda::openstack::{CloudConfig, OpenStack, ServerFilter};
use lambda::reconcilers::cluster::{
    ClusterConfig, ClusterTimings, TAG_MANAGED, instance_tag, owner_tag,
};
use lambda::reconcilers::{self, ControllersConfig};
use lambda::runtime::Metrics;
use lambda::swarm::Swarm;
use tokio_util::sync::CancellationToken;

fn target() -> Option<BTreeMap<String, String>> {
    let gate = std::env::var("LAMBDA_OPENSTACK_CONTRACT").is_ok_and(|v| !v.is_empty() && v != "0");
    let Some(file) = std::env::var("LAMBDA_OS_ENV")
        .ok()
        .filter(|f| !f.is_empty())
    else {
        assert!(
            !gate,
            "LAMBDA_OPENSTACK_CONTRACT is set but LAMBDA_OS_ENV is not: point it at $LAMBDA_HOME/openstack/env"
        );
        eprintln!("no OpenStack target (LAMBDA_OS_ENV); skipped outside CI");
        return None;
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("LAMBDA_OS_ENV={file}: {e}; is the test OpenStack up (scripts/openstack/up.sh)?")
    });
    Some(parse_openrc(&text))
}

async fn connect(openrc: &str) -> OpenStack {
    OpenStack::connect(CloudConfig::from_openrc_file(openrc.as_ref()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the OpenStack of {openrc}: {e}"))
}

async fn controller(
    etcd: &Etcd,
    os: OpenStack,
    ns: &str,
    instance: &str,
    stop: &CancellationToken,
) {
    let swarm = Swarm::connect(Some(&swarm_env("DOCKER_HOST")))
        .await
        .expect("the Swarm manager is not running: run scripts/swarm.sh up");
    let cfg = ControllersConfig {
        namespace: Some(ns.to_string()),
        cluster: Some(ClusterConfig {
            cloud: os,
            swarm,
            join_addr: swarm_env("LAMBDA_SWARM_JOIN_ADDR"),
            advertise_addr: None,
            instance: instance.to_string(),
            images: runtime_images(),
            builder_url: None,
            timings: ClusterTimings {
                poll: Duration::from_millis(500),
                sweep_every: Duration::from_secs(5),
                ..ClusterTimings::default()
            },
        }),
        ..Default::default()
    };
    tokio::spawn(reconcilers::run_all(
        etcd.store().await,
        Metrics::new(),
        cfg,
        stop.clone(),
    ));
}

/// A pool of the test cloud's image, flavor and network; with its key pair (which belongs to
/// the platform project's user only) when `key`.
fn pool(name: &str, v: &BTreeMap<String, String>, replicas: u32, key: bool) -> String {
    let key = if key {
        format!("  keyPair: {}\n", v["LAMBDA_OS_KEYPAIR"])
    } else {
        String::new()
    };
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  image:\n    glanceImage: {}\n  flavor: {}\n  network: {}\n{key}  securityGroups: [default]\n  replicas: {replicas}\n  maxSurge: 3\n",
        v["LAMBDA_OS_IMAGE"], v["LAMBDA_OS_FLAVOR"], v["LAMBDA_OS_NETWORK"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_servers_on_the_real_openstack() {
    let Some(v) = target() else { return };
    let os = connect(&v["LAMBDA_OS_OPENRC"]).await;
    let admin = connect(&v["LAMBDA_OS_OPENRC_ADMIN"]).await;
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let id8 = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (instance, ns) = (format!("os-{id8}"), format!("os-{id8}"));
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    controller(&etcd, os.clone(), &ns, &instance, &stop).await;
    let mine = ServerFilter {
        tags: vec![instance_tag(&instance)],
        ..Default::default()
    };

    let apply = |yaml: String| {
        let (ok, out, err) = lambda(&etcd, &["apply", "-n", &ns, "-f", "-"], Some(&yaml));
        assert!(ok, "{out}{err}");
    };
    apply(pool("workers", &v, 2, true));
    let nodes: Vec<Object<NodeSpec>> =
        eventually("2 servers ACTIVE", Duration::from_secs(120), async || {
            let nodes = store.list::<NodeSpec>(Some(&ns)).await.ok()?.items;
            // Two reconcilers write a Node's status: wait until membership has seen the
            // server too (Joined moves from WaitingForServer to WaitingForJoin).
            (nodes.len() == 2
                && nodes.iter().all(|n| {
                    n.status.as_ref().is_some_and(|s| {
                        s.is_true("ServerReady")
                            && s.condition("Joined").map(|c| c.reason.as_str())
                                == Some("WaitingForJoin")
                    })
                }))
            .then_some(nodes)
        })
        .await;
    let join_addr = swarm_env("LAMBDA_SWARM_JOIN_ADDR");
    for n in &nodes {
        let st = n.status.clone().unwrap();
        assert_eq!(st.vm_state.as_deref(), Some("ACTIVE"));
        assert!(!st.addresses.is_empty(), "no addresses: {st:?}");
        // The fake driver never runs user-data: the node waits to join, it is not Ready.
        assert!(!st.is_true("Ready"));
        assert_eq!(
            st.condition("Joined").map(|c| c.reason.as_str()),
            Some("WaitingForJoin")
        );
        let s = admin
            .compute()
            .get_server(st.server_id.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(s.flavor_name(), Some(v["LAMBDA_OS_FLAVOR"].as_str()));
        assert_eq!(s.image_id(), Some(v["LAMBDA_OS_IMAGE_ID"].as_str()));
        assert!(
            s.addresses.contains_key(&v["LAMBDA_OS_NETWORK"]),
            "{:?}",
            s.addresses
        );
        assert_eq!(s.key_name.as_deref(), Some(v["LAMBDA_OS_KEYPAIR"].as_str()));
        assert!(s.security_groups.iter().any(|g| g.name == "default"));
        let uid = n.metadata.uid.clone().unwrap();
        for t in [
            TAG_MANAGED.to_string(),
            instance_tag(&instance),
            owner_tag(&uid),
        ] {
            assert!(s.tags.contains(&t), "tag {t} missing: {:?}", s.tags);
        }
        let md = |k: &str| s.metadata.get(k).map(String::as_str);
        assert_eq!(md("lambda:kind"), Some("Node"));
        assert_eq!(md("lambda:name"), Some(n.metadata.name.as_str()));
        assert_eq!(md("lambda:uid"), Some(uid.as_str()));
        assert_eq!(md("lambda:pool"), Some("workers"));
        assert_eq!(md("lambda:instance"), Some(instance.as_str()));
        let ud = base64::engine::general_purpose::STANDARD
            .decode(s.user_data.clone().expect("admin reads the user data"))
            .unwrap();
        let ud = String::from_utf8(ud).unwrap();
        assert!(ud.starts_with("#!/bin/sh"), "{ud}");
        assert!(ud.contains("docker swarm join --token SWMTKN-"), "{ud}");
        assert!(ud.contains(&join_addr), "{ud}");
    }

    // Scale down: one server deleted, the other kept.
    apply(pool("workers", &v, 1, true));
    let left = eventually("1 server left", Duration::from_secs(120), async || {
        let servers = os.compute().list_servers(&mine).await.ok()?;
        let nodes = store.list::<NodeSpec>(Some(&ns)).await.ok()?.items;
        (servers.len() == 1 && nodes.len() == 1).then_some(servers)
    })
    .await;
    let gone: Vec<_> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.server_id.clone())
        .filter(|id| *id != left[0].id)
        .collect();
    assert_eq!(gone.len(), 1);
    assert!(
        os.compute()
            .get_server(&gone[0])
            .await
            .is_err_and(|e| e.is_not_found())
    );

    // A project out of quota: the node says so in a condition (and keeps retrying slowly).
    let quota = connect(&v["LAMBDA_OS_OPENRC_QUOTA_TEST"]).await;
    let qns = format!("{ns}-q");
    controller(&etcd, quota.clone(), &qns, &format!("{instance}q"), &stop).await;
    let (ok, out, err) = lambda(
        &etcd,
        &["apply", "-n", &qns, "-f", "-"],
        Some(&pool("small", &v, 2, false)),
    );
    assert!(ok, "{out}{err}");
    let limit: usize = v
        .get("LAMBDA_OS_QUOTA_TEST_INSTANCES_QUOTA")
        .and_then(|q| q.parse().ok())
        .unwrap_or(1);
    let mut seen = String::new();
    eventually(
        "a node reports QuotaExceeded",
        Duration::from_secs(120),
        async || {
            let nodes = store.list::<NodeSpec>(Some(&qns)).await.ok()?.items;
            let now: Vec<String> = nodes
                .iter()
                .filter_map(|n| n.status.as_ref()?.condition("ServerReady"))
                .map(|c| format!("{}: {}", c.reason, c.message))
                .collect();
            let now = now.join("; ");
            if now != seen {
                eprintln!("quota pool: {now}");
                seen = now;
            }
            nodes
                .iter()
                .any(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.condition("ServerReady"))
                        .is_some_and(|c| {
                            c.reason == "QuotaExceeded"
                                && c.message.to_lowercase().contains("quota")
                        })
                })
                .then_some(())
        },
    )
    .await;
    let qservers = quota
        .compute()
        .list_servers(&ServerFilter::default())
        .await
        .unwrap();
    assert!(
        qservers.len() <= limit,
        "more servers than the quota allows: {}",
        qservers.len()
    );

    // Deleting the pools deletes their servers.
    for (pool_ns, name) in [(&ns, "workers"), (&qns, "small")] {
        let (ok, out, err) = lambda(
            &etcd,
            &[
                "delete",
                "nodepool",
                name,
                "-n",
                pool_ns,
                "--wait",
                "--timeout",
                "120s",
            ],
            None,
        );
        assert!(ok, "{out}{err}");
    }
    assert!(os.compute().list_servers(&mine).await.unwrap().is_empty());
    let q = ServerFilter {
        tags: vec![instance_tag(&format!("{instance}q"))],
        ..Default::default()
    };
    assert!(quota.compute().list_servers(&q).await.unwrap().is_empty());
}
