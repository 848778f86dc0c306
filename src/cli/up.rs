//! `lambda up` and `lambda down`: the whole local platform on one machine — etcd, a Docker
//! Swarm, the runtime images, the controller and the gateway — then the examples, waited for
//! and invoked. Idempotent: running `up` again only starts what is not running. `down` stops
//! and removes everything `up` created (by the PIDs it recorded), nothing else.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::api::{ConditionStatus, Conditions, FunctionSpec};
use crate::gateway::apikeys;

use super::GlobalArgs;
use super::daemons::{exports, pid_alive, script, start_daemon, step, stop_daemon, wait_listening};

/// Flags of `lambda up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The project checkout holding scripts/ and examples/ (default: the current directory
    /// when it has them, else the checkout this binary was built from).
    #[arg(long, env = "LAMBDA_PROJECT_DIR")]
    pub project_dir: Option<PathBuf>,
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway_listen: std::net::SocketAddr,
    /// Manifests applied once the platform runs.
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,
    /// How long to wait for the example functions to become Ready.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Flags of `lambda down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    #[arg(long, env = "LAMBDA_PROJECT_DIR")]
    pub project_dir: Option<PathBuf>,
    /// Also delete the data (etcd data, Docker data roots, built images).
    #[arg(long)]
    pub purge: bool,
}

fn project_dir(given: &Option<PathBuf>) -> Result<PathBuf> {
    let candidates = [
        given.clone(),
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for c in candidates.into_iter().flatten() {
        if c.join("scripts/swarm.sh").is_file() {
            return Ok(c);
        }
    }
    bail!("cannot find the project checkout (scripts/swarm.sh); pass --project-dir")
}

/// Where `lambda up` runs `lambda cloud`.
const CLOUD_LISTEN: &str = "127.0.0.1:8780";
/// Where `lambda events` started by `lambda up` serves /metrics.
const EVENTS_METRICS: &str = "127.0.0.1:9467";

pub async fn up(g: &GlobalArgs, args: UpArgs) -> Result<()> {
    // The local platform's etcd, wherever the current context points.
    let g = &g.without_context();
    let dir = project_dir(&args.project_dir)?;
    let home = std::env::var("LAMBDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join(".lambda"));
    let state = home.join("platform");
    std::fs::create_dir_all(&state)?;

    step("etcd");
    script(&dir, "etcd.sh", &["up"]).await?;
    step("RabbitMQ (events and asynchronous invocations)");
    script(&dir, "rabbitmq.sh", &["up"]).await?;
    let broker_env = exports(&script(&dir, "rabbitmq.sh", &["env"]).await?);
    step("Docker Swarm (manager dockerd, swarm, overlay network)");
    script(&dir, "swarm.sh", &["up"]).await?;
    let swarm_env = exports(&script(&dir, "swarm.sh", &["env"]).await?);
    step("runtime images (agent + python3, node, shell)");
    script(&dir, "images.sh", &[]).await?;
    let mut env = swarm_env.clone();
    env.push(("LAMBDA_HOME".into(), home.display().to_string()));
    env.push((
        "LAMBDA_ETCD_ENDPOINTS".into(),
        g.etcd_endpoints().value.clone(),
    ));
    env.extend(broker_env.iter().cloned());
    let amqp_url = broker_env
        .iter()
        .find(|(k, _)| k == "LAMBDA_AMQP_URL")
        .map(|(_, v)| v.clone())
        .context("scripts/rabbitmq.sh env printed no LAMBDA_AMQP_URL")?;
    // The local cloud's Nova notifications go to the platform's broker, and the controller
    // finds that bus where examples/vm-events.yaml's EventSource says.
    env.push(("LAMBDA_CLOUD_NOTIFICATION_URL".into(), amqp_url.clone()));
    env.push(("OS_NOTIFICATION_URL".into(), amqp_url.clone()));
    let var = |k: &str, default: &str| {
        swarm_env
            .iter()
            .find(|(key, _)| key == k)
            .map_or_else(|| default.to_string(), |(_, v)| v.clone())
    };

    step("lambda cloud (the local OpenStack: worker VMs are Docker engines in network namespaces)");
    let cloud_dir = home.join("cloud");
    start_daemon(
        &state,
        "cloud",
        &[
            "cloud".into(),
            "--listen".into(),
            CLOUD_LISTEN.into(),
            "--data-dir".into(),
            cloud_dir.display().to_string(),
            "--bridge".into(),
            var("LAMBDA_BRIDGE", "lambda0"),
            "--bridge-cidr".into(),
            var("LAMBDA_BRIDGE_CIDR", "10.251.0.1/24"),
        ],
        &env,
    )?;
    wait_listening(
        CLOUD_LISTEN,
        &cloud_dir.join("openrc"),
        &state.join("cloud.log"),
    )
    .await?;

    step("controller (functions on the worker VMs, snapshot builder endpoint on the bridge)");
    start_daemon(
        &state,
        "controller",
        &[
            "controller".into(),
            "--metrics-addr".into(),
            "127.0.0.1:9464".into(),
            "--openrc".into(),
            cloud_dir.join("openrc").display().to_string(),
            "--builder-listen".into(),
            format!("{}:9466", var("LAMBDA_SWARM_MANAGER_ADDR", "10.251.0.1")),
            "--function-constraint".into(),
            "node.role==worker".into(),
        ],
        &env,
    )?;
    step("gateway");
    start_daemon(
        &state,
        "gateway",
        &[
            "gateway".into(),
            "--listen".into(),
            args.gateway_listen.to_string(),
        ],
        &env,
    )?;

    step("events listener (lambda.events and asynchronous invocations)");
    start_daemon(
        &state,
        "events",
        &[
            "events".into(),
            "--metrics-listen".into(),
            EVENTS_METRICS.into(),
        ],
        &env,
    )?;

    let store = g.store().await?;
    let token_file = state.join("token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let (_, t) =
                apikeys::create(&store, "lambda-up", &crate::gateway::authz::Access::admin())
                    .await?;
            std::fs::write(&token_file, &t)?;
            t
        }
    };

    step(&format!("applying {}", args.examples.display()));
    let examples = if args.examples.is_absolute() {
        args.examples.clone()
    } else {
        dir.join(&args.examples)
    };
    let docs = super::apply::load(&[examples], false, &g.namespace())?;
    let mut functions = Vec::new();
    let mut infra = Vec::new();
    for d in &docs {
        let res =
            crate::with_any_object!(&d.object, o, super::apply::apply_object(&store, o).await)?;
        let m = d.object.metadata();
        println!(
            "{}/{} {res}",
            d.object.kind().name().to_ascii_lowercase(),
            m.name
        );
        match d.object.kind() {
            crate::api::Kind::Function => {
                functions.push((m.namespace().to_string(), m.name.clone()))
            }
            k @ (crate::api::Kind::NodePool
            | crate::api::Kind::SnapshotImage
            | crate::api::Kind::WarmPool) => {
                infra.push((k, m.namespace().to_string(), m.name.clone()))
            }
            _ => {}
        }
    }

    step("waiting for the snapshot image, the worker VMs and the functions to become Ready");
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last = String::new();
    loop {
        let mut pending = Vec::new();
        let mut progress = Vec::new();
        for (kind, ns, name) in &infra {
            let ready = match kind {
                crate::api::Kind::NodePool => store
                    .get::<crate::api::NodePoolSpec>(ns, name)
                    .await?
                    .status
                    .and_then(|s| s.condition("Ready").cloned()),
                crate::api::Kind::WarmPool => store
                    .get::<crate::api::WarmPoolSpec>(ns, name)
                    .await?
                    .status
                    .and_then(|s| s.condition("Ready").cloned()),
                _ => store
                    .get::<crate::api::SnapshotImageSpec>(ns, name)
                    .await?
                    .status
                    .and_then(|s| s.condition("Ready").cloned()),
            };
            if let Some(c) = ready.filter(|c| c.status != ConditionStatus::True) {
                progress.push(format!(
                    "{}/{name}: {} {}",
                    kind.name().to_ascii_lowercase(),
                    c.reason,
                    c.message
                ));
            }
        }
        for (ns, name) in &functions {
            let f = store.get::<FunctionSpec>(ns, name).await?;
            let ready = f
                .status
                .as_ref()
                .and_then(|s| s.condition("Ready"))
                .filter(|c| c.observed_generation.is_none_or(|g| g >= f.generation()));
            match ready {
                Some(c) if c.status == ConditionStatus::True => {}
                Some(c) => pending.push(format!("{name}: {} {}", c.reason, c.message)),
                None => pending.push(format!("{name}: not observed yet")),
            }
        }
        if pending.is_empty() {
            break;
        }
        progress.extend(pending);
        let now = progress.join("; ");
        if now != last {
            eprintln!("    {now}");
            last = now;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "functions not Ready after {:?}: {last} (logs: {})",
                args.timeout,
                state.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let gateway = format!("http://{}", args.gateway_listen);
    let config = super::context::config_path()?;
    super::context::upsert(
        &config,
        super::context::LOCAL_CONTEXT,
        super::context::Context {
            gateway: Some(gateway.clone()),
            token: Some(token.clone()),
            etcd: Some(super::context::EtcdContext {
                endpoints: Some(g.etcd_endpoints().value),
                ..Default::default()
            }),
            swarm_manager: Some(var("DOCKER_HOST", "")).filter(|h| !h.is_empty()),
            broker: Some(amqp_url.clone()),
            namespace: None,
        },
        true,
    )?;
    if let Some((ns, name)) = functions.first() {
        step(&format!("invoking {ns}/{name}"));
        let url = format!("{gateway}/v1/namespaces/{ns}/functions/{name}/invoke");
        // After a crash (no `lambda down`), etcd still holds the last platform's status: a
        // function may read Ready with endpoints that are gone until the new controller has
        // reconciled it. Those answers (no replica, replica unreachable) are transient here.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let resp = reqwest::Client::new()
                .post(&url)
                .bearer_auth(&token)
                .body(r#"{"name": "lambda up"}"#)
                .send()
                .await;
            let (status, text) = match resp {
                Ok(r) => {
                    let status = r.status();
                    (Some(status), r.text().await.unwrap_or_default())
                }
                Err(e) => (None, e.to_string()),
            };
            if status.is_some_and(|s| s.is_success()) {
                println!("{text}");
                break;
            }
            let transient = status.is_none_or(|s| s.as_u16() == 502 || s.as_u16() == 503);
            if !transient || tokio::time::Instant::now() > deadline {
                println!("{text}");
                bail!(
                    "invoking {name} failed: {} (logs: {})",
                    status.map_or_else(|| "no answer".to_string(), |s| format!("HTTP {s}")),
                    state.display()
                );
            }
            eprintln!("    not answering yet ({}); retrying", text.trim());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!();
    println!("The platform is up.");
    println!("  gateway:  {gateway}   (API reference: {gateway}/docs)");
    println!(
        "  context:  {:?} in {} (lambda invoke, logs, get … use it; `lambda config view`)",
        super::context::LOCAL_CONTEXT,
        config.display()
    );
    println!("  token:    {}", token_file.display());
    println!(
        "  events:   publish to exchange lambda.events on {} (URL in the context; metrics http://{EVENTS_METRICS}/metrics)",
        crate::events::broker::redact(&amqp_url)
    );
    println!(
        "  try:      curl -H \"Authorization: Bearer $(cat {})\" -d '{{\"name\": \"you\"}}' {gateway}/v1/functions/hello/invoke",
        token_file.display()
    );
    println!("  stop:     lambda down");
    Ok(())
}

pub async fn down(g: &GlobalArgs, args: DownArgs) -> Result<()> {
    let g = &g.without_context();
    let dir = project_dir(&args.project_dir)?;
    let home = std::env::var("LAMBDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join(".lambda"));
    let state = home.join("platform");
    // Functions go first, while the controller still runs their finalizers.
    if let Ok(store) = g.store().await
        && pid_alive(&state.join("controller.pid"))
    {
        step("deleting event sources (their consumers stopped, their queues deleted)");
        delete_all::<crate::api::EventSourceSpec>(&store).await;
        step("deleting functions");
        if let Ok(list) = store.list::<FunctionSpec>(None).await {
            for f in &list.items {
                let _ = store
                    .delete::<FunctionSpec>(f.metadata.namespace(), &f.metadata.name)
                    .await;
            }
            for _ in 0..300 {
                match store.list::<FunctionSpec>(None).await {
                    Ok(l) if l.items.is_empty() => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        step("deleting warm pools");
        delete_all::<crate::api::WarmPoolSpec>(&store).await;
        step("deleting node pools (workers drained, VMs deleted) and snapshot images");
        delete_all::<crate::api::NodePoolSpec>(&store).await;
        delete_all::<crate::api::SnapshotImageSpec>(&store).await;
    }
    step("gateway, events listener and controller");
    stop_daemon(&state, "gateway");
    stop_daemon(&state, "events");
    stop_daemon(&state, "controller");
    let _ = std::fs::remove_file(state.join("token"));
    step("lambda cloud");
    // Deleted servers finish tearing down in the background: let them before stopping it.
    let servers = home.join("cloud/servers");
    for _ in 0..150 {
        let left = std::fs::read_dir(&servers).map_or(0, |d| d.count());
        if left == 0 || !pid_alive(&state.join("cloud.pid")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_daemon(&state, "cloud");
    // Its engines outlive it by design; whatever the pools did not delete goes now.
    destroy_engines(&home.join("cloud"));
    if args.purge {
        let _ = std::fs::remove_dir_all(home.join("cloud"));
    }
    step("Docker Swarm");
    let purge: &[&str] = if args.purge {
        &["down", "--purge"]
    } else {
        &["down"]
    };
    script(&dir, "swarm.sh", purge).await?;
    step("RabbitMQ");
    script(&dir, "rabbitmq.sh", &["down"]).await?;
    if args.purge {
        let _ = std::fs::remove_dir_all(home.join("rabbitmq"));
    }
    step("etcd");
    script(&dir, "etcd.sh", &["down"]).await?;
    if args.purge {
        let _ = std::fs::remove_dir_all(home.join("etcd"));
    }
    if let Ok(config) = super::context::config_path()
        && super::context::remove(&config, super::context::LOCAL_CONTEXT)?
    {
        eprintln!(
            "    context {:?} removed from {}",
            super::context::LOCAL_CONTEXT,
            config.display()
        );
    }
    println!("The platform is down.");
    Ok(())
}

/// Deletes every object of kind `K` and waits (bounded) until their finalizers let go.
async fn delete_all<K: crate::api::Resource>(store: &crate::store::Store) {
    let Ok(list) = store.list::<K>(None).await else {
        return;
    };
    for o in &list.items {
        let _ = store
            .delete::<K>(o.metadata.namespace(), &o.metadata.name)
            .await;
    }
    for _ in 0..600 {
        match store.list::<K>(None).await {
            Ok(l) if l.items.is_empty() => return,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    eprintln!("    some {} objects are still being deleted", K::KIND);
}

/// Stops the engines of `lambda cloud` servers under `cloud_dir` and removes their network
/// namespaces (what the emulator's own server deletion would have done).
fn destroy_engines(cloud_dir: &Path) {
    let Ok(servers) = std::fs::read_dir(cloud_dir.join("servers")) else {
        return;
    };
    for d in servers.flatten() {
        let pid_file = d.path().join("dockerd.pid");
        let running = pid_alive(&pid_file);
        if running && let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            for _ in 0..100 {
                if !pid_alive(&pid_file) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let ns = format!("lc-{}", d.file_name().to_string_lossy());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        if running {
            eprintln!("    engine {} stopped", d.file_name().to_string_lossy());
        }
    }
}
