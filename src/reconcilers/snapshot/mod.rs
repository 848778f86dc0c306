//! The snapshot reconciler: a `SnapshotImage` becomes a Glance image that holds Docker and the
//! platform's runtime images, built on a builder server.
//!
//! - A new generation of the spec starts a build: a one-time token is issued (only its hash is
//!   stored, in a [`record`] in etcd) and a builder server is booted from `spec.baseImage`
//!   with the spec's flavor, network, key pair and security groups, owner tags and metadata
//!   ([`ClusterConfig::owner`]) and a [`userdata`] script: install Docker where missing, load
//!   the runtime images from the controller's builder [`endpoint`], run `spec.setupScript`,
//!   phone home.
//! - On a successful phone-home holding every runtime image, the builder is saved with
//!   `createImage`; once the image is active, `status.imageId` / `runtimeImages` name it, the
//!   builder and the record are deleted, and the image of the previous generation goes.
//! - Failures (builder ERROR, no phone-home within the timeout, a failed setup, a killed
//!   image, unknown cloud names) end in a `Ready=False` condition with a specific reason (see
//!   [`decide::reason`]) and a deleted builder; the condition stays until the spec changes.
//!   The last good image stays in `status.imageId` meanwhile.
//! - Level-triggered: every reconcile derives the next step ([`decide::decide`]) from the
//!   status, the builder Nova lists under the object's owner tag, the build record and the
//!   pending image, so a controller restarted mid-build carries on (and never makes a second
//!   builder or image).
//! - Finalizer [`FINALIZER`]: deletion removes the builder, the images and the record; a
//!   periodic [`sweep`] removes builders and records whose object is gone.

mod build;
mod cleanup;
mod create;
pub mod decide;
pub mod endpoint;
pub mod record;
mod sweep;
pub mod userdata;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ObjectKey, SnapshotImage, SnapshotImageSpec};
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, FinalizerEvent, Metrics, Recorder, finalizer,
};
use crate::store::{Store, StoreError};

use super::ControllersConfig;
use super::cluster::ClusterConfig;

/// The finalizer this controller puts on snapshot images.
pub const FINALIZER: &str = "lambda/snapshot-cleanup";
/// The condition the controller maintains.
pub const READY: &str = "Ready";
/// Server metadata key: the generation a builder builds.
pub const META_GENERATION: &str = "lambda:generation";
/// Image property prefix: `lambda:runtime:<runtime>` = the image reference it holds.
pub const META_RUNTIME_PREFIX: &str = "lambda:runtime:";
/// Server name prefix of builders.
pub const BUILDER_PREFIX: &str = "lambda-build";

/// Errors of the snapshot reconciler and its builder endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("SnapshotImage {object}: {source}")]
    Cloud {
        object: ObjectKey,
        #[source]
        source: Box<crate::openstack::Error>,
    },
    #[error("writing status of SnapshotImage {object}: {source}")]
    Status {
        object: ObjectKey,
        #[source]
        source: Box<StoreError>,
    },
    #[error("sweeping orphaned builder servers: {source}")]
    Sweep {
        #[source]
        source: Box<crate::openstack::Error>,
    },
    #[error("reading SnapshotImage {object}: {source}")]
    Read {
        object: ObjectKey,
        #[source]
        source: Box<StoreError>,
    },
    #[error("etcd {op} of {key}: {source}")]
    Etcd {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op} of {key} timed out after {after:?}")]
    EtcdTimeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    #[error("build record {key}: {message}")]
    Record { key: String, message: String },
    #[error("writing a build record: {source}")]
    RecordWrite {
        #[source]
        source: Box<StoreError>,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the reconciles, the sweep and the endpoint share.
pub struct Context {
    pub store: Store,
    pub cluster: ClusterConfig,
    pub recorder: Recorder,
    /// The controller's cache of snapshot images (the sweep reads it).
    pub images: Cache<SnapshotImageSpec>,
    /// Namespace the controller watches; the sweep stays inside it.
    pub namespace: Option<String>,
}

impl Context {
    fn cloud_err(
        &self,
        si: &SnapshotImage,
    ) -> impl Fn(crate::openstack::Error) -> SnapshotError + use<> {
        let object = si.key();
        move |source| SnapshotError::Cloud {
            object: object.clone(),
            source: Box::new(source),
        }
    }
}

/// Reconciles one snapshot image (finalizer, then build or cleanup).
pub async fn reconcile(
    si: Arc<SnapshotImage>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<SnapshotError>> {
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, si, |ev| async move {
        match ev {
            FinalizerEvent::Apply(si) => build::apply(&si, &ctx).await,
            FinalizerEvent::Cleanup(si) => cleanup::cleanup(&si, &ctx).await,
        }
    })
    .await
}

/// Runs the snapshot controller and its orphan sweep until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    cluster: ClusterConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut ccfg = ControllerConfig::named("snapshot");
    ccfg.runner.resync = Some(cfg.resync);
    ccfg.runner.backoff_max = cluster
        .timings
        .error_backoff_max
        .min(Duration::from_secs(60));
    let controller = Controller::<SnapshotImageSpec>::new(store.clone(), ns, ccfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop.clone());
    let ctx = Arc::new(Context {
        store: store.clone(),
        recorder: Recorder::new(store, "controller/snapshot", cfg.event_ttl),
        images: controller.cache(),
        namespace: cfg.namespace.clone(),
        cluster,
    });
    let aux = stop.child_token();
    let sweeper = tokio::spawn(sweep::sweep_periodically(ctx.clone(), aux.clone()));
    controller
        .run(reconcile, |_, _, _| Action::backoff(), ctx)
        .await;
    aux.cancel();
    let _ = sweeper.await;
}
