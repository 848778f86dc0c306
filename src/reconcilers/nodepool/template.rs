//! What a pool's nodes should look like: the image to boot (a snapshot image's built Glance
//! image or a Glance image), the node template, the desired count, new node objects, and the
//! plan's view of the existing nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::meta::OwnerReference;
use crate::api::{
    API_VERSION, ConditionStatus, Conditions, NodePoolSpec, NodeSpec, Object, ObjectKey, Resource,
    SnapshotImageSpec,
};
use crate::runtime::Cache;

use super::super::node::{HEALTHY, READY};
use super::POOL_LABEL;
use super::plan::NodeView;

/// The image a pool's new nodes boot from, or why there is none (reason, message).
pub fn resolve_image(
    pool: &Object<NodePoolSpec>,
    snapshots: &Cache<SnapshotImageSpec>,
) -> Result<String, (&'static str, String)> {
    if let Some(g) = &pool.spec.image.glance_image {
        return Ok(g.clone());
    }
    let Some(name) = &pool.spec.image.snapshot_image else {
        return Err(("NoImage", "spec.image names no image".into()));
    };
    let key = ObjectKey::new(pool.metadata.namespace(), name);
    let Some(si) = snapshots.get(&key) else {
        return Err((
            "SnapshotImageNotFound",
            format!("SnapshotImage {key} does not exist"),
        ));
    };
    match si.status.as_ref().and_then(|s| s.image_id.clone()) {
        Some(id) => Ok(id),
        None => {
            let why = si
                .status
                .as_ref()
                .and_then(|s| s.condition(READY))
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "not built yet".into());
            Err((
                "SnapshotImageNotReady",
                format!("SnapshotImage {key} has no built image yet ({why})"),
            ))
        }
    }
}

/// The node spec every node of `pool` should have (with `image` to boot from).
pub fn template(pool: &Object<NodePoolSpec>, image: &str) -> NodeSpec {
    let s = &pool.spec;
    NodeSpec {
        pool: pool.metadata.name.clone(),
        image: image.to_string(),
        flavor: s.flavor.clone(),
        network: s.network.clone(),
        key_pair: s.key_pair.clone(),
        security_groups: s.security_groups.clone(),
        availability_zone: s.availability_zone.clone(),
    }
}

/// The replica count a pool converges to: the autoscaler's wish or `spec.replicas`, clamped.
pub fn desired(pool: &Object<NodePoolSpec>) -> u32 {
    let s = &pool.spec;
    let want = pool
        .status
        .as_ref()
        .and_then(|st| st.desired_replicas)
        .filter(|_| s.autoscaling.as_ref().is_some_and(|a| a.enabled))
        .unwrap_or(s.replicas);
    want.clamp(s.min_replicas, s.max_replicas.max(s.min_replicas))
}

pub(super) fn new_node(pool: &Object<NodePoolSpec>, spec: NodeSpec) -> Object<NodeSpec> {
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
    let mut name = format!("{}-{suffix}", pool.metadata.name);
    if name.len() > 63 {
        name = format!("{}-{suffix}", &pool.metadata.name[..57]);
    }
    let mut n = Object::new(pool.metadata.namespace(), &name, spec);
    n.metadata.labels = BTreeMap::from([(POOL_LABEL.to_string(), pool.metadata.name.clone())]);
    n.metadata.owner_references = vec![OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: NodePoolSpec::KIND.to_string(),
        name: pool.metadata.name.clone(),
        uid: pool.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
    }];
    n
}

/// The nodes the autoscaler decided to remove, when it owns the pool's size (a list left
/// behind by an autoscaler since disabled means nothing).
pub(super) fn autoscaler_victims(pool: &Object<NodePoolSpec>) -> Vec<String> {
    let enabled = pool.spec.autoscaling.as_ref().is_some_and(|a| a.enabled);
    pool.status
        .as_ref()
        .and_then(|s| s.autoscaler.as_ref())
        .filter(|_| enabled)
        .map(|a| a.scale_down_nodes.clone())
        .unwrap_or_default()
}

pub(super) fn views(
    live: &[&Arc<Object<NodeSpec>>],
    pending: &[String],
    tmpl: Option<&NodeSpec>,
    tasks: &HashMap<String, u32>,
    chosen: &[String],
) -> Vec<NodeView> {
    let mut v: Vec<NodeView> = live
        .iter()
        .map(|n| {
            let st = n.status.as_ref();
            NodeView {
                name: n.metadata.name.clone(),
                ready: st.is_some_and(|s| s.is_true(READY)),
                healthy: !st
                    .and_then(|s| s.condition(HEALTHY))
                    .is_some_and(|c| c.status == ConditionStatus::False),
                current: tmpl.is_none_or(|t| n.spec == *t),
                tasks: st
                    .and_then(|s| s.swarm_node_id.as_ref())
                    .and_then(|id| tasks.get(id))
                    .copied()
                    .unwrap_or(0),
                created: n
                    .metadata
                    .uid
                    .as_deref()
                    .and_then(crate::store::create_revision_of_uid)
                    .unwrap_or(i64::MAX),
                chosen: chosen.contains(&n.metadata.name),
            }
        })
        .collect();
    v.extend(pending.iter().map(|name| NodeView {
        name: name.clone(),
        ready: false,
        healthy: true,
        current: true,
        tasks: 0,
        created: i64::MAX,
        chosen: false,
    }));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodePoolStatus;
    use crate::api::nodepool::AutoscalerStatus;

    #[test]
    fn autoscaler_victims_count_only_while_it_owns_the_pool() {
        let spec: NodePoolSpec = serde_saphyr::from_str(
            "image: {glanceImage: b}\nflavor: f\nautoscaling: {enabled: true}\n",
        )
        .unwrap();
        let mut pool = Object::new("default", "workers", spec);
        assert!(autoscaler_victims(&pool).is_empty());
        pool.status = Some(NodePoolStatus {
            autoscaler: Some(AutoscalerStatus {
                scale_down_nodes: vec!["workers-1a2b3".into()],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(autoscaler_victims(&pool), ["workers-1a2b3"]);
        pool.spec.autoscaling.as_mut().unwrap().enabled = false;
        assert!(autoscaler_victims(&pool).is_empty());
    }
}
