//! Swarm placement constraints (`node.labels.k==v`, `node.role==worker`, …), parsed and
//! matched the way Swarm's scheduler does it (swarmkit `manager/constraint`), so that the
//! autoscaler never plans a task onto a node Swarm would refuse it.
//!
//! Swarm's rules, kept here: the operators are `==` and `!=` (the first one found wins); keys
//! are matched case-insensitively, label names case-sensitively, values case-insensitively; a
//! label a node does not carry reads as the empty string (so `node.labels.k!=v` matches it);
//! an unknown key matches no node.

use std::collections::BTreeMap;

/// Errors of constraint parsing (Swarm rejects the same expressions at service create).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint {0:?}: expected one operator from ==, !=")]
    NoOperator(String),
    #[error("constraint {constraint:?}: key {key:?} is invalid")]
    InvalidKey { constraint: String, key: String },
    #[error("constraint {constraint:?}: value {value:?} is invalid")]
    InvalidValue { constraint: String, value: String },
}

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    NotEq,
}

/// One parsed constraint. Invariant: `key` and `value` passed Swarm's syntax checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub op: Operator,
    pub value: String,
}

/// A node's role in the Swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    /// The name Swarm's constraints use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

/// What constraints can look at on a node. Empty strings stand for what is not known (a
/// template node has no id or host name yet), as Swarm reads a missing value as `""`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAttributes {
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub os: String,
    pub arch: String,
    /// Swarm node labels (`node.labels.*`).
    pub labels: BTreeMap<String, String>,
    /// Engine labels (`engine.labels.*`).
    pub engine_labels: BTreeMap<String, String>,
}

const NODE_LABELS: &str = "node.labels.";
const ENGINE_LABELS: &str = "engine.labels.";

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    // Swarm's pattern `[a-z_][a-z0-9\-_.]+` wants at least two characters.
    first_ok
        && k.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c.is_whitespace()
                || matches!(
                    c,
                    ':' | '-'
                        | '_'
                        | '.'
                        | '*'
                        | '('
                        | ')'
                        | '?'
                        | '+'
                        | '['
                        | ']'
                        | '\\'
                        | '^'
                        | '$'
                        | '|'
                        | '/'
                )
        })
}

impl Constraint {
    /// Parses one expression such as `node.labels.tier==workers`.
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        let (op, (key, value)) = if let Some(kv) = expr.split_once("==") {
            (Operator::Eq, kv)
        } else if let Some(kv) = expr.split_once("!=") {
            (Operator::NotEq, kv)
        } else {
            return Err(ConstraintError::NoOperator(expr.to_string()));
        };
        let (key, value) = (key.trim(), value.trim());
        if !valid_key(key) {
            return Err(ConstraintError::InvalidKey {
                constraint: expr.to_string(),
                key: key.to_string(),
            });
        }
        if !valid_value(value) {
            return Err(ConstraintError::InvalidValue {
                constraint: expr.to_string(),
                value: value.to_string(),
            });
        }
        Ok(Constraint {
            key: key.to_string(),
            op,
            value: value.to_string(),
        })
    }

    /// Parses every expression; the first bad one is the error.
    pub fn parse_all<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<Constraint>, ConstraintError> {
        exprs
            .iter()
            .map(|e| Constraint::parse(e.as_ref()))
            .collect()
    }

    fn test(&self, actual: &str) -> bool {
        let equal = self.value.eq_ignore_ascii_case(actual);
        match self.op {
            Operator::Eq => equal,
            Operator::NotEq => !equal,
        }
    }

    /// True when a node with these attributes satisfies the constraint.
    pub fn matches(&self, node: &NodeAttributes) -> bool {
        let key = self.key.to_ascii_lowercase();
        let label = |prefix: &str, labels: &BTreeMap<String, String>| {
            // The prefix is case-insensitive, the label name is not.
            let name = &self.key[prefix.len()..];
            self.test(labels.get(name).map(String::as_str).unwrap_or(""))
        };
        match key.as_str() {
            "node.id" => self.test(&node.id),
            "node.hostname" => self.test(&node.hostname),
            "node.role" => self.test(node.role.as_str()),
            "node.platform.os" => self.test(&node.os),
            "node.platform.arch" => self.test(&node.arch),
            k if k.len() > NODE_LABELS.len() && k.starts_with(NODE_LABELS) => {
                label(NODE_LABELS, &node.labels)
            }
            k if k.len() > ENGINE_LABELS.len() && k.starts_with(ENGINE_LABELS) => {
                label(ENGINE_LABELS, &node.engine_labels)
            }
            // Swarm: a key it does not know matches no node.
            _ => false,
        }
    }
}

impl std::fmt::Display for Constraint {
    /// Swarm's syntax, e.g. `node.labels.tier==workers`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Operator::Eq => "==",
            Operator::NotEq => "!=",
        };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

/// True when the node satisfies every constraint.
pub fn all_match(constraints: &[Constraint], node: &NodeAttributes) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeAttributes {
        NodeAttributes {
            id: "abc123".into(),
            hostname: "workers-1a2b3".into(),
            role: Role::Worker,
            os: "linux".into(),
            arch: "x86_64".into(),
            labels: BTreeMap::from([
                ("tier".to_string(), "workers".to_string()),
                ("Zone".to_string(), "A".to_string()),
            ]),
            engine_labels: BTreeMap::new(),
        }
    }

    fn m(expr: &str) -> bool {
        Constraint::parse(expr).unwrap().matches(&node())
    }

    #[test]
    fn matches_like_swarm() {
        assert!(m("node.role==worker"));
        assert!(!m("node.role==manager"));
        assert!(m("node.role!=manager"));
        assert!(m("node.labels.tier==workers"));
        assert!(
            m("node.labels.tier == WORKERS"),
            "values are case-insensitive"
        );
        assert!(!m("node.labels.zone==a"), "label names are case-sensitive");
        assert!(m("node.labels.Zone==a"));
        assert!(m("NODE.LABELS.Zone==a"), "the prefix is not");
        assert!(
            !m("node.labels.gpu==true"),
            "a missing label reads as empty"
        );
        assert!(m("node.labels.gpu!=true"));
        assert!(m("node.hostname==workers-1a2b3"));
        assert!(!m("node.hostname!=workers-1a2b3"));
        assert!(m("node.id==abc123"));
        assert!(m("node.platform.os==linux"));
        assert!(m("node.platform.arch!=aarch64"));
        assert!(!m("node.ip==10.0.0.1"), "unknown keys match nothing");
        assert!(!m("engine.labels.storage==ssd"));
    }

    #[test]
    fn rejects_what_swarm_rejects() {
        assert_eq!(
            Constraint::parse("node.role=worker"),
            Err(ConstraintError::NoOperator("node.role=worker".into()))
        );
        assert!(matches!(
            Constraint::parse("1node==x"),
            Err(ConstraintError::InvalidKey { .. })
        ));
        assert!(matches!(
            Constraint::parse("node.labels.a==b!c"),
            Err(ConstraintError::InvalidValue { .. })
        ));
        assert!(matches!(
            Constraint::parse("node.labels.a=="),
            Err(ConstraintError::InvalidValue { .. })
        ));
        let all = Constraint::parse_all(&["node.role==worker", "node.labels.tier!=x"]).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].op, Operator::NotEq);
        assert_eq!(all[1].to_string(), "node.labels.tier!=x");
        assert!(all_match(&all, &node()));
        assert!(all_match(&[], &node()));
    }
}
