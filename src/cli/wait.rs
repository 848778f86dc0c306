//! `lambda wait` and `lambda delete [--wait]`.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::api::{ConditionStatus, Conditions, Kind, Object, ObjectKey, Resource};
use crate::store::{CacheChange, DeleteOutcome, Store};

use super::watch::follow;
use super::{GlobalArgs, parse_kind};

/// What `--for` asks for.
#[derive(Debug, Clone, PartialEq)]
enum Goal {
    Condition {
        type_: String,
        status: ConditionStatus,
    },
    Deleted,
}

fn parse_goal(s: &str) -> Result<Goal> {
    if s == "delete" {
        return Ok(Goal::Deleted);
    }
    let Some(cond) = s.strip_prefix("condition=") else {
        bail!("--for must be condition=TYPE[=True|False|Unknown] or delete, got {s:?}");
    };
    let (type_, status) = match cond.split_once('=') {
        Some((t, v)) => {
            let st = match v.to_ascii_lowercase().as_str() {
                "true" => ConditionStatus::True,
                "false" => ConditionStatus::False,
                "unknown" => ConditionStatus::Unknown,
                _ => bail!("condition status must be True, False or Unknown, got {v:?}"),
            };
            (t.to_string(), st)
        }
        None => (cond.to_string(), ConditionStatus::True),
    };
    if type_.is_empty() {
        bail!("--for condition= needs a condition type, e.g. condition=Ready");
    }
    Ok(Goal::Condition { type_, status })
}

/// Describes where an object stands against the goal: (met, description).
fn check<K: Resource>(obj: Option<&Object<K>>, goal: &Goal) -> (bool, String) {
    match (goal, obj) {
        (Goal::Deleted, None) => (true, "deleted".into()),
        (Goal::Deleted, Some(o)) => (
            false,
            if o.is_deleting() {
                format!(
                    "terminating, waiting on finalizers: {}",
                    o.metadata.finalizers.join(", ")
                )
            } else {
                "exists".into()
            },
        ),
        (Goal::Condition { .. }, None) => (false, "does not exist (yet)".into()),
        (Goal::Condition { type_, status }, Some(o)) => {
            match o.status.as_ref().and_then(|s| s.condition(type_)) {
                None => (false, format!("no {type_} condition yet")),
                Some(c) => {
                    let stale = c.observed_generation.is_some_and(|g| g < o.generation());
                    let met = c.status == *status && !stale;
                    let mut d = format!("{type_}={}", c.status);
                    if !c.reason.is_empty() {
                        d.push_str(&format!(" ({}", c.reason));
                        if !c.message.is_empty() {
                            d.push_str(&format!(": {}", c.message));
                        }
                        d.push(')');
                    }
                    if stale {
                        d.push_str(" [for an older generation]");
                    }
                    (met, d)
                }
            }
        }
    }
}

async fn wait_kind<K: Resource>(
    store: &Store,
    key: &ObjectKey,
    goal: &Goal,
    timeout: Duration,
) -> Result<()> {
    let what = format!("{}/{}", K::KIND.to_ascii_lowercase(), key.name);
    let goal_text = match goal {
        Goal::Deleted => "deletion".to_string(),
        Goal::Condition { type_, status } => format!("condition {type_}={status}"),
    };
    let mut last = String::new();
    let fut = follow::<K>(store, Some(&key.namespace), |change| {
        let obj = match change {
            CacheChange::Applied(o) if o.key() == *key => Some(o.as_ref()),
            CacheChange::Deleted(o) if o.key() == *key => None,
            _ => return true,
        };
        let (ok, desc) = check(obj, goal);
        if desc != last {
            eprintln!("waiting for {what} {goal_text}: {desc}");
            last = desc;
        }
        !ok
    });
    // The watch reports changes as they happen, but a watch that starts after the change (an
    // object already gone when it lists) reports nothing: a re-read every second covers that.
    let reread = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let obj = match store.get::<K>(&key.namespace, &key.name).await {
                Ok(o) => Some(o),
                Err(e) if e.is_not_found() => None,
                Err(_) => continue,
            };
            if check(obj.as_ref(), goal).0 {
                return;
            }
        }
    };
    let res = tokio::time::timeout(timeout, async {
        if store.get::<K>(&key.namespace, &key.name).await.is_err() && *goal == Goal::Deleted {
            return Ok(true);
        }
        tokio::select! {
            r = fut => r.map(|()| true),
            () = reread => Ok(true),
        }
    })
    .await;
    match res {
        Ok(Ok(_)) => {
            println!(
                "{what} {}",
                if *goal == Goal::Deleted {
                    "deleted".to_string()
                } else {
                    format!("condition met ({goal_text})")
                }
            );
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow!(
            "timed out after {timeout:?} waiting for {what} {goal_text}; last state: {}",
            if last.is_empty() {
                "does not exist".to_string()
            } else {
                last
            }
        )),
    }
}

pub async fn run(g: &GlobalArgs, target: &str, condition: &str, timeout: Duration) -> Result<()> {
    let Some((kind, name)) = target.split_once('/') else {
        bail!("expected KIND/NAME, e.g. fn/hello, got {target:?}");
    };
    let kind = parse_kind(kind)?;
    let goal = parse_goal(condition)?;
    let store = g.store().await?;
    let key = ObjectKey::new(&g.namespace(), name);
    crate::with_kind!(kind, K, wait_kind::<K>(&store, &key, &goal, timeout).await)
}

async fn delete_kind<K: Resource>(
    store: &Store,
    key: &ObjectKey,
    wait: Option<Duration>,
) -> Result<()> {
    let what = format!("{}/{}", K::KIND.to_ascii_lowercase(), key.name);
    match store.delete::<K>(&key.namespace, &key.name).await? {
        DeleteOutcome::Deleted => {
            println!("{what} deleted");
            Ok(())
        }
        DeleteOutcome::Terminating(o) => match wait {
            None => {
                println!(
                    "{what} deletion requested (waiting on finalizers: {})",
                    o.metadata.finalizers.join(", ")
                );
                Ok(())
            }
            Some(t) => wait_kind::<K>(store, key, &Goal::Deleted, t).await,
        },
    }
}

pub async fn delete(g: &GlobalArgs, kind: Kind, name: &str, wait: Option<Duration>) -> Result<()> {
    let store = g.store().await?;
    let key = ObjectKey::new(&g.namespace(), name);
    crate::with_kind!(kind, K, delete_kind::<K>(&store, &key, wait).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals() {
        assert_eq!(parse_goal("delete").unwrap(), Goal::Deleted);
        assert_eq!(
            parse_goal("condition=Ready").unwrap(),
            Goal::Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True
            }
        );
        assert_eq!(
            parse_goal("condition=Ready=false").unwrap(),
            Goal::Condition {
                type_: "Ready".into(),
                status: ConditionStatus::False
            }
        );
        assert!(parse_goal("ready").is_err());
        assert!(parse_goal("condition=").is_err());
    }
}
