//! The function reconciler: each `Function` becomes a Swarm config holding its code and a
//! Swarm service running it (see [`spec`] for the mapping), and its status follows what Swarm
//! reports (see [`status`]).
//!
//! - Replicas come from [`FunctionsConfig::desired_replicas`] (`spec.minReplicas` for now; the
//!   autoscaler will provide its own function).
//! - Code changes make a new config (configs are immutable) and a start-first rolling update;
//!   configs no service uses any more are removed once the rollout is done. An update Swarm
//!   rolled back is written again after a backoff (see [`rollout`]).
//! - Updates write at the service's current version index and retry on "update out of
//!   sequence"; a service already carrying the desired spec (by its `lambda.spec-hash` label) is
//!   left alone, so reconciles are cheap and restarts of the controller change nothing.
//! - Finalizer [`FINALIZER`]: on deletion the service goes, then (bounded wait for its tasks)
//!   its configs and secrets.
//! - A periodic [`sweep`] removes Swarm objects labelled as ours whose Function is gone
//!   (deleted behind the controller's back, e.g. `etcdctl del`).
//! - Docker's event stream triggers the affected functions, so status follows Swarm quickly.

mod cleanup;
pub mod rollout;
pub mod spec;
pub mod status;
pub mod sweep;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use bollard::models::Service;
use tokio_util::sync::CancellationToken;

use crate::api::{ConditionStatus, Function, FunctionSpec, ObjectKey, function::FunctionStatus};
use crate::runtime::conditions::set_condition;
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::status::patch_status;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};
use crate::swarm::labels::{self, Owner};
use crate::swarm::{Swarm, SwarmError, TaskFilter};

use super::ControllersConfig;
use super::autoscaler::observe::is_unplaceable;
use spec::{
    ResolvedConfig, ResolvedSecret, RuntimeImages, ServiceInputs, ServiceTuning, label_of,
    service_name, service_spec,
};
use status::{Observed, observe, reason};

/// The finalizer this controller puts on functions (the project's `lambda/<purpose>` naming).
pub const FINALIZER: &str = "lambda/function-cleanup";
/// The condition the controller maintains.
pub const READY: &str = "Ready";
/// Longest wait for a removed service's tasks before configs are removed anyway.
const TASK_DRAIN_LIMIT: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// The replica count a function should run with.
pub type DesiredReplicas = Arc<dyn Fn(&Function) -> u32 + Send + Sync>;

/// `spec.minReplicas`, whatever the load (tests of the reconciler alone).
pub fn min_replicas() -> DesiredReplicas {
    Arc::new(|f: &Function| f.spec.min_replicas)
}

/// The function autoscaler's `status.desiredReplicas`, kept within the spec as it is now
/// (a spec edited since the decision wins: never above `maxReplicas`, never under
/// `minReplicas` unless scaled to zero); `spec.minReplicas` until it decided.
pub fn autoscaled() -> DesiredReplicas {
    Arc::new(|f: &Function| {
        let spec = &f.spec;
        match f.status.as_ref().and_then(|s| s.desired_replicas) {
            None => spec.min_replicas,
            Some(0) => 0,
            Some(d) => d.max(spec.min_replicas).min(spec.max_replicas.max(1)),
        }
    })
}

/// Settings of the function controller.
#[derive(Clone)]
pub struct FunctionsConfig {
    /// The Swarm manager.
    pub swarm: Swarm,
    /// Runtime → image.
    pub images: RuntimeImages,
    /// This platform instance's `lambda.instance` label: only objects carrying it are touched
    /// by the sweep (several platforms or test runs may share one Swarm).
    pub instance: String,
    /// Service timings.
    pub tuning: ServiceTuning,
    /// Replicas per function.
    pub desired_replicas: DesiredReplicas,
    /// How often orphans are swept.
    pub sweep_every: Duration,
    /// Every function is reconciled at least this often (Docker sends no events for tasks on
    /// other nodes).
    pub poll_every: Duration,
    /// Requeue delay while a function is not ready.
    pub not_ready_requeue: Duration,
    /// Requeue delay while one of its tasks is starting: Docker sends no events for tasks on
    /// other nodes, and a call held at zero waits for the status this reconcile writes.
    pub starting_requeue: Duration,
    /// Swarm placement constraints of every function service (e.g. `node.role==worker`).
    pub constraints: Vec<String>,
    /// A service short of running tasks with none on the way for this long is re-kicked
    /// (forced update; see [`watchdog`]).
    pub stuck_after: Duration,
}

impl std::fmt::Debug for FunctionsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionsConfig")
            .field("swarm", &self.swarm)
            .field("images", &self.images)
            .field("instance", &self.instance)
            .field("tuning", &self.tuning)
            .field("sweep_every", &self.sweep_every)
            .field("poll_every", &self.poll_every)
            .field("stuck_after", &self.stuck_after)
            .finish_non_exhaustive()
    }
}

impl FunctionsConfig {
    /// Defaults around a Swarm connection, runtime images and an instance id.
    pub fn new(swarm: Swarm, images: RuntimeImages, instance: &str) -> Self {
        FunctionsConfig {
            swarm,
            images,
            instance: instance.to_string(),
            tuning: ServiceTuning::default(),
            desired_replicas: autoscaled(),
            sweep_every: Duration::from_secs(30),
            poll_every: Duration::from_secs(10),
            not_ready_requeue: Duration::from_secs(1),
            starting_requeue: Duration::from_millis(100),
            constraints: Vec::new(),
            stuck_after: Duration::from_secs(20),
        }
    }
}

/// Errors of the function reconciler.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("Function {function}: {source}")]
    Swarm {
        function: ObjectKey,
        #[source]
        source: SwarmError,
    },
    #[error("writing status of Function {function}: {source}")]
    Status {
        function: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// What the reconciles share.
pub struct Context {
    pub store: Store,
    pub cfg: FunctionsConfig,
    pub recorder: Recorder,
    /// The controller's cache of functions (the sweep and the event mapper read it).
    pub functions: Cache<FunctionSpec>,
    /// Namespace the controller watches; the sweep stays inside it.
    pub namespace: Option<String>,
    /// The updates written per function (see [`rollout`]).
    pub attempted: rollout::Attempts,
}

impl Context {
    fn swarm_err(&self, f: &Function) -> impl Fn(SwarmError) -> FunctionError + use<> {
        let function = f.key();
        move |source| FunctionError::Swarm {
            function: function.clone(),
            source,
        }
    }
}

/// Reconciles one function (invalid specs, finalizer, apply or cleanup).
pub async fn reconcile(
    f: Arc<Function>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<FunctionError>> {
    if !f.is_deleting() {
        // A hand edit may leave an object that parses but does not validate (or, seen only by
        // a fresh read, does not parse at all: the cache keeps the last good state). Report it
        // and leave the running service alone; the finalizer helper could not even write it.
        // The fresh read comes first: the cached object may be the last one that parsed.
        let invalid = match ctx
            .store
            .get::<FunctionSpec>(f.metadata.namespace(), &f.metadata.name)
            .await
        {
            Err(StoreError::Invalid { message, .. }) => Some(message),
            _ => f.validate().err().map(|errors| errors.to_string()),
        };
        if let Some(message) = invalid {
            return invalid_spec(&f, &ctx, &message)
                .await
                .map_err(FinalizerError::Apply);
        }
    }
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, f, |ev| async move {
        match ev {
            FinalizerEvent::Apply(f) => apply(&f, &ctx).await,
            FinalizerEvent::Cleanup(f) => cleanup::cleanup(&f, &ctx).await,
        }
    })
    .await
}

async fn invalid_spec(f: &Function, ctx: &Context, message: &str) -> Result<Action, FunctionError> {
    let generation = f.generation();
    let was = ready_reason(f);
    write_status(ctx, f, |s| {
        s.observed_generation = Some(generation);
        s.last_error = Some(message.to_string());
        set_condition(
            &mut s.conditions,
            READY,
            ConditionStatus::False,
            reason::INVALID_SPEC,
            message,
            Some(generation),
        );
    })
    .await?;
    if was.as_deref() != Some(reason::INVALID_SPEC) {
        tracing::warn!(function = %f.key(), "invalid spec: {message}");
        ctx.recorder
            .emit(f, EventType::Warning, reason::INVALID_SPEC, message)
            .await;
    }
    Ok(Action::await_change())
}

fn ready_reason(f: &Function) -> Option<String> {
    f.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone())
}

async fn write_status(
    ctx: &Context,
    f: &Function,
    change: impl Fn(&mut FunctionStatus),
) -> Result<(), FunctionError> {
    match patch_status(&ctx.store, f, change).await {
        Ok(_) => Ok(()),
        // Deleted (or recreated) meanwhile: the next reconcile sees the new state.
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(FunctionError::Status {
            function: f.key(),
            source,
        }),
    }
}

/// Writes a not-ready outcome that happened before any service could be written.
async fn blocked(
    ctx: &Context,
    f: &Function,
    replicas: u32,
    why: &'static str,
    message: String,
    retry: Duration,
) -> Result<Action, FunctionError> {
    let generation = f.generation();
    let was = ready_reason(f);
    write_status(ctx, f, |s| {
        s.replicas = replicas;
        s.observed_generation = Some(generation);
        s.last_error = Some(message.clone());
        set_condition(
            &mut s.conditions,
            READY,
            ConditionStatus::False,
            why,
            &message,
            Some(generation),
        );
    })
    .await?;
    if was.as_deref() != Some(why) {
        ctx.recorder
            .emit(f, EventType::Warning, why, &message)
            .await;
    }
    Ok(Action::requeue(retry))
}

/// True when `svc` belongs to this function name in this platform instance.
fn owned_by_us(svc: &Service, f: &Function, instance: &str) -> bool {
    let l = svc
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default();
    Owner::from_labels(&l).is_some_and(|o| {
        o.instance == instance && o.namespace == f.metadata.namespace() && o.name == f.metadata.name
    })
}

async fn apply(f: &Function, ctx: &Context) -> Result<Action, FunctionError> {
    let swarm = &ctx.cfg.swarm;
    let err = ctx.swarm_err(f);
    let ns = f.metadata.namespace();
    let name = &f.metadata.name;
    let generation = f.generation();
    let replicas = (ctx.cfg.desired_replicas)(f);
    let retry = Duration::from_secs(5);

    let Some(image) = ctx.cfg.images.image_for(&f.spec) else {
        let rt = f.spec.runtime.as_str();
        let msg = format!(
            "no image is configured for runtime {rt} (lambda controller --runtime-image {rt}=IMAGE, or LAMBDA_IMAGE_{} in $LAMBDA_HOME/images/versions.env)",
            rt.to_uppercase()
        );
        return blocked(ctx, f, replicas, reason::IMAGE_MISSING, msg, retry).await;
    };

    let owner = spec::owner(f, &ctx.cfg.instance);
    let (secrets, missing) = match resolve_secrets(ctx, f, &owner).await {
        Ok(found) => found,
        Err(SecretsError::Swarm(e)) => return Err(err(e)),
        Err(SecretsError::Store(e)) => {
            let msg = format!("cannot read the function's secrets: {e}");
            return blocked(ctx, f, replicas, reason::SECRET_MISSING, msg, retry).await;
        }
    };
    if !missing.is_empty() {
        let msg = format!(
            "secret(s) {} exist neither as platform secrets of namespace {ns} (lambda secret create) nor in the swarm (docker secret create)",
            missing.join(", ")
        );
        return blocked(ctx, f, replicas, reason::SECRET_MISSING, msg, retry).await;
    }

    let code = match f.spec.code.as_ref().and_then(|c| c.inline.as_deref()) {
        Some(src) => {
            let hash = spec::code_hash(src);
            let cname = spec::config_name(ns, name, &hash);
            let mut l = owner.labels();
            l.insert(labels::CODE_HASH.into(), hash);
            let id = swarm
                .ensure_config(&cname, src.as_bytes(), l)
                .await
                .map_err(&err)?;
            Some(ResolvedConfig { name: cname, id })
        }
        None => None,
    };

    let desired = service_spec(&ServiceInputs {
        function: f,
        image: &image,
        code: code.as_ref(),
        secrets: &secrets,
        replicas,
        instance: &ctx.cfg.instance,
        tuning: &ctx.cfg.tuning,
        constraints: &ctx.cfg.constraints,
    });
    let desired_hash = label_of(Some(&desired), labels::SPEC_HASH).unwrap_or_default();
    let sname = service_name(ns, name);
    let generation_s = generation.to_string();
    let uid = f.metadata.uid.clone().unwrap_or_default();
    let stale = |svc: &Service| {
        let s = svc.spec.as_ref();
        label_of(s, labels::SPEC_HASH).as_deref() != Some(desired_hash.as_str())
            || label_of(s, labels::GENERATION).as_deref() != Some(generation_s.as_str())
            || label_of(s, labels::UID).as_deref() != Some(uid.as_str())
    };

    let service = match swarm.inspect_service(&sname).await.map_err(&err)? {
        None => match swarm.create_service(desired.clone()).await {
            Ok(id) => {
                tracing::info!(function = %f.key(), service = %sname, %id, "created service");
                ctx.recorder
                    .emit(
                        f,
                        EventType::Normal,
                        "Created",
                        &format!("created service {sname} ({replicas} replicas, image {image})"),
                    )
                    .await;
                swarm.inspect_service(&sname).await.map_err(&err)?
            }
            // Created concurrently (another controller incarnation): look again shortly.
            Err(e) if e.is_conflict() => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(err(e)),
        },
        Some(svc) if !owned_by_us(&svc, f, &ctx.cfg.instance) => {
            let msg = format!(
                "service {sname} exists but is not managed by this controller (labels {}={}); remove it or rename the function",
                labels::INSTANCE,
                ctx.cfg.instance
            );
            return blocked(
                ctx,
                f,
                replicas,
                reason::NAME_CONFLICT,
                msg,
                Duration::from_secs(30),
            )
            .await;
        }
        Some(svc) if stale(&svc) && !ctx.attempted.holding(&f.key(), &svc, &desired_hash) => {
            if ctx.attempted.rolled_back(&f.key(), &svc, &desired_hash) {
                ctx.recorder
                    .emit(
                        f,
                        EventType::Normal,
                        "RetryingUpdate",
                        &format!("writing again the update of {sname} Swarm rolled back"),
                    )
                    .await;
            }
            let wrote = swarm
                .update_service(&sname, |cur| {
                    if !stale(cur) {
                        return None;
                    }
                    let mut next = desired.clone();
                    // Keep a forced-update counter someone set by hand (it is part of the task
                    // spec; resetting it would restart every task).
                    if let (Some(t), Some(cur_t)) = (
                        next.task_template.as_mut(),
                        cur.spec.as_ref().and_then(|s| s.task_template.as_ref()),
                    ) {
                        t.force_update = cur_t.force_update;
                    }
                    Some(next)
                })
                .await
                .map_err(&err)?;
            if wrote {
                ctx.attempted.wrote(&f.key(), &desired_hash);
                tracing::info!(function = %f.key(), service = %sname, generation = generation, "updated service");
                ctx.recorder
                    .emit(
                        f,
                        EventType::Normal,
                        "Updated",
                        &format!("updated service {sname} to generation {generation}"),
                    )
                    .await;
            }
            swarm.inspect_service(&sname).await.map_err(&err)?
        }
        Some(svc) => Some(svc),
    };
    let Some(service) = service else {
        // Removed between our calls: start over.
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
    let was_rolled_back = ctx.attempted.rolled_back(&f.key(), &service, &desired_hash);
    // Only a task Swarm has not placed makes the nodes (and what they hold) worth a look.
    let capacity = if tasks.iter().any(is_unplaceable) {
        let nodes = swarm.list_nodes().await.map_err(&err)?;
        let all = swarm
            .list_tasks(&TaskFilter::default())
            .await
            .map_err(&err)?;
        watchdog::capacity(&nodes, &all)
    } else {
        Vec::new()
    };
    if let Some(stuck) = watchdog::stuck(
        &service,
        &tasks,
        replicas,
        &capacity,
        chrono::Utc::now(),
        ctx.cfg.stuck_after,
    ) {
        let msg = stuck.message(&sname);
        tracing::warn!(function = %f.key(), "{msg}");
        swarm
            .update_service(&sname, |cur| {
                let cur_spec = cur.spec.clone()?;
                let force = cur_spec
                    .task_template
                    .as_ref()
                    .and_then(|t| t.force_update)
                    .unwrap_or(0);
                // Our spec (which also undoes a hand-edited restart policy), unless Swarm
                // rolled it back: then the one it runs.
                let mut next = if was_rolled_back {
                    cur_spec
                } else {
                    desired.clone()
                };
                if let Some(t) = next.task_template.as_mut() {
                    t.force_update = Some(force.wrapping_add(1));
                }
                Some(next)
            })
            .await
            .map_err(&err)?;
        ctx.recorder
            .emit(f, EventType::Warning, reason::REKICKED, &msg)
            .await;
        return Ok(Action::requeue(ctx.cfg.not_ready_requeue));
    }
    let nodes = swarm.list_nodes().await.map_err(&err)?;
    let up_to_date = label_of(service.spec.as_ref(), labels::SPEC_HASH).as_deref()
        == Some(desired_hash.as_str());
    let obs = observe(
        &service,
        &tasks,
        &nodes,
        replicas,
        up_to_date,
        was_rolled_back,
    );
    record_status(ctx, f, replicas, &service_id, &obs).await?;
    if obs.is_ready() {
        let keep: Vec<&str> = code
            .iter()
            .map(|c| c.id.as_str())
            .chain(secrets.iter().map(|s| s.id.as_str()))
            .collect();
        cleanup::remove_old_objects(ctx, f, &keep).await;
    }
    let fresh = ctx.cfg.stuck_after;
    Ok(
        if status::task_starting(&tasks, chrono::Utc::now(), fresh) {
            Action::requeue(ctx.cfg.starting_requeue)
        } else if obs.is_ready() {
            Action::await_change()
        } else {
            Action::requeue(ctx.cfg.not_ready_requeue)
        },
    )
}

/// Why a function's secrets could not be resolved.
enum SecretsError {
    Swarm(SwarmError),
    Store(crate::store::secrets::SecretError),
}

/// Each of the function's `spec.secrets`: a platform secret of its namespace (made into a Swarm
/// secret of this function's, named after the value's hash), else a Swarm secret of that name
/// made by hand; the second list names those that are neither.
async fn resolve_secrets(
    ctx: &Context,
    f: &Function,
    owner: &Owner,
) -> Result<(Vec<ResolvedSecret>, Vec<String>), SecretsError> {
    let swarm = &ctx.cfg.swarm;
    let ns = f.metadata.namespace();
    let mut secrets = Vec::new();
    let mut missing = Vec::new();
    for s in &f.spec.secrets {
        let platform = if crate::store::secrets::check_name(&s.name).is_ok() {
            crate::store::secrets::get(&ctx.store, ns, &s.name)
                .await
                .map_err(SecretsError::Store)?
        } else {
            None
        };
        let resolved = match platform {
            Some(p) => {
                let value = p.value().map_err(SecretsError::Store)?;
                let name = spec::secret_object_name(ns, &f.metadata.name, &s.name, &p.sha256);
                let id = swarm
                    .ensure_secret(&name, &value, owner.labels())
                    .await
                    .map_err(SecretsError::Swarm)?;
                Some((name, id))
            }
            None => swarm
                .find_secret(&s.name)
                .await
                .map_err(SecretsError::Swarm)?
                .map(|id| (s.name.clone(), id)),
        };
        match resolved {
            Some((name, id)) => secrets.push(ResolvedSecret {
                name,
                id,
                target: s.name.clone(),
                env: s.env.clone(),
            }),
            None => missing.push(s.name.clone()),
        }
    }
    Ok((secrets, missing))
}

async fn record_status(
    ctx: &Context,
    f: &Function,
    replicas: u32,
    service_id: &str,
    obs: &Observed,
) -> Result<(), FunctionError> {
    let generation = f.generation();
    let was = ready_reason(f);
    let failing = !obs.is_ready() && obs.reason != reason::PROGRESSING;
    write_status(ctx, f, |s| {
        s.replicas = replicas;
        s.ready_replicas = obs.ready_replicas;
        s.service_id = Some(service_id.to_string());
        s.endpoints = obs.endpoints.clone();
        s.observed_generation = Some(generation);
        if obs.is_ready() {
            s.last_error = None;
        } else if failing {
            s.last_error = Some(obs.message.clone());
        }
        set_condition(
            &mut s.conditions,
            READY,
            obs.status,
            obs.reason,
            &obs.message,
            Some(generation),
        );
    })
    .await?;
    if failing && was.as_deref() != Some(obs.reason) {
        ctx.recorder
            .emit(f, EventType::Warning, obs.reason, &obs.message)
            .await;
    }
    Ok(())
}

/// Runs the function controller, its event trigger and its sweep until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    fcfg: FunctionsConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut ccfg = ControllerConfig::named("function");
    ccfg.runner.resync = Some(cfg.resync.min(fcfg.poll_every));
    ccfg.runner.backoff_max = Duration::from_secs(30);
    let controller = Controller::<FunctionSpec>::new(store.clone(), ns, ccfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop.clone());
    let ctx = Arc::new(Context {
        store: store.clone(),
        recorder: Recorder::new(store, "controller/function", cfg.event_ttl),
        functions: controller.cache(),
        namespace: cfg.namespace.clone(),
        attempted: Default::default(),
        cfg: fcfg,
    });
    // The helpers stop with the controller (a child token: never cancel the caller's).
    let aux = stop.child_token();
    let triggers = tokio::spawn(sweep::trigger_on_swarm_events(
        ctx.clone(),
        controller.trigger_sender(),
        aux.clone(),
    ));
    let sweeper = tokio::spawn(sweep::sweep_periodically(ctx.clone(), aux.clone()));
    controller
        .run(reconcile, |_, _, _| Action::backoff(), ctx)
        .await;
    aux.cancel();
    let _ = triggers.await;
    let _ = sweeper.await;
}
