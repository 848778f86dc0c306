//! The template node of a pool: what a node of the pool will look like to Swarm once booted,
//! built from its Nova flavor rather than from a running node, so that a pool at zero nodes
//! can be planned for (cluster-autoscaler's "template node", design §3).
//!
//! Capacity is the flavor's RAM minus `systemReserveMb` and its vCPUs as millicores; labels
//! are the ones the membership reconciler sets on a joined node (the pool's `nodeLabels`, the
//! ownership labels, `lambda.pool`, `lambda.flavor`) except the per-node ones no one knows
//! before the node exists (its name and uid), which constraints cannot usefully name anyway.

use std::collections::BTreeMap;

use crate::api::{NodePoolSpec, Object};
use crate::openstack::Flavor;
use crate::swarm::labels;

use super::super::membership::{LABEL_FLAVOR, LABEL_POOL};
use super::super::node::KIND as NODE_KIND;
use super::constraints::{NodeAttributes, Role};
use super::model::{Resources, SimNode};

/// Errors of template building.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "NodePool {pool}: flavor {flavor} has {ram_mb} MiB, not more than the {reserve_mb} MiB \
         system reserve: its nodes could run nothing"
    )]
    ReserveExceedsFlavor {
        pool: String,
        flavor: String,
        ram_mb: u64,
        reserve_mb: u64,
    },
    #[error("NodePool {pool}: flavor {flavor} has no vCPUs")]
    NoVcpus { pool: String, flavor: String },
}

/// A pool's template node. Invariant: `node.allocatable` is the flavor's RAM minus the system
/// reserve (never more than Swarm reports for a booted VM of the flavor, when the reserve
/// covers the guest's own use) and all its vCPUs; `node.reserved` is zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateNode {
    /// The pool's key, `namespace/name` (pools of different namespaces share one Swarm).
    pub pool: String,
    /// The flavor as the pool names it (what reasons show, e.g. `m1.small`).
    pub flavor: String,
    /// The whole flavor (RAM, vCPUs): what one node takes from the project's quota.
    pub flavor_size: Resources,
    /// An empty node of the pool as the simulation sees it.
    pub node: SimNode,
}

impl TemplateNode {
    /// A fresh, empty node of the pool named `name` (for the simulation's new nodes).
    pub fn instantiate(&self, name: String) -> SimNode {
        SimNode {
            name,
            ..self.node.clone()
        }
    }
}

/// The template node of `pool` booting `flavor`, labelled as the membership reconciler of
/// platform `instance` will label it.
pub fn template_node(
    pool: &Object<NodePoolSpec>,
    flavor: &Flavor,
    instance: &str,
) -> Result<TemplateNode, TemplateError> {
    let name = &pool.metadata.name;
    let key = pool.key().to_string();
    let reserve = u64::from(
        pool.spec
            .autoscaling
            .clone()
            .unwrap_or_default()
            .system_reserve_mb,
    );
    if flavor.ram <= reserve {
        return Err(TemplateError::ReserveExceedsFlavor {
            pool: key,
            flavor: pool.spec.flavor.clone(),
            ram_mb: flavor.ram,
            reserve_mb: reserve,
        });
    }
    if flavor.vcpus == 0 {
        return Err(TemplateError::NoVcpus {
            pool: key,
            flavor: pool.spec.flavor.clone(),
        });
    }
    // Same order as membership: the pool's labels first, the platform's override them.
    let mut l: BTreeMap<String, String> = pool.spec.node_labels.clone();
    l.insert(labels::MANAGED.into(), "true".into());
    l.insert(labels::INSTANCE.into(), instance.into());
    l.insert(labels::KIND.into(), NODE_KIND.into());
    l.insert(labels::NAMESPACE.into(), pool.metadata.namespace().into());
    l.insert(LABEL_POOL.into(), name.clone());
    l.insert(LABEL_FLAVOR.into(), pool.spec.flavor.clone());
    let cpu = u64::from(flavor.vcpus) * 1000;
    Ok(TemplateNode {
        pool: key.clone(),
        flavor: pool.spec.flavor.clone(),
        flavor_size: Resources::new(flavor.ram, cpu),
        node: SimNode {
            name: format!("{name}-template"),
            pool: Some(key),
            attributes: NodeAttributes {
                // Unknown until the node exists; Swarm reads unknown values as "".
                id: String::new(),
                hostname: String::new(),
                // The platform's VMs join as workers.
                role: Role::Worker,
                os: "linux".into(),
                // Docker reports `uname -m`, which is what Rust calls the controller's own
                // architecture; the workers are assumed to share it.
                arch: std::env::consts::ARCH.into(),
                labels: l,
                engine_labels: BTreeMap::new(),
            },
            allocatable: Resources::new(flavor.ram - reserve, cpu),
            reserved: Resources::ZERO,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::constraints::Constraint;
    use super::*;
    use crate::api::nodepool::AutoscalingPolicy;

    fn pool(reserve: Option<u32>) -> Object<NodePoolSpec> {
        let mut spec: NodePoolSpec = serde_saphyr::from_str(
            "image: {glanceImage: b}\nflavor: m1.small\nnodeLabels: {tier: workers}\n",
        )
        .unwrap();
        spec.autoscaling = reserve.map(|r| AutoscalingPolicy {
            enabled: true,
            system_reserve_mb: r,
            ..AutoscalingPolicy::default()
        });
        Object::new("team", "workers", spec)
    }

    fn flavor(ram: u64, vcpus: u32) -> Flavor {
        Flavor {
            id: "2".into(),
            name: "m1.small".into(),
            vcpus,
            ram,
            disk: 20,
            ephemeral: 0,
            is_public: true,
        }
    }

    #[test]
    fn capacity_is_the_flavor_minus_the_reserve() {
        let t = template_node(&pool(Some(512)), &flavor(2048, 2), "i1").unwrap();
        assert_eq!(t.node.allocatable, Resources::new(1536, 2000));
        assert_eq!(t.flavor_size, Resources::new(2048, 2000));
        assert_eq!(t.node.reserved, Resources::ZERO);
        // No autoscaling block: the documented default reserve.
        let t = template_node(&pool(None), &flavor(2048, 1), "i1").unwrap();
        assert_eq!(t.node.allocatable, Resources::new(1792, 1000));
        assert_eq!(t.flavor, "m1.small");
        assert_eq!(t.pool, "team/workers");
        assert_eq!(t.node.pool.as_deref(), Some("team/workers"));
    }

    #[test]
    fn carries_the_labels_membership_sets() {
        let t = template_node(&pool(None), &flavor(2048, 1), "i1").unwrap();
        let l = &t.node.attributes.labels;
        assert_eq!(l["tier"], "workers");
        assert_eq!(l["lambda.pool"], "workers");
        assert_eq!(l["lambda.flavor"], "m1.small");
        assert_eq!(l["lambda.managed"], "true");
        assert_eq!(l["lambda.instance"], "i1");
        assert_eq!(l["lambda.namespace"], "team");
        let ok = |c: &str| Constraint::parse(c).unwrap().matches(&t.node.attributes);
        assert!(ok("node.role==worker"));
        assert!(ok("node.labels.tier==workers"));
        assert!(ok("node.labels.lambda.pool==workers"));
        assert!(!ok("node.role==manager"));
        assert!(
            !ok("node.hostname==w-1"),
            "no host name before the node exists"
        );
        assert!(ok("node.hostname!=w-1"));
        let n = t.instantiate("workers-new-1".into());
        assert_eq!(n.name, "workers-new-1");
        assert_eq!(n.allocatable, t.node.allocatable);
    }

    #[test]
    fn a_flavor_the_reserve_eats_is_an_error() {
        let err = template_node(&pool(Some(512)), &flavor(512, 1), "i1").unwrap_err();
        assert_eq!(
            err,
            TemplateError::ReserveExceedsFlavor {
                pool: "team/workers".into(),
                flavor: "m1.small".into(),
                ram_mb: 512,
                reserve_mb: 512,
            }
        );
        assert!(err.to_string().contains("512 MiB system reserve"), "{err}");
        assert!(matches!(
            template_node(&pool(None), &flavor(2048, 0), "i1"),
            Err(TemplateError::NoVcpus { .. })
        ));
    }
}
