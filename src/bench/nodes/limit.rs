//! The physical limit the nodes benchmark compares against (servers straight through Nova with
//! the join script), and the worker image it boots from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::openstack::{NetworkSpec, OpenStack, ServerSpec, ServerStatus};
use crate::reconcilers::node::userdata;
use crate::swarm::node_address;

use super::{NodesBench, NodesBenchError, addresses, observe};

/// The physical limit: N servers straight through Nova with the join script, until their
/// engines are ready workers; then removed. Returns (all ready, all gone).
pub(super) async fn raw(cfg: &NodesBench) -> Result<(Duration, Duration), NodesBenchError> {
    let c = &cfg.cluster;
    let tag = format!(
        "bench-raw-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let token = c.swarm.join_tokens().await?.worker.unwrap_or_default();
    let script = userdata::render(&userdata::JoinScript {
        node: "bench/raw",
        token: &token,
        join_addr: &c.join_addr,
    })
    .ok_or_else(|| NodesBenchError::Failed("cannot render the join script".into()))?;
    let t0 = Instant::now();
    let created = join_all((0..cfg.nodes).map(|i| {
        let spec = ServerSpec {
            name: format!("{tag}-{i}"),
            flavor: cfg.flavor.clone(),
            image: cfg.image.clone(),
            networks: cfg
                .network
                .clone()
                .map_or(NetworkSpec::Auto, |n| NetworkSpec::Named(vec![n])),
            user_data: Some(script.clone().into_bytes()),
            tags: vec![tag.clone()],
            ..Default::default()
        };
        async move { c.cloud.create_server(&spec).await }
    }))
    .await;
    let mut result = Ok(Duration::ZERO);
    for r in &created {
        if let Err(e) = r {
            result = Err(NodesBenchError::Failed(format!("raw create: {e}")));
        }
    }
    if result.is_ok() {
        result = loop {
            let (servers, ready) = observe(&c.cloud, &c.swarm, &tag).await?;
            let joined = servers
                .iter()
                .filter(|s| addresses(s).iter().any(|a| ready.contains(a)))
                .count();
            if joined == cfg.nodes {
                break Ok(t0.elapsed());
            }
            if t0.elapsed() > cfg.timeout {
                break Err(NodesBenchError::Failed(format!(
                    "raw: {joined}/{} joined after {:?}",
                    cfg.nodes, cfg.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
    }
    // Remove: Swarm nodes (drain + remove), then the servers; measured until Nova says gone.
    let t1 = Instant::now();
    let servers = observe(&c.cloud, &c.swarm, &tag).await?.0;
    let addrs: Vec<String> = servers.iter().flat_map(addresses).collect();
    for n in c.swarm.list_nodes().await? {
        if node_address(&n).is_some_and(|a| addrs.contains(&a))
            && let Some(id) = &n.id
        {
            c.swarm.remove_node(id, true).await?;
        }
    }
    for s in &servers {
        c.cloud.compute().delete_server(&s.id).await?;
    }
    // Gone when Nova no longer lists them, polled like the controller's run below.
    while !observe(&c.cloud, &c.swarm, &tag).await?.0.is_empty() {
        if t1.elapsed() > cfg.timeout {
            return Err(NodesBenchError::Failed("raw: servers not gone".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((result?, t1.elapsed()))
}

/// A Glance image whose engines hold `runtime_image` (of the manager at `docker_host`), made
/// the way a snapshot builder makes one on `lambda cloud` (whose data dir `emulator_dir` gives
/// the builder's engine socket): a server from `base_image`, the image loaded into its engine,
/// `createImage`, the server deleted.
pub async fn prepare_image(
    os: &OpenStack,
    emulator_dir: &std::path::Path,
    docker_host: &str,
    runtime_image: &str,
    base_image: &str,
    name: &str,
) -> Result<String, NodesBenchError> {
    let c = os.compute();
    let id = os
        .create_server(&ServerSpec {
            name: format!("{name}-builder"),
            flavor: "m1.tiny".into(),
            image: base_image.into(),
            networks: NetworkSpec::Auto,
            ..Default::default()
        })
        .await?;
    let result = async {
        c.wait_for_server(&id, ServerStatus::Active, Duration::from_secs(120))
            .await?;
        let sock = format!(
            "unix://{}/servers/{}/docker.sock",
            emulator_dir.display(),
            &id[..8.min(id.len())]
        );
        let st = tokio::process::Command::new("sh")
            .args([
                "-c",
                "docker -H \"$1\" save \"$3\" | docker -H \"$2\" load -q",
                "load",
                docker_host,
                &sock,
                runtime_image,
            ])
            .status()
            .await
            .map_err(|e| NodesBenchError::Failed(format!("docker save | load: {e}")))?;
        if !st.success() {
            return Err(NodesBenchError::Failed(format!(
                "loading {runtime_image} into the builder's engine failed ({st})"
            )));
        }
        let image = c.create_image(&id, name, &BTreeMap::new()).await?;
        os.image()
            .wait_for_active(&image, Duration::from_secs(300))
            .await?;
        Ok(image)
    }
    .await;
    c.delete_server(&id).await?;
    c.wait_for_server_gone(&id, Duration::from_secs(120))
        .await?;
    result
}
