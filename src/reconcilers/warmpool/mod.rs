//! The warm-pool reconciler: each `WarmPool` becomes a Swarm service of generic agents
//! (`LAMBDA_POOL=1`) of its runtime, hardened like function replicas ([`workload`]), with the
//! pool's token mounted from a Swarm config; its status counts the ready containers, how many
//! gateways claimed ([`claims`]) and how many are idle.
//!
//! - A claimed container serves one function until the gateway releases it (or it idles out);
//!   then its agent exits 0 and Swarm's restart policy starts a fresh one in its place: a
//!   container is never handed to a second function.
//! - Claims of containers whose task Swarm no longer runs are deleted here.
//! - Finalizer [`FINALIZER`]: the service, its configs, the claims and the token go.
//! - A periodic sweep removes this instance's pool services and configs whose pool is gone.

pub mod claims;
pub mod status;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{Service, TaskState};
use tokio_util::sync::CancellationToken;

use crate::api::{ConditionStatus, ObjectKey, Resource, WarmPool, WarmPoolSpec};
use crate::runtime::conditions::set_condition;
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::status::patch_status;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer, periodic,
};
use crate::store::{Store, StoreError};
use crate::swarm::labels::{self, Owner};
use crate::swarm::{SwarmError, TaskFilter, task_state};

use super::ControllersConfig;
use super::function::FunctionsConfig;
use super::function::spec::{AGENT_PORT, MAX_NAME, code_hash, label_of, shorten};
use super::function::status::{observe, reason};
use super::workload::{self, Workload};

/// The finalizer on warm pools.
pub const FINALIZER: &str = "lambda/warmpool-cleanup";
/// Where a pool container finds its token (a Swarm config).
pub const TOKEN_PATH: &str = "/var/lambda/pool-token";
/// Where a pool container writes the secrets of the function it is specialised for (a tmpfs:
/// they go with the container), as Swarm would have mounted them.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Size of that tmpfs.
const SECRETS_TMPFS_BYTES: i64 = 4 << 20;
/// How often a pool's counts are refreshed (claims change without the pool object changing).
const REFRESH: Duration = Duration::from_secs(1);

/// Errors of the warm-pool reconciler.
#[derive(Debug, thiserror::Error)]
pub enum WarmPoolError {
    #[error("WarmPool {pool}: {source}")]
    Swarm {
        pool: ObjectKey,
        #[source]
        source: SwarmError,
    },
    #[error("WarmPool {pool}: {source}")]
    Claims {
        pool: ObjectKey,
        #[source]
        source: claims::ClaimError,
    },
    #[error("writing status of WarmPool {pool}: {source}")]
    Status {
        pool: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// What the reconciles share.
pub struct Context {
    pub store: Store,
    /// The function controller's settings: the same Swarm, runtime images, instance label,
    /// service timings and placement constraints.
    pub cfg: FunctionsConfig,
    pub recorder: Recorder,
    pub pools: Cache<WarmPoolSpec>,
    pub namespace: Option<String>,
}

/// `lambda-pool-<ns>-<name>` (shortened with a hash past 63 characters, like functions').
pub fn service_name(namespace: &str, name: &str) -> String {
    shorten(&format!("lambda-pool-{namespace}-{name}"), MAX_NAME)
}

/// `lambda-pool-<ns>-<name>-token-<hash8>`: the config holding the pool's token.
fn token_config_name(namespace: &str, name: &str, token: &str) -> String {
    format!(
        "{}-{}",
        shorten(
            &format!("lambda-pool-{namespace}-{name}-token"),
            MAX_NAME - 9
        ),
        code_hash(token)
    )
}

fn owner(p: &WarmPool, instance: &str) -> Owner {
    Owner {
        instance: instance.to_string(),
        kind: WarmPoolSpec::KIND.to_string(),
        namespace: p.metadata.namespace().to_string(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The agent environment of a pool container.
pub fn pool_env(spec: &WarmPoolSpec) -> Vec<String> {
    vec![
        "LAMBDA_POOL=1".into(),
        format!("LAMBDA_RUNTIME={}", spec.runtime.as_str()),
        format!("LAMBDA_POOL_WORKERS={}", spec.workers),
        format!("LAMBDA_POOL_TOKEN_FILE={TOKEN_PATH}"),
        format!("LAMBDA_SECRETS_DIR={SECRETS_DIR}"),
        format!("LAMBDA_MEMORY_MB={}", spec.memory_mb),
        format!("LAMBDA_PORT={AGENT_PORT}"),
    ]
}

/// The pool's service spec.
pub fn service_spec(
    p: &WarmPool,
    owner: &Owner,
    image: &str,
    token_config: (&str, &str),
    cfg: &FunctionsConfig,
) -> bollard::models::ServiceSpec {
    workload::service_spec(&Workload {
        name: service_name(p.metadata.namespace(), &p.metadata.name),
        owner,
        generation: p.generation(),
        image,
        env: pool_env(&p.spec),
        configs: vec![workload::file_config(
            token_config.0,
            token_config.1,
            TOKEN_PATH,
            0o400,
        )],
        secrets: Vec::new(),
        tmpfs: vec![workload::tmpfs(SECRETS_DIR, SECRETS_TMPFS_BYTES, None)],
        memory_mb: p.spec.memory_mb,
        cpu_millis: p.spec.cpu_millis,
        replicas: p.spec.replicas,
        tuning: &cfg.tuning,
        constraints: &cfg.constraints,
    })
}

fn swarm_err(p: &WarmPool) -> impl Fn(SwarmError) -> WarmPoolError + use<> {
    let pool = p.key();
    move |source| WarmPoolError::Swarm {
        pool: pool.clone(),
        source,
    }
}

fn claims_err(p: &WarmPool) -> impl Fn(claims::ClaimError) -> WarmPoolError + use<> {
    let pool = p.key();
    move |source| WarmPoolError::Claims {
        pool: pool.clone(),
        source,
    }
}

fn owned(svc: &Service, owner: &Owner) -> bool {
    let l = svc
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default();
    Owner::from_labels(&l).is_some_and(|o| {
        o.instance == owner.instance
            && o.kind == owner.kind
            && o.namespace == owner.namespace
            && o.name == owner.name
    })
}

/// Reconciles one pool.
pub async fn reconcile(
    p: Arc<WarmPool>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<WarmPoolError>> {
    if !p.is_deleting()
        && let Err(errors) = p.validate()
    {
        let message = errors.to_string();
        return write_status(&ctx, &p, |s| {
            s.observed_generation = Some(p.generation());
            s.last_error = Some(message.clone());
            set_condition(
                &mut s.conditions,
                "Ready",
                ConditionStatus::False,
                reason::INVALID_SPEC,
                &message,
                Some(p.generation()),
            );
        })
        .await
        .map(|()| Action::await_change())
        .map_err(FinalizerError::Apply);
    }
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, p, |ev| async move {
        match ev {
            FinalizerEvent::Apply(p) => apply(&p, &ctx).await,
            FinalizerEvent::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
}

async fn write_status(
    ctx: &Context,
    p: &WarmPool,
    change: impl Fn(&mut crate::api::WarmPoolStatus),
) -> Result<(), WarmPoolError> {
    match patch_status(&ctx.store, p, change).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(WarmPoolError::Status {
            pool: p.key(),
            source,
        }),
    }
}

async fn apply(p: &WarmPool, ctx: &Context) -> Result<Action, WarmPoolError> {
    let swarm = &ctx.cfg.swarm;
    let err = swarm_err(p);
    let key = p.key();
    let generation = p.generation();
    let Some(image) = ctx.cfg.images.0.get(&p.spec.runtime).cloned() else {
        let rt = p.spec.runtime.as_str();
        let msg = format!("no image is configured for runtime {rt}");
        write_status(ctx, p, |s| {
            s.observed_generation = Some(generation);
            s.last_error = Some(msg.clone());
            set_condition(
                &mut s.conditions,
                "Ready",
                ConditionStatus::False,
                reason::IMAGE_MISSING,
                &msg,
                Some(generation),
            );
        })
        .await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let owner = owner(p, &ctx.cfg.instance);
    let token = claims::ensure_token(&ctx.store, &key)
        .await
        .map_err(claims_err(p))?;
    let cname = token_config_name(p.metadata.namespace(), &p.metadata.name, &token);
    let cid = swarm
        .ensure_config(&cname, token.as_bytes(), owner.labels())
        .await
        .map_err(&err)?;
    let desired = service_spec(p, &owner, &image, (&cid, &cname), &ctx.cfg);
    let desired_hash = label_of(Some(&desired), labels::SPEC_HASH).unwrap_or_default();
    let generation_s = generation.to_string();
    let stale = |svc: &Service| {
        let s = svc.spec.as_ref();
        label_of(s, labels::SPEC_HASH).as_deref() != Some(desired_hash.as_str())
            || label_of(s, labels::GENERATION).as_deref() != Some(generation_s.as_str())
            || label_of(s, labels::UID).as_deref() != Some(owner.uid.as_str())
    };
    let sname = service_name(p.metadata.namespace(), &p.metadata.name);
    let service = match swarm.inspect_service(&sname).await.map_err(&err)? {
        None => {
            match swarm.create_service(desired.clone()).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(e) => return Err(err(e)),
            }
            ctx.recorder
                .emit(
                    p,
                    EventType::Normal,
                    "Created",
                    &format!(
                        "created service {sname} ({} × {} {} MiB)",
                        p.spec.replicas,
                        p.spec.runtime.as_str(),
                        p.spec.memory_mb
                    ),
                )
                .await;
            swarm.inspect_service(&sname).await.map_err(&err)?
        }
        Some(svc) if !owned(&svc, &owner) => {
            let msg = format!("service {sname} exists but is not managed by this controller");
            write_status(ctx, p, |s| {
                s.last_error = Some(msg.clone());
                set_condition(
                    &mut s.conditions,
                    "Ready",
                    ConditionStatus::False,
                    reason::NAME_CONFLICT,
                    &msg,
                    Some(generation),
                );
            })
            .await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Some(svc) if stale(&svc) => {
            swarm
                .update_service(&sname, |cur| stale(cur).then(|| desired.clone()))
                .await
                .map_err(&err)?;
            swarm.inspect_service(&sname).await.map_err(&err)?
        }
        Some(svc) => Some(svc),
    };
    let Some(service) = service else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    let service_id = service.id.clone().unwrap_or_default();
    let tasks = swarm
        .list_tasks(&TaskFilter {
            service: Some(service_id.clone()),
            ..Default::default()
        })
        .await
        .map_err(&err)?;
    let nodes = swarm.list_nodes().await.map_err(&err)?;
    let up_to_date =
        label_of(service.spec.as_ref(), labels::SPEC_HASH).as_deref() == Some(&desired_hash);
    let obs = observe(&service, &tasks, &nodes, p.spec.replicas, up_to_date, false);
    let live: HashSet<String> = tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter(|t| {
            !matches!(
                task_state(t),
                Some(TaskState::COMPLETE | TaskState::SHUTDOWN)
            )
        })
        .filter_map(|t| t.id.clone())
        .collect();
    let held = claims::list(&ctx.store, &key)
        .await
        .map_err(claims_err(p))?;
    let view = status::view(&obs.endpoints, &live, &held);
    for task in &view.stale {
        claims::release(&ctx.store, &key, task)
            .await
            .map_err(claims_err(p))?;
    }
    write_status(ctx, p, |s| {
        s.observed_generation = Some(generation);
        s.replicas = p.spec.replicas;
        s.ready_replicas = obs.ready_replicas;
        s.idle = view.idle;
        s.claimed = view.claimed;
        s.endpoints = obs.endpoints.clone();
        s.service_id = Some(service_id.clone());
        s.last_error =
            (!obs.is_ready() && obs.reason != reason::PROGRESSING).then(|| obs.message.clone());
        // Containers being replaced after a release are the pool working, not failing: Ready
        // while its service runs the current spec and some container is ready.
        let (st, why, msg) = if obs.is_ready()
            || (up_to_date && obs.reason == reason::PROGRESSING && obs.ready_replicas > 0)
        {
            (
                ConditionStatus::True,
                "Running",
                format!(
                    "{} idle, {} claimed of {} containers",
                    view.idle, view.claimed, p.spec.replicas
                ),
            )
        } else {
            (obs.status, obs.reason, obs.message.clone())
        };
        set_condition(&mut s.conditions, "Ready", st, why, &msg, Some(generation));
    })
    .await?;
    Ok(Action::requeue(REFRESH))
}

async fn cleanup(p: &WarmPool, ctx: &Context) -> Result<Action, WarmPoolError> {
    let swarm = &ctx.cfg.swarm;
    let err = swarm_err(p);
    let owner = owner(p, &ctx.cfg.instance);
    let sname = service_name(p.metadata.namespace(), &p.metadata.name);
    if let Some(svc) = swarm.inspect_service(&sname).await.map_err(&err)?
        && owned(&svc, &owner)
    {
        swarm.remove_service(&sname).await.map_err(&err)?;
        ctx.recorder
            .emit(
                p,
                EventType::Normal,
                "Deleted",
                &format!("removed service {sname}"),
            )
            .await;
    }
    remove_configs(ctx, &owner).await.map_err(&err)?;
    let key = p.key();
    claims::release_all(&ctx.store, &key)
        .await
        .map_err(claims_err(p))?;
    claims::delete_token(&ctx.store, &key)
        .await
        .map_err(claims_err(p))?;
    Ok(Action::await_change())
}

/// Removes the configs of `owner` (a config still mounted by a stopping task is refused by
/// Swarm: the sweep gets it later).
async fn remove_configs(ctx: &Context, owner: &Owner) -> Result<(), SwarmError> {
    let filter = [
        (labels::MANAGED, "true"),
        (labels::INSTANCE, owner.instance.as_str()),
        (labels::KIND, owner.kind.as_str()),
        (labels::NAMESPACE, owner.namespace.as_str()),
        (labels::NAME, owner.name.as_str()),
    ];
    for c in ctx.cfg.swarm.list_configs(&filter).await? {
        if let Some(id) = c.id {
            match ctx.cfg.swarm.remove_config(&id).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Removes this instance's pool services and configs whose pool (that incarnation) is gone.
async fn sweep(ctx: &Context) -> Result<usize, SwarmError> {
    let swarm = &ctx.cfg.swarm;
    let filter = [
        (labels::MANAGED, "true"),
        (labels::INSTANCE, ctx.cfg.instance.as_str()),
        (labels::KIND, WarmPoolSpec::KIND),
    ];
    let in_scope = |o: &Owner| ctx.namespace.as_deref().is_none_or(|ns| ns == o.namespace);
    let alive = |o: &Owner| {
        let key = ObjectKey::new(&o.namespace, &o.name);
        let store = ctx.store.clone();
        let cached = ctx
            .pools
            .get(&key)
            .is_some_and(|p| p.metadata.uid.as_deref() == Some(o.uid.as_str()));
        let uid = o.uid.clone();
        async move {
            if cached {
                return true;
            }
            match store.get::<WarmPoolSpec>(&key.namespace, &key.name).await {
                Ok(p) => p.metadata.uid.as_deref() == Some(uid.as_str()),
                Err(e) if e.is_not_found() => false,
                // Unsure: keep it (a late sweep beats removing a live pool's service).
                Err(_) => true,
            }
        }
    };
    let mut removed = 0;
    for svc in swarm.list_services(&filter).await? {
        let spec = svc.spec.as_ref();
        let owner = spec
            .and_then(|s| s.labels.as_ref())
            .and_then(Owner::from_labels);
        let (Some(o), Some(name)) = (owner, spec.and_then(|s| s.name.clone())) else {
            continue;
        };
        if in_scope(&o) && !alive(&o).await {
            tracing::info!(service = %name, "sweep: removing orphaned pool service");
            swarm.remove_service(&name).await?;
            removed += 1;
        }
    }
    for c in swarm.list_configs(&filter).await? {
        let owner = c
            .spec
            .as_ref()
            .and_then(|s| s.labels.as_ref())
            .and_then(Owner::from_labels);
        let (Some(o), Some(id)) = (owner, c.id) else {
            continue;
        };
        if in_scope(&o) && !alive(&o).await {
            match swarm.remove_config(&id).await {
                Ok(()) => removed += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Runs the warm-pool controller and its sweep until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    fcfg: FunctionsConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut ccfg = ControllerConfig::named("warmpool");
    ccfg.runner.resync = Some(cfg.resync.min(Duration::from_secs(30)));
    ccfg.runner.backoff_max = Duration::from_secs(30);
    let controller = Controller::<WarmPoolSpec>::new(store.clone(), ns, ccfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop.clone());
    let ctx = Arc::new(Context {
        store: store.clone(),
        recorder: Recorder::new(store, "controller/warmpool", cfg.event_ttl),
        pools: controller.cache(),
        namespace: cfg.namespace.clone(),
        cfg: fcfg,
    });
    let aux = stop.child_token();
    let sweeper = {
        let ctx = ctx.clone();
        let every = ctx.cfg.sweep_every;
        let aux = aux.clone();
        tokio::spawn(async move {
            let pools = ctx.pools.clone();
            periodic::every(pools.wait_ready(), every, aux, || async {
                match sweep(&ctx).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "warm pool sweep removed orphans"),
                    Err(e) => tracing::warn!(error = %e, "warm pool sweep failed"),
                }
            })
            .await
        })
    };
    controller
        .run(reconcile, |_, _, _| Action::backoff(), ctx)
        .await;
    aux.cancel();
    let _ = sweeper.await;
}
