//! The [`Principal`] a request acts as, and its checks: the one call each handler makes.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::json;

use super::super::error::HttpError;
use super::{Access, Denied, Permission, Scope, decide};

/// Who a request acts as: the API key that authenticated it (inserted by the gateway's auth
/// middleware as a request extension), or an unrestricted principal when the gateway runs
/// with `--insecure-no-auth`. Handlers take it as an extractor and call [`Principal::check`]
/// before they touch anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id (`-` without authentication).
    pub key_id: String,
    /// The key's name.
    pub name: String,
    /// Its role and namespaces.
    pub access: Access,
}

impl Principal {
    /// The principal of a gateway without authentication: may do everything.
    pub fn unrestricted() -> Principal {
        Principal {
            key_id: "-".into(),
            name: "insecure-no-auth".into(),
            access: Access::admin(),
        }
    }

    /// True when the principal may do `permission` in `ns` (for filtering what a list or a
    /// watch shows).
    pub fn may(&self, ns: &str, permission: Permission) -> bool {
        decide(&self.access, permission, ns).is_ok()
    }

    /// Ok when the principal may do `permission` in namespace `ns`, else a 403 naming the
    /// permission, the namespace and what the key has. For platform-level permissions `ns` is
    /// ignored (see [`Principal::check_platform`]).
    pub fn check(&self, ns: &str, permission: Permission) -> Result<(), HttpError> {
        decide(&self.access, permission, ns)
            .map_err(|why| self.forbidden(Some(ns), permission, why))
    }

    /// Ok when the principal may do the platform-level `permission`, else a 403.
    pub fn check_platform(&self, permission: Permission) -> Result<(), HttpError> {
        decide(&self.access, permission, "").map_err(|why| self.forbidden(None, permission, why))
    }

    /// The namespaces the principal acts in (`None`: all of them).
    pub fn namespaces(&self) -> Option<&BTreeSet<String>> {
        match &self.access.scope {
            Scope::All => None,
            Scope::Namespaces(set) => Some(set),
        }
    }

    fn forbidden(&self, ns: Option<&str>, permission: Permission, why: Denied) -> HttpError {
        let (target, namespace) = match ns {
            Some(ns) if !permission.is_platform() => (format!("in namespace {ns}"), Some(ns)),
            _ => ("on the platform".to_string(), None),
        };
        let why = match why {
            Denied::Role { needs } => format!("it needs role {needs} or above"),
            Denied::Namespace => format!("{} is outside the key's namespaces", ns.unwrap_or("")),
            Denied::AllNamespaces => "it needs an admin key of all namespaces".into(),
        };
        let mut e = HttpError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "API key {} ({}; {}) lacks {permission} {target}: {why}",
                self.name, self.key_id, self.access
            ),
        );
        e.details = Some(json!([{
            "permission": permission.as_str(),
            "namespace": namespace,
        }]));
        e
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = HttpError;

    /// The principal the auth middleware inserted; a route outside that middleware has none,
    /// which is refused (401) rather than served unchecked.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "this route is not behind the gateway's authentication",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Role;
    use super::*;

    fn access(role: Role, scope: Scope) -> Access {
        Access { role, scope }
    }

    #[test]
    fn a_refusal_names_the_permission_the_namespace_and_the_key() {
        let p = Principal {
            key_id: "ab12".into(),
            name: "ci".into(),
            access: access(Role::Invoker, Scope::of(["a"])),
        };
        let e = p
            .check("b", Permission::FunctionsWrite)
            .expect_err("denied");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message
                .contains("lacks functions:write in namespace b: it needs role developer"),
            "{}",
            e.message
        );
        assert!(e.message.contains("ci (ab12; invoker in namespace a)"));
        assert_eq!(
            e.details,
            Some(json!([{"permission": "functions:write", "namespace": "b"}]))
        );
        let e = p
            .check("b", Permission::FunctionsInvoke)
            .expect_err("denied");
        assert!(
            e.message.contains(
                "lacks functions:invoke in namespace b: b is outside the key's namespaces"
            ),
            "{}",
            e.message
        );
        let e = p
            .check_platform(Permission::NodePoolsRead)
            .expect_err("denied");
        assert!(
            e.message.contains("lacks nodepools:read on the platform"),
            "{}",
            e.message
        );
        assert!(p.check("a", Permission::FunctionsInvoke).is_ok());
        assert!(p.may("a", Permission::ExecutionsRead));
        assert!(!p.may("b", Permission::ExecutionsRead));
        assert!(Principal::unrestricted().may("x", Permission::ApiKeysManage));
    }
}
