//! The warm path's decisions, as pure functions: whether a function may be served by a pool
//! container, which pools fit it (best first), and what a container is specialised with.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;

use crate::api::{Function, Runtime, WarmPool};

/// Why a function is not served from a warm pool (the metric's outcome and the log's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// `runtime: image`: a custom image is not a pool's runtime.
    CustomImage,
    /// `spec.autoscaling.warmPool: false`.
    OptedOut,
    /// No inline code to hand over.
    NoCode,
}

/// Whether `f` may be served by a pool container at all.
pub fn eligible(f: &Function) -> Result<(), Ineligible> {
    if f.spec.runtime == Runtime::Image {
        return Err(Ineligible::CustomImage);
    }
    if !f.spec.autoscaling.warm_pool {
        return Err(Ineligible::OptedOut);
    }
    if f.spec
        .code
        .as_ref()
        .and_then(|c| c.inline.as_ref())
        .is_none()
    {
        return Err(Ineligible::NoCode);
    }
    Ok(())
}

/// The pools whose containers can serve `f`, best first: its runtime, at least its memory (a
/// smaller container would kill it), with a ready container; pools with at least its CPU
/// first, then the smallest memory (the least waste), then by name.
pub fn candidates<'a>(pools: &'a [std::sync::Arc<WarmPool>], f: &Function) -> Vec<&'a WarmPool> {
    let mut fit: Vec<&WarmPool> = pools
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| {
            !p.is_deleting()
                && p.spec.runtime == f.spec.runtime
                && p.spec.memory_mb >= f.spec.resources.memory_mb
                && p.status.as_ref().is_some_and(|s| !s.endpoints.is_empty())
        })
        .collect();
    fit.sort_by_key(|p| {
        (
            p.spec.cpu_millis < f.spec.resources.cpu_millis,
            p.spec.memory_mb,
            p.spec.cpu_millis,
            p.metadata.namespace().to_string(),
            p.metadata.name.clone(),
        )
    });
    fit
}

/// `namespace/name`: how a function is named to agents (`X-Lambda-Function`).
pub fn function_name(f: &Function) -> String {
    format!("{}/{}", f.metadata.namespace(), f.metadata.name)
}

/// The body of `POST /specialize` for `f` (see the agent's `specialise.rs`): its code, handler,
/// environment, the values of its secrets (`secrets`: name → value) and limits, and how long
/// the container may idle before it exits by itself (a safety net behind the gateway's release).
pub fn specialisation(
    f: &Function,
    secrets: &BTreeMap<String, Vec<u8>>,
    idle_exit: Duration,
) -> serde_json::Value {
    let s = &f.spec;
    let env: BTreeMap<&str, &str> = s
        .env
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    let secrets: Vec<serde_json::Value> = s
        .secrets
        .iter()
        .filter_map(|r| {
            let value = secrets.get(&r.name)?;
            Some(serde_json::json!({
                "name": r.name,
                "data": base64::engine::general_purpose::STANDARD.encode(value),
                "env": r.env,
            }))
        })
        .collect();
    serde_json::json!({
        "function": function_name(f),
        "runtime": s.runtime.as_str(),
        "handler": s.handler(),
        "code": s.code.as_ref().and_then(|c| c.inline.clone()).unwrap_or_default(),
        "env": env,
        "secrets": secrets,
        "timeoutMs": u64::from(s.timeout_seconds) * 1000,
        "maxPayloadBytes": s.max_payload_bytes,
        "concurrency": s.concurrency,
        "idleExitMs": u64::try_from(idle_exit.as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::function::Endpoint;
    use crate::api::{FunctionSpec, Object, WarmPoolSpec, WarmPoolStatus};
    use std::sync::Arc;

    fn function(yaml: &str) -> Function {
        let spec: FunctionSpec = serde_saphyr::from_str(yaml).unwrap();
        Object::new("team", "f", spec)
    }

    fn pool(name: &str, yaml: &str, ready: bool) -> Arc<WarmPool> {
        let spec: WarmPoolSpec = serde_saphyr::from_str(yaml).unwrap();
        let mut p = Object::new("platform", name, spec);
        p.status = Some(WarmPoolStatus {
            endpoints: if ready {
                vec![Endpoint {
                    address: "10.0.0.1:30000".into(),
                    task_id: "t".into(),
                    node_id: "n".into(),
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn the_smallest_fitting_pool_of_the_runtime_first() {
        let f = function(
            "runtime: python3\ncode: {inline: x}\nresources: {memoryMb: 200, cpuMillis: 500}\n",
        );
        let pools = [
            pool("node", "runtime: node\nmemoryMb: 512\n", true),
            pool("py-small", "runtime: python3\nmemoryMb: 128\n", true),
            pool("py-big", "runtime: python3\nmemoryMb: 1024\n", true),
            pool("py-mid", "runtime: python3\nmemoryMb: 256\n", true),
            pool(
                "py-mid-slow",
                "runtime: python3\nmemoryMb: 256\ncpuMillis: 100\n",
                true,
            ),
            pool("py-down", "runtime: python3\nmemoryMb: 256\n", false),
        ];
        let names: Vec<&str> = candidates(&pools, &f)
            .iter()
            .map(|p| p.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["py-mid", "py-big", "py-mid-slow"]);
    }

    #[test]
    fn who_may_use_a_pool() {
        assert_eq!(
            eligible(&function("runtime: shell\ncode: {inline: cat}\n")),
            Ok(())
        );
        assert_eq!(
            eligible(&function("runtime: image\nimage: x:1\n")),
            Err(Ineligible::CustomImage)
        );
        assert_eq!(
            eligible(&function(
                "runtime: shell\ncode: {inline: cat}\nautoscaling: {warmPool: false}\n"
            )),
            Err(Ineligible::OptedOut)
        );
    }

    #[test]
    fn the_specialisation_carries_everything_the_function_runs_with() {
        let f = function(
            "runtime: python3\ncode: {inline: 'def handler(e, c): pass'}\nenv: [{name: A, value: '1'}]\nsecrets: [{name: db, env: DB_FILE}]\ntimeoutSeconds: 7\nconcurrency: 3\n",
        );
        let secrets = BTreeMap::from([("db".to_string(), b"pw".to_vec())]);
        let b = specialisation(&f, &secrets, Duration::from_secs(90));
        assert_eq!(b["function"], "team/f");
        assert_eq!(b["handler"], "main.handler");
        assert_eq!(b["env"]["A"], "1");
        assert_eq!(b["secrets"][0]["data"], "cHc=");
        assert_eq!(b["secrets"][0]["env"], "DB_FILE");
        assert_eq!(
            (
                b["timeoutMs"].as_u64(),
                b["concurrency"].as_u64(),
                b["idleExitMs"].as_u64()
            ),
            (Some(7000), Some(3), Some(90_000))
        );
    }
}
