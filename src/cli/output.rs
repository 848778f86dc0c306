//! Human output: tables with READY/STATUS/AGE columns, per-kind wide columns, ages.

use chrono::{DateTime, Utc};

use crate::api::{
    ConditionStatus, Conditions, EventSourceSpec, FunctionSpec, NodePoolSpec, NodeSpec, Object,
    Resource, SnapshotImageSpec, WarmPoolSpec,
};

/// What `get` prints for a kind beyond NAME/READY/STATUS/AGE.
pub trait Printable: Resource {
    /// The READY column: `ready/desired` for scalable kinds, the Ready condition otherwise.
    fn ready(obj: &Object<Self>) -> String {
        ready_condition(obj)
    }
    /// Columns shown always, between STATUS and AGE (none for most kinds).
    fn extra_headers() -> &'static [&'static str] {
        &[]
    }
    /// Values of [`Printable::extra_headers`].
    fn extra(_obj: &Object<Self>) -> Vec<String> {
        Vec::new()
    }
    /// Extra headers of `-o wide`.
    fn wide_headers() -> &'static [&'static str];
    /// Extra values of `-o wide`.
    fn wide(obj: &Object<Self>) -> Vec<String>;
}

fn ready_condition<K: Resource>(obj: &Object<K>) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.condition("Ready"))
        .map(|c| c.status.to_string())
        .unwrap_or_else(|| "Unknown".into())
}

/// Replica addresses, comma-separated.
fn endpoints(e: &[crate::api::function::Endpoint]) -> String {
    if e.is_empty() {
        return "<none>".into();
    }
    e.iter()
        .map(|e| e.address.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "<none>".into())
}

impl Printable for FunctionSpec {
    fn ready(obj: &Object<Self>) -> String {
        let s = obj.status.clone().unwrap_or_default();
        format!("{}/{}", s.ready_replicas, s.replicas)
    }
    fn wide_headers() -> &'static [&'static str] {
        &["RUNTIME", "MEMORY", "MIN", "MAX", "AUTOSCALER", "ENDPOINTS"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        vec![
            obj.spec.runtime.as_str().into(),
            format!("{}Mi", obj.spec.resources.memory_mb),
            obj.spec.min_replicas.to_string(),
            obj.spec.max_replicas.to_string(),
            // The last decision: reason, replicas, and the demand it saw over the panic window.
            s.autoscaler.as_ref().map_or_else(
                || "<none>".into(),
                |a| {
                    format!(
                        "{} {} ({:.1}{})",
                        a.reason,
                        a.desired_replicas,
                        a.panic_concurrency,
                        if a.panic { ", panic" } else { "" }
                    )
                },
            ),
            endpoints(&s.endpoints),
        ]
    }
}

impl Printable for NodePoolSpec {
    /// Ready nodes of the count the pool converges to (the autoscaler's, clamped).
    fn ready(obj: &Object<Self>) -> String {
        let s = obj.status.clone().unwrap_or_default();
        format!(
            "{}/{}",
            s.ready_replicas,
            crate::reconcilers::nodepool::desired(obj)
        )
    }
    fn wide_headers() -> &'static [&'static str] {
        &["FLAVOR", "IMAGE", "MIN", "MAX", "DESIRED", "AUTOSCALER"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        vec![
            obj.spec.flavor.clone(),
            obj.spec
                .image
                .snapshot_image
                .clone()
                .or(obj.spec.image.glance_image.clone())
                .unwrap_or_default(),
            obj.spec.min_replicas.to_string(),
            obj.spec.max_replicas.to_string(),
            s.desired_replicas
                .map(|d| d.to_string())
                .unwrap_or_else(|| obj.spec.replicas.to_string()),
            match (&obj.spec.autoscaling, &s.autoscaler) {
                (Some(a), Some(st)) if a.enabled => format!("{:?}: {}", st.decision, st.reason),
                (Some(a), None) if a.enabled => "no decision yet".into(),
                _ => "off".into(),
            },
        ]
    }
}

impl Printable for NodeSpec {
    fn wide_headers() -> &'static [&'static str] {
        &["POOL", "SERVER", "VM", "ADDRESS", "SWARM"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        vec![
            obj.spec.pool.clone(),
            opt(&s.server_id),
            opt(&s.vm_state),
            s.addresses
                .first()
                .cloned()
                .unwrap_or_else(|| "<none>".into()),
            match (&s.swarm_state, &s.swarm_availability) {
                (Some(st), Some(av)) => format!("{st}/{av}"),
                _ => "<none>".into(),
            },
        ]
    }
}

impl Printable for SnapshotImageSpec {
    fn wide_headers() -> &'static [&'static str] {
        &["BASE", "PHASE", "IMAGE-ID"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        vec![obj.spec.base_image.clone(), opt(&s.phase), opt(&s.image_id)]
    }
}

impl Printable for EventSourceSpec {
    fn wide_headers() -> &'static [&'static str] {
        &["SOURCE", "WATCHES", "PUBLISHED", "LAST-EVENT"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        let watches = match (&obj.spec.directory, &obj.spec.openstack) {
            (Some(d), _) => format!("dir:{}", d.path),
            (_, Some(o)) => format!("amqp:{}/{}", o.exchange, o.topic),
            _ => "<none>".into(),
        };
        vec![
            obj.spec
                .source
                .clone()
                .unwrap_or_else(|| "<default>".into()),
            watches,
            s.events_published.to_string(),
            s.last_event_time
                .map(|t| age(Some(t)))
                .unwrap_or_else(|| "<none>".into()),
        ]
    }
}

impl Printable for WarmPoolSpec {
    fn ready(obj: &Object<Self>) -> String {
        let s = obj.status.clone().unwrap_or_default();
        format!("{}/{}", s.ready_replicas, obj.spec.replicas)
    }
    fn extra_headers() -> &'static [&'static str] {
        &["RUNTIME", "MEMORY", "IDLE", "CLAIMED"]
    }
    fn extra(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        vec![
            obj.spec.runtime.as_str().into(),
            format!("{}Mi", obj.spec.memory_mb),
            s.idle.to_string(),
            s.claimed.to_string(),
        ]
    }
    fn wide_headers() -> &'static [&'static str] {
        &["CPU", "WORKERS", "ENDPOINTS"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = obj.status.clone().unwrap_or_default();
        vec![
            format!("{}m", obj.spec.cpu_millis),
            obj.spec.workers.to_string(),
            endpoints(&s.endpoints),
        ]
    }
}

/// The STATUS column: Terminating, Ready, the Ready condition's reason, or Pending.
pub fn status_word<K: Resource>(obj: &Object<K>) -> String {
    if obj.is_deleting() {
        return "Terminating".into();
    }
    match obj.status.as_ref().and_then(|s| s.condition("Ready")) {
        Some(c) if c.status == ConditionStatus::True => "Ready".into(),
        Some(c) if !c.reason.is_empty() => c.reason.clone(),
        Some(_) => "NotReady".into(),
        None => "Pending".into(),
    }
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(ts: Option<DateTime<Utc>>) -> String {
    let Some(ts) = ts else {
        return "<unknown>".into();
    };
    let secs = (Utc::now() - ts).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Header row of a table.
pub fn headers<K: Printable>(wide: bool, with_namespace: bool) -> Vec<String> {
    let mut h: Vec<String> = Vec::new();
    if with_namespace {
        h.push("NAMESPACE".into());
    }
    h.extend(["NAME", "READY", "STATUS"].map(String::from));
    h.extend(K::extra_headers().iter().map(|s| s.to_string()));
    h.push("AGE".into());
    if wide {
        h.extend(K::wide_headers().iter().map(|s| s.to_string()));
    }
    h
}

/// One table row for an object.
pub fn row<K: Printable>(obj: &Object<K>, wide: bool, with_namespace: bool) -> Vec<String> {
    let mut r = Vec::new();
    if with_namespace {
        r.push(obj.metadata.namespace().to_string());
    }
    r.push(obj.metadata.name.clone());
    r.push(K::ready(obj));
    r.push(status_word(obj));
    r.extend(K::extra(obj));
    r.push(age(obj.metadata.creation_timestamp));
    if wide {
        r.extend(K::wide(obj));
    }
    r
}

/// Renders rows with columns padded to their widest cell.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// An object as YAML (status included).
pub fn to_yaml<K: Resource>(obj: &Object<K>) -> String {
    serde_saphyr::to_string(obj).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// An object as pretty JSON.
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["NAME".into(), "READY".into()],
            vec!["hello-world".into(), "1/1".into()],
        ]);
        assert_eq!(t, "NAME          READY\nhello-world   1/1\n");
    }

    #[test]
    fn ages() {
        assert_eq!(age(None), "<unknown>");
        assert_eq!(age(Some(Utc::now() - chrono::Duration::seconds(30))), "30s");
        assert_eq!(age(Some(Utc::now() - chrono::Duration::minutes(30))), "30m");
        assert_eq!(age(Some(Utc::now() - chrono::Duration::days(3))), "3d");
    }
}
