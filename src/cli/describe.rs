//! `lambda describe`: metadata, spec, status and conditions of one object.

use std::fmt::Write;

use anyhow::Result;

use crate::api::{Conditions, Kind, Object, Resource};

use super::GlobalArgs;
use super::output::{age, table};

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{:by$}{l}\n", "")).collect()
}

/// The describe text of an object.
pub fn render<K: Resource>(obj: &Object<K>) -> String {
    let m = &obj.metadata;
    let mut s = String::new();
    let _ = writeln!(s, "Name:         {}", m.name);
    let _ = writeln!(s, "Namespace:    {}", m.namespace());
    let _ = writeln!(s, "Kind:         {}", K::KIND);
    let kv = |map: &std::collections::BTreeMap<String, String>| {
        if map.is_empty() {
            "<none>".to_string()
        } else {
            map.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(s, "Labels:       {}", kv(&m.labels));
    let _ = writeln!(s, "Annotations:  {}", kv(&m.annotations));
    let _ = writeln!(s, "UID:          {}", m.uid.as_deref().unwrap_or("<none>"));
    let _ = writeln!(s, "Generation:   {}", obj.generation());
    let _ = writeln!(
        s,
        "Created:      {} ({} ago)",
        m.creation_timestamp
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "<unknown>".into()),
        age(m.creation_timestamp)
    );
    if let Some(d) = m.deletion_timestamp {
        let _ = writeln!(s, "Deleting:     since {}", d.to_rfc3339());
    }
    if !m.finalizers.is_empty() {
        let _ = writeln!(s, "Finalizers:   {}", m.finalizers.join(", "));
    }
    for o in &m.owner_references {
        let _ = writeln!(
            s,
            "Owner:        {}/{}{}",
            o.kind,
            o.name,
            if o.controller == Some(true) {
                " (controller)"
            } else {
                ""
            }
        );
    }
    let spec = serde_saphyr::to_string(&obj.spec).unwrap_or_default();
    let _ = write!(s, "Spec:\n{}", indent(&spec, 2));
    match &obj.status {
        None => s.push_str("Status:       <none> (not yet observed by the controller)\n"),
        Some(st) => {
            let mut v = serde_json::to_value(st).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("conditions");
            }
            let body = serde_saphyr::to_string(&v).unwrap_or_default();
            let _ = write!(s, "Status:\n{}", indent(&body, 2));
            if let Some(og) = st.conditions().first().and_then(|c| c.observed_generation) {
                if og < obj.generation() {
                    let _ = writeln!(
                        s,
                        "  (status reflects generation {og}; the spec is at {})",
                        obj.generation()
                    );
                }
            }
            s.push_str("Conditions:\n");
            if st.conditions().is_empty() {
                s.push_str("  <none>\n");
            } else {
                let mut rows = vec![
                    ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
                        .map(String::from)
                        .to_vec(),
                ];
                for c in st.conditions() {
                    rows.push(vec![
                        c.type_.clone(),
                        c.status.to_string(),
                        c.reason.clone(),
                        age(Some(c.last_transition_time)),
                        c.message.clone(),
                    ]);
                }
                s.push_str(&indent(&table(&rows), 2));
            }
        }
    }
    s
}

pub async fn run(g: &GlobalArgs, kind: Kind, name: &str) -> Result<()> {
    let store = g.store().await?;
    let text = crate::with_kind!(
        kind,
        K,
        render(&store.get::<K>(&g.namespace(), name).await?)
    );
    print!("{text}");
    print!(
        "{}",
        super::events::describe(&store, kind, &g.namespace(), name).await
    );
    Ok(())
}
