//! The floors of a cold start, measured on the Swarm manager's own engine in the same run:
//! specialising and invoking an already running generic container straight through its agent
//! (what the pool path cannot go below), and `docker run` of the runtime image as a dedicated
//! function container up to its first answer (what any container start costs).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

use crate::api::function::Runtime;
use crate::swarm::Swarm;

use super::ColdStartError;

/// The function every measurement runs: it answers `{"ok": true}`.
pub fn code(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Python3 => "def handler(event, context):\n    return {'ok': True}\n",
        Runtime::Node => "exports.handler = async () => ({ok: true});\n",
        Runtime::Shell | Runtime::Image => "cat >/dev/null; echo '{\"ok\": true}'\n",
    }
}

fn handler(rt: Runtime) -> Option<&'static str> {
    match rt {
        Runtime::Python3 => Some("main.handler"),
        Runtime::Node => Some("index.handler"),
        Runtime::Shell | Runtime::Image => None,
    }
}

fn err(message: impl std::fmt::Display) -> ColdStartError {
    ColdStartError::Call {
        function: "floor".into(),
        message: message.to_string(),
    }
}

/// A container of the runtime image on the manager, hardened as the platform runs it, with
/// its agent's port published on loopback; removed on drop.
struct Container {
    swarm: Swarm,
    id: String,
    port: u16,
}

impl Drop for Container {
    fn drop(&mut self) {
        let docker = self.swarm.docker().clone();
        let id = self.id.clone();
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        tokio::spawn(async move {
            let _ = docker.remove_container(&id, Some(opts)).await;
        });
    }
}

async fn start(
    swarm: &Swarm,
    image: &str,
    env: Vec<String>,
    binds: Vec<String>,
) -> Result<Container, ColdStartError> {
    let name = format!(
        "lambda-bench-floor-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let body = ContainerCreateBody {
        image: Some(image.into()),
        env: Some(env),
        user: Some("10001".into()),
        exposed_ports: Some(vec!["8080/tcp".into()]),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_string(), "size=64m".to_string()),
                ("/run/secrets".to_string(), "size=4m".to_string()),
            ])),
            binds: Some(binds),
            cap_drop: Some(vec!["ALL".into()]),
            init: Some(true),
            memory: Some(256 << 20),
            port_bindings: Some(HashMap::from([(
                "8080/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let docker = swarm.docker();
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let id = docker
        .create_container(Some(opts), body)
        .await
        .map_err(err)?
        .id;
    let mut c = Container {
        swarm: swarm.clone(),
        id,
        port: 0,
    };
    docker.start_container(&c.id, None).await.map_err(err)?;
    let inspected = docker.inspect_container(&c.id, None).await.map_err(err)?;
    c.port = inspected
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| err("the container published no port for 8080"))?;
    Ok(c)
}

/// POSTs `body` to the container's agent until it answers 200 (polling every 2 ms while it
/// refuses or is not warm), within `limit`.
async fn post_until_ok(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: String,
    limit: Duration,
) -> Result<(), ColdStartError> {
    let t = Instant::now();
    loop {
        let mut req = http.post(url).body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) if r.status() != 503 => {
                return Err(err(format!(
                    "{url}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )));
            }
            _ if t.elapsed() > limit => return Err(err(format!("{url}: no answer in {limit:?}"))),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// Specialise + first invoke of an idle generic container straight through its agent.
pub async fn specialise_and_invoke(
    swarm: &Swarm,
    http: &reqwest::Client,
    image: &str,
    rt: Runtime,
    dir: &std::path::Path,
) -> Result<Duration, ColdStartError> {
    let token = format!("{}", uuid::Uuid::new_v4().simple());
    let token_file = dir.join(format!("token-{token}"));
    std::fs::write(&token_file, &token).map_err(err)?;
    let env = vec![
        "LAMBDA_POOL=1".to_string(),
        format!("LAMBDA_RUNTIME={}", rt.as_str()),
        "LAMBDA_POOL_WORKERS=1".into(),
        "LAMBDA_PORT=8080".into(),
    ];
    let bind = format!("{}:/var/lambda/pool-token:ro", token_file.display());
    let c = start(swarm, image, env, vec![bind]).await;
    let _ = std::fs::remove_file(&token_file);
    let c = c?;
    let base = format!("http://127.0.0.1:{}", c.port);
    // Idle (its generic worker warm) before the clock starts.
    let t = Instant::now();
    loop {
        match http.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if t.elapsed() > Duration::from_secs(60) => {
                return Err(err("the generic container never became idle"));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let body = serde_json::json!({
        "function": "bench/floor",
        "runtime": rt.as_str(),
        "handler": handler(rt),
        "code": code(rt),
        "timeoutMs": 30000,
        "maxPayloadBytes": 1024,
        "concurrency": 1,
    })
    .to_string();
    let t = Instant::now();
    let limit = Duration::from_secs(30);
    post_until_ok(
        http,
        &format!("{base}/specialize"),
        Some(&token),
        body,
        limit,
    )
    .await?;
    post_until_ok(http, &format!("{base}/invoke"), None, "{}".into(), limit).await?;
    Ok(t.elapsed())
}

/// `docker run` of the runtime image as a dedicated function container, to its first answer.
pub async fn docker_run(
    swarm: &Swarm,
    http: &reqwest::Client,
    image: &str,
    rt: Runtime,
    dir: &std::path::Path,
) -> Result<Duration, ColdStartError> {
    let code_file = dir.join(format!("code-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&code_file, code(rt)).map_err(err)?;
    let mut env = vec![
        format!("LAMBDA_RUNTIME={}", rt.as_str()),
        "LAMBDA_CONCURRENCY=1".into(),
        "LAMBDA_PORT=8080".into(),
        "LAMBDA_FUNCTION=bench/floor".into(),
    ];
    env.extend(handler(rt).map(|h| format!("LAMBDA_HANDLER={h}")));
    let bind = format!("{}:/var/lambda/code:ro", code_file.display());
    let t = Instant::now();
    let c = start(swarm, image, env, vec![bind]).await;
    let answered = match &c {
        Ok(c) => {
            let url = format!("http://127.0.0.1:{}/invoke", c.port);
            post_until_ok(http, &url, None, "{}".into(), Duration::from_secs(60)).await
        }
        Err(_) => Ok(()),
    };
    let took = t.elapsed();
    let _ = std::fs::remove_file(&code_file);
    c?;
    answered?;
    Ok(took)
}
