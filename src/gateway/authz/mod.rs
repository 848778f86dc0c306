//! Authorization: who a request acts as (a [`Principal`], from its API key) and what it may do
//! (a [`Permission`] in a namespace, or on the platform). One pure decision, [`decide`], used by
//! every handler through [`Principal::check`]; a refusal is a 403 naming the missing permission.
//!
//! Roles are a ladder, each including the one below:
//! - `invoker`: invoke functions (synchronously and asynchronously), publish events, read the
//!   execution records of its namespaces;
//! - `developer`: also read and write functions, read logs, events and event sources, and read
//!   the platform's node pools, nodes and snapshot images;
//! - `admin`: also write event sources; with all namespaces, also manage API keys, node pools,
//!   nodes and snapshot images (the platform's, shared by every namespace).
//!
//! A key's scope is a list of namespaces or all of them. Platform-level objects belong to no
//! namespace: reading them takes the role only, writing them an admin key of all namespaces (an
//! admin of one namespace must not change what every namespace runs on).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::Kind;

mod principal;

pub use principal::Principal;

/// What a key may do, in increasing power (each role includes the ones before it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Invoke, publish events, read executions.
    #[default]
    Invoker,
    /// + function CRUD, logs, reading events, event sources and the platform's objects.
    Developer,
    /// + event sources; with all namespaces, API keys, node pools, nodes, snapshot images.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Invoker, Role::Developer, Role::Admin];

    /// `invoker`, `developer`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Invoker => "invoker",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown role {s:?} (invoker, developer, admin)"))
    }
}

/// The namespaces a key acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace, and the platform's own objects.
    All,
    /// These namespaces only (never empty for a valid key).
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// A scope of the given namespaces.
    pub fn of<I: IntoIterator<Item = S>, S: Into<String>>(namespaces: I) -> Scope {
        Scope::Namespaces(namespaces.into_iter().map(Into::into).collect())
    }

    /// True when `ns` is within the scope.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(set) => set.contains(ns),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all namespaces"),
            Scope::Namespaces(set) => {
                let list: Vec<&str> = set.iter().map(String::as_str).collect();
                write!(
                    f,
                    "namespace{} {}",
                    if list.len() == 1 { "" } else { "s" },
                    list.join(", ")
                )
            }
        }
    }
}

/// A role over a scope: what a key grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    pub scope: Scope,
}

impl Access {
    /// Everything: an admin of all namespaces (the key `lambda up` writes).
    pub fn admin() -> Access {
        Access {
            role: Role::Admin,
            scope: Scope::All,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.role, self.scope)
    }
}

/// Something a request does. Its name (`functions:write`) is what a 403 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Invoke a function, synchronously or asynchronously.
    FunctionsInvoke,
    /// Publish an event to the namespace's functions (`POST /v1/events`).
    EventsPublish,
    /// Read execution records (and their results and logs).
    ExecutionsRead,
    /// Read functions and their status.
    FunctionsRead,
    /// Create, replace and delete functions.
    FunctionsWrite,
    /// Read a function's replica logs.
    LogsRead,
    /// Read the platform's events (`Event` objects) of a namespace.
    EventsRead,
    /// Write `Event` objects (the platform writes them; no user needs to).
    EventsWrite,
    /// Read event sources.
    EventSourcesRead,
    /// Create, replace and delete event sources.
    EventSourcesWrite,
    /// Read node pools (platform-level).
    NodePoolsRead,
    /// Write node pools (platform-level).
    NodePoolsWrite,
    /// Read nodes (platform-level).
    NodesRead,
    /// Write nodes (platform-level).
    NodesWrite,
    /// Read snapshot images (platform-level).
    SnapshotImagesRead,
    /// Write snapshot images (platform-level).
    SnapshotImagesWrite,
    /// Read warm pools (platform-level).
    WarmPoolsRead,
    /// Write warm pools (platform-level).
    WarmPoolsWrite,
    /// Create, list and delete API keys (platform-level).
    ApiKeysManage,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 19] = [
        Permission::FunctionsInvoke,
        Permission::EventsPublish,
        Permission::ExecutionsRead,
        Permission::FunctionsRead,
        Permission::FunctionsWrite,
        Permission::LogsRead,
        Permission::EventsRead,
        Permission::EventsWrite,
        Permission::EventSourcesRead,
        Permission::EventSourcesWrite,
        Permission::NodePoolsRead,
        Permission::NodePoolsWrite,
        Permission::NodesRead,
        Permission::NodesWrite,
        Permission::SnapshotImagesRead,
        Permission::SnapshotImagesWrite,
        Permission::WarmPoolsRead,
        Permission::WarmPoolsWrite,
        Permission::ApiKeysManage,
    ];

    /// `functions:write`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::FunctionsInvoke => "functions:invoke",
            Permission::EventsPublish => "events:publish",
            Permission::ExecutionsRead => "executions:read",
            Permission::FunctionsRead => "functions:read",
            Permission::FunctionsWrite => "functions:write",
            Permission::LogsRead => "logs:read",
            Permission::EventsRead => "events:read",
            Permission::EventsWrite => "events:write",
            Permission::EventSourcesRead => "eventsources:read",
            Permission::EventSourcesWrite => "eventsources:write",
            Permission::NodePoolsRead => "nodepools:read",
            Permission::NodePoolsWrite => "nodepools:write",
            Permission::NodesRead => "nodes:read",
            Permission::NodesWrite => "nodes:write",
            Permission::SnapshotImagesRead => "snapshotimages:read",
            Permission::SnapshotImagesWrite => "snapshotimages:write",
            Permission::WarmPoolsRead => "warmpools:read",
            Permission::WarmPoolsWrite => "warmpools:write",
            Permission::ApiKeysManage => "apikeys:manage",
        }
    }

    /// The weakest role that holds it.
    pub fn role(self) -> Role {
        match self {
            Permission::FunctionsInvoke
            | Permission::EventsPublish
            | Permission::ExecutionsRead => Role::Invoker,
            Permission::FunctionsRead
            | Permission::FunctionsWrite
            | Permission::LogsRead
            | Permission::EventsRead
            | Permission::EventSourcesRead
            | Permission::NodePoolsRead
            | Permission::NodesRead
            | Permission::SnapshotImagesRead
            | Permission::WarmPoolsRead => Role::Developer,
            Permission::EventSourcesWrite
            | Permission::EventsWrite
            | Permission::NodePoolsWrite
            | Permission::NodesWrite
            | Permission::SnapshotImagesWrite
            | Permission::WarmPoolsWrite
            | Permission::ApiKeysManage => Role::Admin,
        }
    }

    /// True for permissions on the platform's own objects, which belong to no namespace.
    pub fn is_platform(self) -> bool {
        matches!(
            self,
            Permission::NodePoolsRead
                | Permission::NodePoolsWrite
                | Permission::NodesRead
                | Permission::NodesWrite
                | Permission::SnapshotImagesRead
                | Permission::SnapshotImagesWrite
                | Permission::WarmPoolsRead
                | Permission::WarmPoolsWrite
                | Permission::ApiKeysManage
        )
    }

    /// True for platform-level permissions that change what every namespace shares: they need
    /// a key of all namespaces.
    fn needs_all_namespaces(self) -> bool {
        self.is_platform() && self.role() == Role::Admin
    }

    /// Reading objects of `kind` (list, get, watch).
    pub fn read(kind: Kind) -> Permission {
        match kind {
            Kind::Function => Permission::FunctionsRead,
            Kind::NodePool => Permission::NodePoolsRead,
            Kind::Node => Permission::NodesRead,
            Kind::SnapshotImage => Permission::SnapshotImagesRead,
            Kind::EventSource => Permission::EventSourcesRead,
            Kind::Event => Permission::EventsRead,
            Kind::WarmPool => Permission::WarmPoolsRead,
        }
    }

    /// Writing objects of `kind` (create, replace, delete).
    pub fn write(kind: Kind) -> Permission {
        match kind {
            Kind::Function => Permission::FunctionsWrite,
            Kind::NodePool => Permission::NodePoolsWrite,
            Kind::Node => Permission::NodesWrite,
            Kind::SnapshotImage => Permission::SnapshotImagesWrite,
            Kind::EventSource => Permission::EventSourcesWrite,
            Kind::Event => Permission::EventsWrite,
            Kind::WarmPool => Permission::WarmPoolsWrite,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`decide`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The role is below the permission's.
    Role { needs: Role },
    /// The namespace is outside the key's scope.
    Namespace,
    /// A platform-level change needs a key of all namespaces.
    AllNamespaces,
}

/// The decision: may `access` do `permission` in namespace `ns` (ignored for platform-level
/// permissions)?
pub fn decide(access: &Access, permission: Permission, ns: &str) -> Result<(), Denied> {
    if access.role < permission.role() {
        return Err(Denied::Role {
            needs: permission.role(),
        });
    }
    if permission.needs_all_namespaces() {
        return match access.scope {
            Scope::All => Ok(()),
            Scope::Namespaces(_) => Err(Denied::AllNamespaces),
        };
    }
    if permission.is_platform() || access.scope.contains(ns) {
        Ok(())
    } else {
        Err(Denied::Namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(role: Role, scope: Scope) -> Access {
        Access { role, scope }
    }

    #[test]
    fn roles_are_a_ladder() {
        for p in Permission::ALL {
            for role in Role::ALL {
                let a = access(role, Scope::All);
                assert_eq!(
                    decide(&a, p, "team-a").is_ok(),
                    role >= p.role(),
                    "{role} {p}"
                );
            }
        }
        let invoker = access(Role::Invoker, Scope::of(["a"]));
        assert!(decide(&invoker, Permission::FunctionsInvoke, "a").is_ok());
        assert!(decide(&invoker, Permission::ExecutionsRead, "a").is_ok());
        assert!(decide(&invoker, Permission::EventsPublish, "a").is_ok());
        assert_eq!(
            decide(&invoker, Permission::FunctionsRead, "a"),
            Err(Denied::Role {
                needs: Role::Developer
            })
        );
        let dev = access(Role::Developer, Scope::of(["a"]));
        assert!(decide(&dev, Permission::FunctionsWrite, "a").is_ok());
        assert!(decide(&dev, Permission::LogsRead, "a").is_ok());
        assert_eq!(
            decide(&dev, Permission::EventSourcesWrite, "a"),
            Err(Denied::Role { needs: Role::Admin })
        );
    }

    #[test]
    fn a_key_acts_only_in_its_namespaces() {
        let a = access(Role::Admin, Scope::of(["a", "c"]));
        for p in Permission::ALL.into_iter().filter(|p| !p.is_platform()) {
            assert!(decide(&a, p, "a").is_ok(), "{p}");
            assert!(decide(&a, p, "c").is_ok(), "{p}");
            assert_eq!(decide(&a, p, "b"), Err(Denied::Namespace), "{p}");
        }
        let all = access(Role::Invoker, Scope::All);
        assert!(decide(&all, Permission::FunctionsInvoke, "anything").is_ok());
    }

    #[test]
    fn platform_reads_need_the_role_and_platform_writes_all_namespaces() {
        let dev = access(Role::Developer, Scope::of(["a"]));
        for kind in [Kind::NodePool, Kind::Node, Kind::SnapshotImage] {
            assert!(decide(&dev, Permission::read(kind), "whatever").is_ok());
            assert!(Permission::read(kind).is_platform());
        }
        let scoped_admin = access(Role::Admin, Scope::of(["a"]));
        for p in [
            Permission::NodePoolsWrite,
            Permission::NodesWrite,
            Permission::SnapshotImagesWrite,
            Permission::ApiKeysManage,
        ] {
            assert_eq!(decide(&scoped_admin, p, "a"), Err(Denied::AllNamespaces));
            assert!(decide(&Access::admin(), p, "").is_ok());
        }
        let invoker = access(Role::Invoker, Scope::All);
        assert_eq!(
            decide(&invoker, Permission::NodesRead, ""),
            Err(Denied::Role {
                needs: Role::Developer
            })
        );
    }

    #[test]
    fn every_kind_has_read_and_write_permissions() {
        for kind in Kind::ALL {
            assert!(Permission::read(kind).role() <= Permission::write(kind).role());
            assert!(Permission::read(kind).as_str().ends_with(":read"));
        }
        let names: BTreeSet<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), Permission::ALL.len(), "names are unique");
    }

    #[test]
    fn roles_parse_in_any_case() {
        assert_eq!("Developer".parse::<Role>(), Ok(Role::Developer));
        assert!("root".parse::<Role>().unwrap_err().contains("invoker"));
    }
}
