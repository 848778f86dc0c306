//! The snapshot reconciler end to end on `lambda cloud` (servers are Docker engines in network
//! namespaces on lambda0 that run their user-data) with the real Swarm manager engine (the
//! runtime images builders download from the builder endpoint), a real etcd and in-process
//! controllers; and on the real OpenStack up to createImage ([`openstack`]).
//!
//! Needs `scripts/swarm.sh up` (the manager and lambda0) and `scripts/images.sh` (the runtime
//! images); the test command runs both, and these tests fail, never skip, without them. Each
//! test has its own `lambda cloud` (addresses from its own range within .150–.169 of lambda0),
//! etcd, namespace and platform instance. The controllers run on the test's runtime, so the
//! tests use a multi-threaded one (the `lambda` CLI calls block).

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod openstack;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::{Harness, Target, docker, fast_timings};
use lambda::api::{ObjectKey, Runtime, SnapshotImageSpec};
use lambda::openstack::{ImageStatus, NetworkSpec, ServerSpec, ServerStatus};
use lambda::reconcilers::cluster::ClusterTimings;
use lambda::reconcilers::snapshot::record;

const BASE: &str = "baseImage: debian-12\nflavor: m1.small\nnetwork: lambda-net\n";

/// A setup script that never lets the builder phone home: it waits until the builder's engine
/// is gone (the server was deleted), then removes the build's work dir (its own dir) and ends
/// its user-data shell without a report — on a VM the VM itself would be gone; here the script
/// runs on the host and would outlive its server.
const NEVER_PHONES_HOME: &str = "setupScript: |\n  echo waiting forever\n  while docker info >/dev/null 2>&1; do sleep 1; done\n  rm -rf \"$(dirname \"$0\")\"\n  kill -KILL $PPID\n";

fn image(h: &Harness, rt: Runtime) -> String {
    h.images
        .0
        .get(&rt)
        .cloned()
        .unwrap_or_else(|| panic!("no {} runtime image configured", rt.as_str()))
}

async fn records_left(h: &Harness) -> usize {
    record::list(&h.store).await.expect("list records").0.len()
}

async fn assert_image_gone(h: &Harness, id: &str) {
    let start = Instant::now();
    loop {
        match h.cloud.image().get_image(id).await {
            Err(e) if e.is_not_found() => return,
            Ok(i) if i.status == ImageStatus::Deleted => return,
            other => assert!(
                start.elapsed() < Duration::from_secs(30),
                "image {id} not deleted: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_image_builds_and_its_image_boots_nodes_that_already_hold_the_runtime_images() {
    let mut h = Harness::start(
        Target::Emulator { first_host: 150 },
        "10.251.0.1",
        fast_timings(),
    )
    .await;
    let shell = image(&h, Runtime::Shell);
    let t0 = Instant::now();
    h.apply(
        "base",
        // The setup script's work is baked in too: it tags an image the node must hold.
        &format!(
            "{BASE}runtimes: [shell]\nsetupScript: |\n  echo \"custom setup on $(hostname)\"\n  docker tag \"$(docker image ls -q | head -n 1)\" lambda-test/setup-ran:1\n"
        ),
    );
    let (_, builder) = h.wait_builder("base").await;
    let server = h
        .cloud
        .compute()
        .get_server(&builder)
        .await
        .expect("builder");
    assert_eq!(server.name, format!("lambda-build-{}-base", h.ns));
    assert_eq!(server.metadata["lambda:kind"], "SnapshotImage");
    assert_eq!(server.metadata["lambda:instance"], h.instance);
    let (ok, out, err) = common::lambda(
        &h.etcd,
        &[
            "wait",
            "si/base",
            "--for",
            "condition=Ready",
            "--timeout",
            "240s",
            "-n",
            &h.ns,
        ],
        None,
    );
    if !ok {
        panic!("lambda wait failed: {out}{err}\n{}", h.state("base").await);
    }
    let built = h.wait_ready("base", Duration::from_secs(10)).await;
    eprintln!(
        "snapshot with the shell runtime built in {:?}",
        t0.elapsed()
    );
    let st = built.status.clone().unwrap_or_default();
    assert_eq!(st.phase.as_deref(), Some("Ready"));
    assert_eq!(st.image_generation, Some(built.generation()));
    assert_eq!(
        st.runtime_images,
        BTreeMap::from([("shell".to_string(), shell.clone())])
    );
    assert_eq!(st.builder_server_id, None);
    let image_id = st.image_id.clone().expect("status.imageId");
    let msg = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message;
    assert!(msg.contains(&image_id) && msg.contains(&shell), "{msg}");
    h.wait_server_gone(&builder, Duration::from_secs(60)).await;

    // Glance says what the image holds; the emulator baked the builder's engine into it.
    let img = h.cloud.image().get_image(&image_id).await.expect("image");
    assert_eq!(img.status, ImageStatus::Active);
    assert_eq!(
        img.name.as_deref(),
        Some(format!("lambda-{}-base-g{}", h.ns, built.generation()).as_str())
    );
    assert_eq!(img.properties["lambda:runtime:shell"], shell.as_str());
    assert_eq!(
        img.properties["lambda:uid"],
        built.metadata.uid.clone().unwrap_or_default().as_str()
    );

    // A node booted from the image already holds the runtime image.
    let node = h
        .cloud
        .create_server(&ServerSpec {
            name: "node-from-snapshot".into(),
            flavor: "m1.tiny".into(),
            image: image_id.clone(),
            networks: NetworkSpec::Named(vec!["lambda-net".into()]),
            ..Default::default()
        })
        .await
        .expect("boot a node from the snapshot");
    h.cloud
        .compute()
        .wait_for_server(&node, ServerStatus::Active, Duration::from_secs(120))
        .await
        .expect("node ACTIVE");
    let ls = docker(
        &h.engine(&node),
        &["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert!(
        ls.lines().any(|l| l == shell),
        "node's engine images:\n{ls}"
    );
    assert!(
        ls.lines().any(|l| l == "lambda-test/setup-ran:1"),
        "the setup script's image is missing on the node:\n{ls}"
    );
    h.cloud
        .compute()
        .delete_server(&node)
        .await
        .expect("delete node");
    h.wait_server_gone(&node, Duration::from_secs(60)).await;

    // Deleting the SnapshotImage deletes its image; nothing is left.
    h.cli(&["delete", "si", "base", "--wait", "--timeout", "120s"]);
    assert_image_gone(&h, &image_id).await;
    h.assert_nothing_left(Duration::from_secs(60)).await;
    assert_eq!(records_left(&h).await, 0, "build records left");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_setup_script_ends_in_setup_failed_with_the_builder_deleted_until_the_spec_changes()
 {
    let mut h = Harness::start(
        Target::Emulator { first_host: 153 },
        "10.251.0.1",
        fast_timings(),
    )
    .await;
    h.apply(
        "broken",
        &format!("{BASE}runtimes: [shell]\nsetupScript: |\n  echo \"about to fail\"\n  false\n  echo never\n"),
    );
    let failed = h
        .wait_reason("broken", "SetupFailed", Duration::from_secs(180))
        .await;
    let st = failed.status.clone().unwrap_or_default();
    let msg = st.last_error.clone().unwrap_or_default();
    assert!(
        msg.contains("step setup-script failed (exit 1)") && msg.contains("about to fail"),
        "{msg}"
    );
    assert!(!msg.contains("never"), "{msg}");
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.image_id, None);
    assert_eq!(st.builder_server_id, None);
    h.assert_nothing_left(Duration::from_secs(60)).await;
    assert_eq!(records_left(&h).await, 0, "build records left");

    // The condition stays (resyncs come every 5 s here) and no new builder starts...
    tokio::time::sleep(Duration::from_secs(7)).await;
    let still = h.get("broken").await.expect("object");
    assert_eq!(
        still.status, failed.status,
        "status changed without a spec change"
    );
    assert!(h.servers().await.is_empty(), "a builder started again");

    // ...until the spec changes: the fixed spec builds.
    h.apply(
        "broken",
        &format!("{BASE}runtimes: [shell]\nsetupScript: echo fixed\n"),
    );
    let fixed = h.wait_ready("broken", Duration::from_secs(180)).await;
    let st = fixed.status.unwrap_or_default();
    assert!(st.image_id.is_some());
    assert_eq!(st.last_error, None);
    h.cli(&["delete", "si", "broken", "--wait", "--timeout", "120s"]);
    h.assert_nothing_left(Duration::from_secs(60)).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_builder_that_never_phones_home_times_out_and_orphaned_builders_are_swept() {
    let timings = ClusterTimings {
        max_build_timeout: Some(Duration::from_secs(10)),
        ..fast_timings()
    };
    let mut h = Harness::start(Target::Emulator { first_host: 156 }, "10.251.0.1", timings).await;
    h.apply(
        "silent",
        &format!("{BASE}runtimes: [shell]\n{NEVER_PHONES_HOME}"),
    );
    let timed_out = h
        .wait_reason("silent", "BuildTimeout", Duration::from_secs(90))
        .await;
    let st = timed_out.status.clone().unwrap_or_default();
    let msg = st.last_error.clone().unwrap_or_default();
    assert!(msg.contains("did not phone home within 10 s"), "{msg}");
    let (Some(start), Some(deadline)) = (st.build_started_at, st.build_deadline) else {
        panic!("build start and deadline not in status: {st:#?}");
    };
    assert_eq!((deadline - start).num_seconds(), 10);
    h.assert_nothing_left(Duration::from_secs(60)).await;

    // A builder whose object is removed behind the controller's back (no finalizer runs) is
    // swept, and so is its build record.
    h.apply(
        "orphan",
        &format!("{BASE}runtimes: [shell]\n{NEVER_PHONES_HOME}"),
    );
    let (_, builder) = h.wait_builder("orphan").await;
    let key = ObjectKey::new(&h.ns, "orphan");
    let keys = h.store.keys();
    for k in [
        keys.spec_key::<SnapshotImageSpec>(&key),
        keys.status_key::<SnapshotImageSpec>(&key),
    ] {
        h.etcd.etcdctl(&["del", &k]).expect("etcdctl del");
    }
    h.wait_server_gone(&builder, Duration::from_secs(60)).await;
    let start = Instant::now();
    while records_left(&h).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "orphaned record not swept"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    h.cli(&["delete", "si", "silent", "--wait", "--timeout", "120s"]);
    h.assert_nothing_left(Duration::from_secs(60)).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_spec_builds_a_new_image_and_deleting_mid_build_cleans_up() {
    let mut h = Harness::start(
        Target::Emulator { first_host: 160 },
        "10.251.0.1",
        fast_timings(),
    )
    .await;
    let (shell, python) = (image(&h, Runtime::Shell), image(&h, Runtime::Python3));
    h.apply("img", &format!("{BASE}runtimes: [shell]\n"));
    let first = h.wait_ready("img", Duration::from_secs(180)).await;
    let first_image = first
        .status
        .clone()
        .and_then(|s| s.image_id)
        .expect("image");

    // A new generation builds while the old image stays in use.
    let t0 = Instant::now();
    h.apply("img", &format!("{BASE}runtimes: [shell, python3]\n"));
    let (rebuilding, _) = h.wait_builder("img").await;
    assert!(rebuilding.generation() > first.generation());
    assert_eq!(
        rebuilding.status.clone().and_then(|s| s.image_id),
        Some(first_image.clone()),
        "the built image must stay in status while the next one builds"
    );
    let second = h.wait_ready("img", Duration::from_secs(300)).await;
    eprintln!(
        "snapshot with the shell and python3 runtimes built in {:?}",
        t0.elapsed()
    );
    let st = second.status.clone().unwrap_or_default();
    let second_image = st.image_id.clone().expect("image");
    assert_ne!(second_image, first_image);
    assert_eq!(
        st.runtime_images,
        BTreeMap::from([
            ("python3".to_string(), python.clone()),
            ("shell".to_string(), shell.clone())
        ])
    );
    assert_image_gone(&h, &first_image).await;
    h.wait_for(
        "img",
        "retired images deleted",
        Duration::from_secs(30),
        |o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.retired_image_ids.is_empty())
        },
    )
    .await;
    h.assert_nothing_left(Duration::from_secs(60)).await;

    // Deleting while a build runs removes its builder and every image.
    h.apply(
        "img",
        &format!("{BASE}runtimes: [shell]\n{NEVER_PHONES_HOME}"),
    );
    let (_, builder) = h.wait_builder("img").await;
    h.cli(&["delete", "si", "img", "--wait", "--timeout", "120s"]);
    h.wait_server_gone(&builder, Duration::from_secs(60)).await;
    assert_image_gone(&h, &second_image).await;
    h.assert_nothing_left(Duration::from_secs(60)).await;
    assert_eq!(records_left(&h).await, 0, "build records left");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_restarted_mid_build_carries_on_with_the_same_builder() {
    let mut h = Harness::start(
        Target::Emulator { first_host: 165 },
        "10.251.0.1",
        fast_timings(),
    )
    .await;
    h.apply(
        "restart",
        &format!("{BASE}runtimes: [shell]\nsetupScript: sleep 3\n"),
    );
    let (building, builder) = h.wait_builder("restart").await;
    let uid = building.metadata.uid.clone().expect("uid");
    h.stop_controllers().await;

    // With no controller running, the builder phones home to the endpoint (state in etcd).
    let start = Instant::now();
    loop {
        let (records, _) = record::list(&h.store).await.expect("records");
        if records
            .iter()
            .any(|r| r.record.uid == uid && r.record.phone_home.is_some())
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            panic!("no phone-home recorded\n{}", h.state("restart").await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let paused = h.get("restart").await.expect("object");
    assert_eq!(
        paused.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Building")
    );

    // A new controller takes the build over: same builder, one image.
    h.start_controllers();
    let ready = h.wait_ready("restart", Duration::from_secs(120)).await;
    let image_id = ready
        .status
        .clone()
        .and_then(|s| s.image_id)
        .expect("image");
    let events = h
        .store
        .list::<lambda::api::EventSpec>(Some(&h.ns))
        .await
        .expect("events");
    let created: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.spec.reason == "BuilderCreated")
        .map(|e| e.spec.message.clone())
        .collect();
    assert_eq!(created.len(), 1, "builders created: {created:?}");
    assert!(created[0].contains(&builder), "{created:?}");
    let name = format!("lambda-{}-restart-g{}", h.ns, ready.generation());
    let images = h
        .cloud
        .image()
        .list_images_by_name(&name)
        .await
        .expect("images");
    assert_eq!(
        images.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![image_id]
    );
    h.wait_server_gone(&builder, Duration::from_secs(60)).await;
    h.cli(&["delete", "si", "restart", "--wait", "--timeout", "120s"]);
    h.assert_nothing_left(Duration::from_secs(60)).await;
    h.shutdown().await;
}
