//! One node's server: creating it (user-data, ownership, cloud errors as conditions) and
//! following what Nova says about it (ACTIVE, BUILD, ERROR → deleted and recreated later).

use tokio::time::Instant;

use crate::api::{ConditionStatus, Conditions, NodeSpec, Object, node::NodeStatus};
use crate::openstack::{self, NetworkSpec, Server, ServerSpec, ServerStatus};
use crate::runtime::conditions::set_condition;
use crate::runtime::{Action, EventType};

use super::super::cluster::{META_POOL, backoff, server_name};
use super::{
    ACTIVE_RECHECK, CLOUD_RETRY, Context, KIND, NodeError, SERVER_READY, delete_server, uid_of,
    userdata,
};

pub(super) fn not_ready(s: &mut NodeStatus, generation: i64, reason: &str, message: &str) {
    set_condition(
        &mut s.conditions,
        SERVER_READY,
        ConditionStatus::False,
        reason,
        message,
        Some(generation),
    );
}

pub(super) async fn create(n: &Object<NodeSpec>, ctx: &Context) -> Result<Action, NodeError> {
    let uid = uid_of(n);
    let generation = n.generation();
    if let Some(at) = ctx.retry_at.lock().ok().and_then(|m| m.get(&uid).copied())
        && at > Instant::now()
    {
        return Ok(Action::requeue(at - Instant::now()));
    }
    let key = n.key();
    let token = ctx
        .cluster
        .swarm
        .join_tokens()
        .await
        .map_err(|source| NodeError::JoinToken {
            node: key.clone(),
            source,
        })?
        .worker
        .unwrap_or_default();
    let Some(script) = userdata::render(&userdata::JoinScript {
        node: &key.to_string(),
        token: &token,
        join_addr: &ctx.cluster.join_addr,
    }) else {
        let msg = format!(
            "cannot write the join script: unexpected characters in the join token or in --swarm-join-addr {:?}",
            ctx.cluster.join_addr
        );
        ctx.write(n, |s| not_ready(s, generation, "InvalidJoinConfig", &msg))
            .await?;
        return Ok(Action::requeue(CLOUD_RETRY));
    };
    let ns = n.metadata.namespace();
    let name = server_name("lambda", ns, &n.metadata.name);
    let owner = ctx.cluster.owner(KIND, ns, &n.metadata.name, &uid);
    let mut metadata = owner.metadata();
    metadata.insert(META_POOL.to_string(), n.spec.pool.clone());
    let spec = ServerSpec {
        name: name.clone(),
        flavor: n.spec.flavor.clone(),
        image: n.spec.image.clone(),
        networks: match &n.spec.network {
            Some(net) => NetworkSpec::Named(vec![net.clone()]),
            None => NetworkSpec::Auto,
        },
        key_name: n.spec.key_pair.clone(),
        security_groups: n.spec.security_groups.clone(),
        availability_zone: n.spec.availability_zone.clone(),
        user_data: Some(script.into_bytes()),
        metadata,
        tags: owner.tags(),
    };
    match ctx.cluster.cloud.create_server(&spec).await {
        Ok(id) => {
            let msg = format!("server {id} ({name}) requested from image {}", n.spec.image);
            ctx.recorder
                .emit(n, EventType::Normal, "ServerCreated", &msg)
                .await;
            ctx.write(n, |s| {
                s.server_id = Some(id.clone());
                s.server_name = Some(name.clone());
                s.vm_state = Some("BUILD".into());
                s.addresses.clear();
                not_ready(s, generation, "Building", &msg);
            })
            .await?;
            Ok(Action::requeue(ctx.cluster.timings.poll))
        }
        Err(e) => {
            let (reason, msg) = match &e {
                openstack::Error::QuotaExceeded(_) => ("QuotaExceeded", e.to_string()),
                openstack::Error::NoSuchResource { resource, name } => (
                    "InvalidCloudRef",
                    format!(
                        "{resource} {name:?} does not exist in the cloud (spec of the node pool)"
                    ),
                ),
                openstack::Error::BadRequest(_) => ("InvalidServerSpec", e.to_string()),
                _ => return Err(Context::cloud_err(n, "creating the server")(e)),
            };
            let first = n
                .status
                .as_ref()
                .and_then(|s| s.condition(SERVER_READY))
                .is_none_or(|c| c.reason != reason);
            if first {
                ctx.recorder.emit(n, EventType::Warning, reason, &msg).await;
            }
            ctx.write(n, |s| {
                not_ready(s, generation, reason, &msg);
                s.last_error = Some(msg.clone());
            })
            .await?;
            Ok(Action::requeue(CLOUD_RETRY))
        }
    }
}

fn addresses(s: &Server) -> Vec<String> {
    let mut v: Vec<String> = s
        .addresses
        .values()
        .flatten()
        .map(|a| a.addr.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn status_name(s: &Server) -> String {
    serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "UNKNOWN".into())
}

pub(super) async fn observe(
    n: &Object<NodeSpec>,
    ctx: &Context,
    server: Server,
) -> Result<Action, NodeError> {
    let generation = n.generation();
    let vm = status_name(&server);
    let addrs = addresses(&server);
    let id = server.id.clone();
    let base = |s: &mut NodeStatus| {
        s.server_id = Some(id.clone());
        s.server_name = Some(server.name.clone());
        s.vm_state = Some(vm.clone());
        s.addresses = addrs.clone();
    };
    match server.status {
        ServerStatus::Active => {
            if let Ok(mut m) = ctx.retry_at.lock() {
                m.remove(&uid_of(n));
            }
            ctx.write(n, |s| {
                base(s);
                s.server_failures = 0;
                s.last_error = None;
                set_condition(
                    &mut s.conditions,
                    SERVER_READY,
                    ConditionStatus::True,
                    "Active",
                    &format!("server {id} is ACTIVE at {}", addrs.join(", ")),
                    Some(generation),
                );
            })
            .await?;
            Ok(Action::requeue(ACTIVE_RECHECK))
        }
        ServerStatus::Error => {
            let fault = server
                .fault
                .as_ref()
                .map(|f| f.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "no fault message".into());
            let failures = n.status.as_ref().map_or(0, |s| s.server_failures) + 1;
            let wait = backoff(
                ctx.cluster.timings.error_backoff,
                ctx.cluster.timings.error_backoff_max,
                failures,
            );
            let reason = if fault.to_ascii_lowercase().contains("quota") {
                "QuotaExceeded"
            } else {
                "ServerError"
            };
            let msg = format!(
                "server {id} is in ERROR: {fault}; deleting it, a new one in {}s (failure {failures})",
                wait.as_secs()
            );
            ctx.recorder.emit(n, EventType::Warning, reason, &msg).await;
            delete_server(n, ctx, &id).await?;
            if let Ok(mut m) = ctx.retry_at.lock() {
                m.insert(uid_of(n), Instant::now() + wait);
            }
            ctx.write(n, |s| {
                base(s);
                s.server_id = None;
                s.addresses.clear();
                s.server_failures = failures;
                s.last_error = Some(fault.clone());
                not_ready(s, generation, reason, &msg);
            })
            .await?;
            Ok(Action::requeue(wait))
        }
        ServerStatus::Build => {
            ctx.write(n, |s| {
                base(s);
                not_ready(
                    s,
                    generation,
                    "Building",
                    &format!("server {id} is building"),
                );
            })
            .await?;
            Ok(Action::requeue(ctx.cluster.timings.poll))
        }
        _ => {
            let msg = format!("server {id} is {vm}");
            ctx.write(n, |s| {
                base(s);
                not_ready(s, generation, "NotActive", &msg);
            })
            .await?;
            Ok(Action::requeue(ctx.cluster.timings.poll * 5))
        }
    }
}
