//! `lambda bench controller`: the runtime's figures against a real etcd — write→reconcile-start
//! latency over N objects, RSS with all of them cached, and idle CPU with no changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::{Function, FunctionSpec};
use crate::runtime::{Action, Controller, ControllerConfig};
use crate::store::prefix_end;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// N servers in parallel → ACTIVE → deleted, against an OpenStack endpoint.
    Cloud {
        /// openrc of the cloud (the real OpenStack's or `lambda cloud`'s).
        #[arg(long)]
        openrc: PathBuf,
        #[arg(long, default_value_t = 20)]
        servers: usize,
        #[arg(long, default_value = "m1.tiny")]
        flavor: String,
        #[arg(long)]
        image: String,
        #[arg(long)]
        network: Option<String>,
        /// `lambda cloud`'s data dir: check engines, measure memory per server.
        #[arg(long)]
        emulator_dir: Option<PathBuf>,
    },
    /// A node pool scaled 0 → N → 0 on `lambda cloud` by an in-process controller, next to
    /// the same servers created straight through Nova with the same join script.
    Nodes {
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        #[command(flatten)]
        pool: PoolBenchArgs,
    },
    /// The node autoscaler: a pool at 0 grown for pending replicas (pending → Nova create,
    /// → Running, packing) on `lambda cloud`, next to the same servers created straight
    /// through Nova until they are ready workers.
    Autoscale {
        /// Nodes each round needs (two replicas per node).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Rounds (each from 0 nodes and back).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        pool: PoolBenchArgs,
    },
    /// Time to the first response from zero per runtime, through a warm pool container and
    /// through a Swarm task start, vs. their floors in the same run (specialise + invoke
    /// straight through an agent, Swarm's own task start, `docker run` of the image) and a
    /// warm call (needs `lambda up`).
    Coldstart {
        /// Gateway URL [default: the context's, else http://127.0.0.1:8080].
        #[arg(long, env = "LAMBDA_GATEWAY")]
        gateway: Option<String>,
        /// API key [default: the context's].
        #[arg(long, env = "LAMBDA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Swarm manager [default: $DOCKER_HOST, else the context's].
        #[arg(long, env = "DOCKER_HOST")]
        docker_host: Option<String>,
        /// Runtimes to measure; each must be in the workers' images (`lambda up`'s snapshot
        /// bakes all three).
        #[arg(long, value_delimiter = ',', default_value = "python3,node,shell")]
        runtimes: Vec<String>,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Rounds of the burst phase (a 10× step of load on a running function); 0 skips it.
        #[arg(long, default_value_t = 3)]
        burst_rounds: usize,
    },
    /// Warm invocations through the gateway vs. straight to the function's agents.
    Invoke {
        /// Function to call (namespace from -n).
        function: String,
        /// Gateway URL [default: the context's, else http://127.0.0.1:8080].
        #[arg(long, env = "LAMBDA_GATEWAY")]
        gateway: Option<String>,
        /// API key [default: the context's].
        #[arg(long, env = "LAMBDA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Agent addresses (host:port) to call directly; default: the function's ready
        /// endpoints from its status.
        #[arg(long, value_delimiter = ',')]
        direct: Vec<String>,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Measuring time per target (split in two interleaved rounds).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The event.
        #[arg(long, default_value = "{}")]
        data: String,
        /// nginx binary of the third target (a reverse proxy to the same replicas); `none`
        /// leaves it out.
        #[arg(long, default_value = "/usr/sbin/nginx")]
        nginx: String,
        /// nginx worker processes [default: the gateway's threads, one per core].
        #[arg(long)]
        nginx_workers: Option<usize>,
    },
    /// Asynchronous invocations end to end (202 → record Succeeded) vs. raw publish → consume
    /// of the same bytes on the same broker.
    Events {
        /// Function to invoke (namespace from -n); a trivial one measures the platform.
        function: String,
        #[arg(long, default_value_t = 2_000)]
        invocations: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Gateway URL [default: the context's].
        #[arg(long, env = "LAMBDA_GATEWAY")]
        gateway: Option<String>,
        /// API key [default: the context's].
        #[arg(long, env = "LAMBDA_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// RabbitMQ [default: the context's broker].
        #[arg(long, env = "LAMBDA_AMQP_URL", hide_env_values = true)]
        amqp_url: Option<String>,
        /// The event.
        #[arg(long, default_value = "{}")]
        data: String,
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Store create rate vs. raw etcd puts of the same bytes at the same concurrency; watch
    /// latency (write → event delivered).
    Store {
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 1_000)]
        watch_samples: usize,
        /// Namespace used (and purged) by the benchmark.
        #[arg(long, default_value = "bench")]
        bench_namespace: String,
    },
    /// Write N Function objects to a scratch namespace and measure the controller runtime.
    Controller {
        /// Objects to create.
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        /// Seconds of idle CPU measurement after everything is cached.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// Concurrent writes while creating.
        #[arg(long, default_value_t = 32)]
        write_concurrency: usize,
    },
}

fn proc_status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub async fn run(g: &GlobalArgs, cmd: BenchCommand) -> Result<()> {
    let (objects, idle_seconds, write_concurrency) = match cmd {
        BenchCommand::Cloud {
            openrc,
            servers,
            flavor,
            image,
            network,
            emulator_dir,
        } => {
            let cfg = crate::bench::cloud::CloudBench {
                openrc,
                servers,
                flavor,
                image,
                network,
                emulator_dir,
            };
            crate::bench::cloud::run(&cfg).await?;
            return Ok(());
        }
        BenchCommand::Nodes { nodes, pool } => {
            let (store, cfg) = nodes_bench(g, pool, nodes, "nodes").await?;
            crate::bench::nodes::run(&store, &cfg).await?;
            return Ok(());
        }
        BenchCommand::Autoscale {
            nodes,
            rounds,
            pool,
        } => {
            let (store, cfg) = nodes_bench(g, pool, nodes, "autoscale").await?;
            crate::bench::nodes::autoscale::run(&store, &cfg, rounds).await?;
            return Ok(());
        }
        BenchCommand::Coldstart {
            gateway,
            token,
            docker_host,
            runtimes,
            rounds,
            burst_rounds,
        } => {
            let runtimes = runtimes
                .iter()
                .map(|r| {
                    serde_saphyr::from_str::<crate::api::function::Runtime>(r).map_err(|_| {
                        anyhow::anyhow!("--runtimes: unknown runtime {r:?} (python3, node, shell)")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let docker_host = g.require_swarm_manager(docker_host.as_ref())?.value;
            let b = crate::bench::coldstart::ColdStartBench {
                store: g.store().await?,
                swarm: crate::swarm::Swarm::connect(Some(&docker_host)).await?,
                gateway: format!(
                    "{}/v1/namespaces/{}/functions/",
                    g.gateway(gateway.as_ref()).value.trim_end_matches('/'),
                    g.namespace()
                ),
                namespace: g.namespace(),
                token: g.token(token.as_ref()).map(|t| t.value),
                runtimes,
                rounds: rounds.max(1),
                burst_rounds,
            };
            b.run().await?;
            return Ok(());
        }
        BenchCommand::Invoke {
            function,
            gateway,
            token,
            direct,
            concurrency,
            duration,
            data,
            nginx,
            nginx_workers,
        } => {
            let direct = if direct.is_empty() {
                agents(&g.store().await?, &g.namespace(), &function).await?
            } else {
                direct
            };
            // As many nginx workers as the gateway has threads (tokio's default: one per core).
            let workers = nginx_workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let proxy = (nginx != "none")
                .then(|| crate::bench::nginx::Nginx::start(&nginx, workers, &direct))
                .transpose()?;
            let direct = crate::bench::invoke::Target {
                urls: direct
                    .iter()
                    .map(|a| format!("http://{a}/invoke"))
                    .collect(),
                bearer: None,
            };
            let via_nginx = proxy.as_ref().map(|p| crate::bench::invoke::Target {
                urls: vec![p.url.clone()],
                bearer: None,
            });
            let gw = crate::bench::invoke::Target {
                urls: vec![format!(
                    "{}/v1/namespaces/{}/functions/{function}/invoke",
                    g.gateway(gateway.as_ref()).value.trim_end_matches('/'),
                    g.namespace()
                )],
                bearer: g.token(token.as_ref()).map(|t| t.value),
            };
            let mut targets = vec![("direct", &direct)];
            if let Some(n) = &via_nginx {
                targets.push(("nginx", n));
            }
            targets.push(("gateway", &gw));
            crate::bench::invoke::compare(
                &targets,
                &bytes::Bytes::from(data),
                concurrency,
                duration,
            )
            .await?;
            drop(proxy);
            return Ok(());
        }
        BenchCommand::Events {
            function,
            invocations,
            concurrency,
            gateway,
            token,
            amqp_url,
            data,
            timeout,
        } => {
            let Some(amqp) = g.broker(amqp_url.as_ref()) else {
                bail!("no broker: pass --amqp-url, set LAMBDA_AMQP_URL, or use a context with one");
            };
            let store = g.store().await?;
            let agents = agents(&store, &g.namespace(), &function).await?;
            let cfg = crate::bench::events::EventsBench {
                direct: crate::bench::invoke::Target {
                    urls: agents
                        .iter()
                        .map(|a| format!("http://{a}/invoke"))
                        .collect(),
                    bearer: None,
                },
                invoke_url: format!(
                    "{}/v1/namespaces/{}/functions/{function}/invoke",
                    g.gateway(gateway.as_ref()).value.trim_end_matches('/'),
                    g.namespace()
                ),
                bearer: g.token(token.as_ref()).map(|t| t.value),
                namespace: g.namespace(),
                amqp_url: amqp.value,
                invocations: invocations.max(1),
                concurrency: concurrency.max(1),
                data,
                timeout,
            };
            crate::bench::events::run(&store, &cfg).await?;
            return Ok(());
        }
        BenchCommand::Store {
            objects,
            concurrency,
            watch_samples,
            bench_namespace,
        } => {
            let store = g.store().await?;
            let cfg = crate::bench::store::StoreBench {
                objects,
                concurrency,
                watch_samples,
                namespace: bench_namespace,
            };
            crate::bench::store::run(&store, &cfg).await?;
            return Ok(());
        }
        BenchCommand::Controller {
            objects,
            idle_seconds,
            write_concurrency,
        } => (objects, idle_seconds, write_concurrency),
    };
    let store = g.store().await?;
    let ns = format!("bench-{:08x}", rand::random::<u32>());
    let spec: FunctionSpec = serde_saphyr::from_str("runtime: shell\ncode:\n  inline: cat\n")
        .context("bench function spec")?;

    // The controller under test: records when each object's first reconcile starts.
    let starts: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut cfg = ControllerConfig::named("bench");
    cfg.runner.resync = None;
    cfg.runner.concurrency = 16;
    let stop = CancellationToken::new();
    let ctl = Controller::<FunctionSpec>::new(store.clone(), Some(&ns), cfg)
        .graceful_shutdown_on(stop.clone());
    let cache = ctl.cache();
    let ctl_task = tokio::spawn(ctl.run(
        |obj: Arc<Function>, starts: Arc<Mutex<HashMap<String, Instant>>>| async move {
            let now = Instant::now();
            if let Ok(mut s) = starts.lock() {
                s.entry(obj.metadata.name.clone()).or_insert(now);
            }
            Ok::<_, std::convert::Infallible>(Action::await_change())
        },
        |_, _, _| Action::backoff(),
        starts.clone(),
    ));
    cache.wait_ready().await;

    eprintln!("writing {objects} objects to namespace {ns} …");
    let t0 = Instant::now();
    let writes: Vec<Result<(String, Instant)>> = futures::stream::iter(0..objects)
        .map(|i| {
            let store = store.clone();
            let obj = Function::new(&ns, &format!("f{i:05}"), spec.clone());
            async move {
                let at = Instant::now();
                store.create(&obj).await?;
                Ok((obj.metadata.name.clone(), at))
            }
        })
        .buffer_unordered(write_concurrency.max(1))
        .collect()
        .await;
    let mut written = HashMap::with_capacity(objects);
    for w in writes {
        let (name, at) = w?;
        written.insert(name, at);
    }
    let write_secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = starts.lock().map(|s| s.len()).unwrap_or(0);
        if n >= objects {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {objects} objects were reconciled within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat: Vec<Duration> = {
        let s = starts.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        written
            .iter()
            .filter_map(|(n, at)| s.get(n).map(|st| st.saturating_duration_since(*at)))
            .collect()
    };
    lat.sort();
    drop(written);

    // Isolated writes: one at a time on the quiet system, the reaction time proper.
    const SINGLES: usize = 200;
    let mut single = Vec::with_capacity(SINGLES);
    for i in 0..SINGLES {
        let obj = Function::new(&ns, &format!("s{i:03}"), spec.clone());
        let at = Instant::now();
        store.create(&obj).await?;
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let st = starts
                .lock()
                .ok()
                .and_then(|s| s.get(&obj.metadata.name).copied());
            if let Some(st) = st {
                single.push(st.saturating_duration_since(at));
                break;
            }
            if Instant::now() > until {
                bail!("{} was not reconciled within 5 s", obj.metadata.name);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    single.sort();
    let rss_kb = proc_status_kb("VmRSS:").unwrap_or(0);
    let cached = cache.len();

    eprintln!("measuring idle CPU for {idle_seconds} s …");
    let hz = clock_ticks_per_sec();
    let c0 = cpu_ticks().unwrap_or(0);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let c1 = cpu_ticks().unwrap_or(0);
    let idle_cpu = (c1.saturating_sub(c0)) as f64 / hz as f64 / w0.elapsed().as_secs_f64() * 100.0;

    stop.cancel();
    let _ = ctl_task.await;
    let mut kv = store.client().kv_client();
    for p in [
        store.keys().spec_prefix("functions", Some(&ns)),
        store.keys().status_prefix("functions", Some(&ns)),
    ] {
        let opts = etcd_client::DeleteOptions::new().with_range(prefix_end(&p));
        kv.delete(p.clone(), Some(opts))
            .await
            .with_context(|| format!("cleaning up {p}"))?;
    }

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "lambda bench controller: {objects} objects written in {write_secs:.1} s ({:.0}/s, {write_concurrency} at a time), then {SINGLES} one at a time",
        objects as f64 / write_secs
    );
    println!("latency = from just before the create request to the start of its reconcile");
    let row = |name: &str, v: String, target: &str| println!("{name:<46} {v:>10} {target:>10}");
    row("METRIC", "VALUE".into(), "TARGET");
    row(
        &format!("bulk write→reconcile start p50 (n={objects})"),
        ms(pct(&lat, 0.50)),
        "≤ 20 ms",
    );
    row(
        &format!("bulk write→reconcile start p99 (n={objects})"),
        ms(pct(&lat, 0.99)),
        "≤ 200 ms",
    );
    row("bulk write→reconcile start max", ms(pct(&lat, 1.0)), "");
    row(
        &format!("single write→reconcile start p50 (n={SINGLES})"),
        ms(pct(&single, 0.50)),
        "≤ 20 ms",
    );
    row(
        &format!("single write→reconcile start p99 (n={SINGLES})"),
        ms(pct(&single, 0.99)),
        "≤ 200 ms",
    );
    row(
        &format!("RSS, {cached} objects cached"),
        format!("{:.1} MB", rss_kb as f64 / 1024.0),
        "≤ 150 MB",
    );
    row(
        &format!("idle CPU over {idle_seconds} s"),
        format!("{idle_cpu:.2} %"),
        "< 1 %",
    );
    Ok(())
}

/// The agent addresses of a function's ready replicas, from its status.
async fn agents(store: &crate::store::Store, ns: &str, function: &str) -> Result<Vec<String>> {
    let f = store.get::<FunctionSpec>(ns, function).await?;
    let eps: Vec<String> = f
        .status
        .unwrap_or_default()
        .endpoints
        .into_iter()
        .map(|e| e.address)
        .collect();
    if eps.is_empty() {
        bail!("function {ns}/{function} has no ready endpoint");
    }
    Ok(eps)
}

/// The flags `bench nodes` and `bench autoscale` share: a pool on `lambda cloud`.
#[derive(Debug, clap::Args)]
pub struct PoolBenchArgs {
    /// openrc of `lambda cloud`.
    #[arg(long)]
    openrc: PathBuf,
    /// `lambda cloud`'s data dir (to prepare the worker image in a builder's engine).
    #[arg(long)]
    emulator_dir: PathBuf,
    #[arg(long, default_value = "m1.small")]
    flavor: String,
    #[arg(long, default_value = "lambda-net")]
    network: String,
    /// A Glance image holding the runtime images; default: one is prepared first (not
    /// measured) from `debian-12` and the shell runtime image.
    #[arg(long)]
    image: Option<String>,
    /// The Swarm manager [default: the context's].
    #[arg(long, env = "DOCKER_HOST")]
    docker_host: Option<String>,
    /// `host:port` the workers join.
    #[arg(long, env = "LAMBDA_SWARM_JOIN_ADDR")]
    swarm_join_addr: String,
    /// Longest wait for one phase.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// The store and the bench's cloud, Swarm and worker image (prepared when not given).
async fn nodes_bench(
    g: &GlobalArgs,
    a: PoolBenchArgs,
    nodes: usize,
    kind: &str,
) -> Result<(crate::store::Store, crate::bench::nodes::NodesBench)> {
    let PoolBenchArgs {
        openrc,
        emulator_dir,
        flavor,
        network,
        image,
        docker_host,
        swarm_join_addr,
        timeout,
    } = a;
    let docker_host = g.require_swarm_manager(docker_host.as_ref())?.value;
    let store = g.store().await?;
    let cloud = crate::openstack::OpenStack::connect(
        crate::openstack::CloudConfig::from_openrc_file(&openrc)?,
    )
    .await?;
    let swarm = crate::swarm::Swarm::connect(Some(&docker_host)).await?;
    let images = super::controller::runtime_images(&[])?;
    let id = format!("{:08x}", rand::random::<u32>());
    let image = match image {
        Some(i) => i,
        None => {
            let shell = images
                .0
                .get(&crate::api::function::Runtime::Shell)
                .cloned()
                .context("no shell runtime image: run scripts/images.sh")?;
            eprintln!("preparing a worker image holding {shell} …");
            crate::bench::nodes::prepare_image(
                &cloud,
                &emulator_dir,
                &docker_host,
                &shell,
                "debian-12",
                &format!("bench-worker-{id}"),
            )
            .await?
        }
    };
    let cfg = crate::bench::nodes::NodesBench {
        cluster: crate::reconcilers::cluster::ClusterConfig {
            cloud,
            swarm,
            join_addr: swarm_join_addr,
            advertise_addr: None,
            instance: format!("bench-{id}"),
            images,
            builder_url: None,
            timings: Default::default(),
        },
        nodes,
        flavor,
        network: Some(network),
        image,
        namespace: format!("bench-{kind}-{id}"),
        timeout,
    };
    Ok((store, cfg))
}
