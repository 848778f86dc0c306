//! Node pools end to end on `lambda cloud` + the real Swarm: a pool's Nodes become Nova servers
//! (Docker engines in network namespaces) booted from an image holding the runtime images,
//! whose user-data joins them to the Swarm; functions spread onto them and answer through the
//! gateway while the pool scales 2 → 3 → 1 under load; a worker whose engine is killed behind
//! the controller's back is replaced; a controller killed mid-scale-up makes no duplicate
//! servers; a new snapshot image is rolled out one node at a time; deleting the pool leaves no
//! server, Swarm node or namespace behind.
//!
//! Needs `scripts/swarm.sh up` and `scripts/images.sh` (the test command runs both); fails
//! loudly without them. Uses addresses 10.251.0.170–199 of the project bridge.

mod autoscale;
#[path = "../common/mod.rs"]
mod common;
mod harness;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{eventually, lambda, runtime_images};
use lambda::api::{Conditions, FunctionSpec, SnapshotImageSpec};
use lambda::reconcilers::cluster::owner_tag;

use harness::{Bed, Load, SNAPSHOT, netns_count, pool_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_boot_join_scale_under_load_heal_and_leave_nothing_behind() {
    let mut bed = Bed::start(170).await;
    // The pool and its snapshot image applied together: nodes wait for the image, which the
    // snapshot controller builds on a builder server (the shell runtime image baked in).
    bed.apply(&format!("{SNAPSHOT}---\n{}", pool_yaml("workers", 2)));
    let si = eventually(
        "the snapshot image built",
        Duration::from_secs(120),
        async || {
            let si = bed
                .store
                .get::<SnapshotImageSpec>(&bed.ns, "worker")
                .await
                .ok()?;
            si.status
                .as_ref()
                .is_some_and(|s| s.is_true("Ready"))
                .then_some(si)
        },
    )
    .await;
    let st = si.status.unwrap();
    let image = st.image_id.clone().expect("image id");
    let shell = runtime_images().0[&lambda::api::function::Runtime::Shell].clone();
    assert_eq!(st.runtime_images.get("shell"), Some(&shell), "{st:?}");

    // replicas: 2 → two Ready nodes, Swarm workers labelled with pool, flavor and nodeLabels.
    let nodes = bed.wait_pool("workers", 2, Duration::from_secs(90)).await;
    for n in &nodes {
        let s = n.status.clone().unwrap();
        let id = s.swarm_node_id.clone().expect("swarm node id in status");
        let sn = bed.swarm.inspect_node(&id).await.unwrap();
        let l = sn.spec.unwrap().labels.unwrap();
        assert_eq!(l.get("lambda.pool").map(String::as_str), Some("workers"));
        assert_eq!(l.get("lambda.flavor").map(String::as_str), Some("m1.small"));
        assert_eq!(l.get("tier").map(String::as_str), Some("test"));
        assert_eq!(s.swarm_availability.as_deref(), Some("active"));
        assert!(
            s.addresses.iter().any(|a| a.starts_with("10.251.0.")),
            "{s:?}"
        );
        // The server carries the ownership tags and metadata, and the join user-data.
        let server = bed
            .os
            .compute()
            .get_server(s.server_id.as_ref().unwrap())
            .await
            .unwrap();
        assert!(
            server
                .tags
                .contains(&owner_tag(n.metadata.uid.as_ref().unwrap()))
        );
        assert_eq!(
            server.metadata.get("lambda:pool").map(String::as_str),
            Some("workers")
        );
        assert_eq!(server.image_id(), Some(image.as_str()));
        // Booted from the snapshot: the runtime image is there before any task needs it.
        let sock = format!(
            "unix://{}/servers/{}/docker.sock",
            bed.cloud.dir.display(),
            &server.id[..8]
        );
        let out = Command::new("docker")
            .args([
                "-H",
                &sock,
                "image",
                "ls",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&shell),
            "{out:?}"
        );
    }

    // A function with 4 replicas spreads over both workers and answers through the gateway.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    bed.apply(
        "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata:\n  name: echo\nspec:\n  runtime: shell\n  code:\n    inline: \"cat\"\n  minReplicas: 4\n  maxReplicas: 8\n",
    );
    let f = eventually(
        "function Ready on the workers",
        Duration::from_secs(120),
        async || {
            let f = bed.store.get::<FunctionSpec>(&bed.ns, "echo").await.ok()?;
            f.status
                .as_ref()
                .is_some_and(|s| s.is_true("Ready"))
                .then_some(f)
        },
    )
    .await;
    let spread: BTreeSet<String> = f
        .status
        .unwrap()
        .endpoints
        .iter()
        .map(|e| e.node_id.clone())
        .collect();
    assert_eq!(
        spread.len(),
        2,
        "replicas not spread over both workers: {spread:?}"
    );
    assert_eq!(bed.invoke(&http, "echo").await.unwrap(), "{\"n\": 1}");

    // Scale 2 → 3 → 1 while a load loop invokes the function: no failed invocation.
    let load = Load::start(&bed, &http, "echo", 4);
    bed.apply(&pool_yaml("workers", 3));
    bed.wait_pool("workers", 3, Duration::from_secs(90)).await;
    let before: BTreeSet<String> = bed.servers().await.into_iter().map(|s| s.id).collect();
    bed.apply(&pool_yaml("workers", 1));
    let left = bed.wait_pool("workers", 1, Duration::from_secs(120)).await;
    // The function's replicas all run on the remaining worker again.
    let last_worker = left[0]
        .status
        .as_ref()
        .and_then(|s| s.swarm_node_id.clone());
    eventually(
        "function Ready on one worker",
        Duration::from_secs(60),
        async || {
            let f = bed.store.get::<FunctionSpec>(&bed.ns, "echo").await.ok()?;
            let s = f.status?;
            (s.is_true("Ready")
                && s.endpoints
                    .iter()
                    .all(|e| Some(&e.node_id) == last_worker.as_ref()))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failures) = load.finish().await;
    eprintln!("load during scaling: {ok} ok, {} failed", failures.len());
    assert!(ok > 100, "the load loop barely ran: {ok}");
    assert!(
        failures.is_empty(),
        "failed invocations while scaling: {failures:?}"
    );
    let after: BTreeSet<String> = bed.servers().await.into_iter().map(|s| s.id).collect();
    assert_eq!(after.len(), 1);
    for gone in before.difference(&after) {
        assert!(
            bed.os
                .compute()
                .get_server(gone)
                .await
                .is_err_and(|e| e.is_not_found()),
            "server {gone} of a removed node still exists"
        );
    }

    // A worker whose engine dies behind the controller's back is replaced.
    let victim = left[0].clone();
    let vs = victim.status.clone().unwrap();
    let sid = vs.server_id.clone().unwrap();
    let pid = std::fs::read_to_string(
        bed.cloud
            .dir
            .join("servers")
            .join(&sid[..8])
            .join("dockerd.pid"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let replaced = eventually(
        "the dead worker's node replaced",
        Duration::from_secs(120),
        async || {
            let nodes = bed.nodes().await;
            let fresh = nodes.iter().any(|n| {
                n.metadata.name != victim.metadata.name
                    && n.status.as_ref().is_some_and(|s| s.is_true("Ready"))
            });
            let old_gone = nodes
                .iter()
                .all(|n| n.metadata.name != victim.metadata.name);
            (fresh && old_gone).then_some(nodes)
        },
    )
    .await;
    assert_eq!(replaced.len(), 1);
    bed.wait_pool("workers", 1, Duration::from_secs(60)).await;
    assert!(
        bed.os
            .compute()
            .get_server(&sid)
            .await
            .is_err_and(|e| e.is_not_found())
    );
    let events = lambda(&bed.etcd, &["get", "events", "-n", &bed.ns], None).1;
    assert!(events.contains("NodeDown"), "{events}");

    // The controller killed mid-scale-up: after a restart, no duplicate servers.
    bed.apply(&pool_yaml("workers", 3));
    eventually("a server requested", Duration::from_secs(30), async || {
        (bed.servers().await.len() > 1).then_some(())
    })
    .await;
    bed.kill_controller().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    bed.start_controller();
    let nodes = bed.wait_pool("workers", 3, Duration::from_secs(120)).await;
    let servers = bed.servers().await;
    assert_eq!(
        servers.len(),
        3,
        "duplicate servers after a controller crash"
    );
    for n in &nodes {
        let tag = owner_tag(n.metadata.uid.as_ref().unwrap());
        assert_eq!(
            servers.iter().filter(|s| s.tags.contains(&tag)).count(),
            1,
            "node {}",
            n.metadata.name
        );
    }

    // A changed snapshot spec builds a new image; the pool rolls onto it one node at a time
    // (one node beyond the desired count at most), the old nodes drained and deleted.
    let old_image = bed
        .store
        .get::<SnapshotImageSpec>(&bed.ns, "worker")
        .await
        .unwrap()
        .status
        .unwrap()
        .image_id
        .unwrap();
    bed.apply(&SNAPSHOT.replace(
        "runtimes: [shell]\n",
        "runtimes: [shell]\n  setupScript: \"echo v2 > /dev/null\"\n",
    ));
    let (mut most, mut least_ready) = (0, usize::MAX);
    let new_image = eventually(
        "rolled onto the new image",
        Duration::from_secs(180),
        async || {
            let si = bed
                .store
                .get::<SnapshotImageSpec>(&bed.ns, "worker")
                .await
                .ok()?;
            let image = si.status?.image_id?;
            let nodes = bed.nodes().await;
            let live: Vec<_> = nodes
                .iter()
                .filter(|n| n.metadata.deletion_timestamp.is_none())
                .collect();
            most = most.max(live.len());
            let ready = live
                .iter()
                .filter(|n| n.status.as_ref().is_some_and(|s| s.is_true("Ready")))
                .count();
            if image != old_image {
                least_ready = least_ready.min(ready);
            }
            (image != old_image
                && nodes.len() == 3
                && ready == 3
                && nodes.iter().all(|n| n.spec.image == image))
            .then_some(image)
        },
    )
    .await;
    eprintln!("rollout: at most {most} nodes, at least {least_ready} ready");
    assert!(
        most <= 4,
        "more than one node beyond the desired count during the rollout: {most}"
    );
    assert!(
        least_ready >= 2,
        "ready nodes dropped to {least_ready} during the rollout"
    );
    bed.wait_pool("workers", 3, Duration::from_secs(60)).await;
    for s in bed.servers().await {
        assert_eq!(s.image_id(), Some(new_image.as_str()));
    }
    eventually(
        "the old image retired",
        Duration::from_secs(60),
        async || {
            bed.os
                .image()
                .get_image(&old_image)
                .await
                .is_err_and(|e| e.is_not_found())
                .then_some(())
        },
    )
    .await;

    // Deleting the pool and the image leaves no server, image, Swarm node or namespace behind.
    let (ok_del, out, err) = lambda(
        &bed.etcd,
        &["delete", "nodepool", "workers", "-n", &bed.ns, "--wait"],
        None,
    );
    assert!(ok_del, "{out}{err}");
    let (ok_del, out, err) = lambda(
        &bed.etcd,
        &["delete", "snapshotimage", "worker", "-n", &bed.ns, "--wait"],
        None,
    );
    assert!(ok_del, "{out}{err}");
    assert!(
        bed.os
            .image()
            .get_image(&new_image)
            .await
            .is_err_and(|e| e.is_not_found()),
        "the snapshot's image is left"
    );
    eventually("nothing left", Duration::from_secs(120), async || {
        (bed.nodes().await.is_empty()
            && bed.servers().await.is_empty()
            && bed.swarm_nodes().await.is_empty()
            && netns_count(&bed.cloud) == 0)
            .then_some(())
    })
    .await;
    let down: Vec<_> = bed
        .swarm
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| {
            lambda::swarm::node_address(n).is_some_and(|a| {
                a.rsplit('.')
                    .next()
                    .and_then(|x| x.parse::<u8>().ok())
                    .is_some_and(|x| (170..200).contains(&x))
            })
        })
        .collect();
    assert!(
        down.is_empty(),
        "Swarm nodes of this test's addresses left: {down:?}"
    );
}
