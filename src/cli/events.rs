//! Events in the CLI: `lambda get events` as a table, and the "Events:" section of
//! `lambda describe`.

use anyhow::Result;
use chrono::Utc;

use crate::api::{EventSpec, Kind, Object};
use crate::runtime::events::events_for;
use crate::store::Store;

use super::output::{Printable, table};

impl Printable for EventSpec {
    fn ready(obj: &Object<Self>) -> String {
        obj.spec.type_.to_string()
    }
    fn wide_headers() -> &'static [&'static str] {
        &["REASON", "OBJECT", "COUNT", "MESSAGE"]
    }
    fn wide(obj: &Object<Self>) -> Vec<String> {
        let s = &obj.spec;
        vec![
            s.reason.clone(),
            format!(
                "{}/{}",
                s.involved_object.kind.to_ascii_lowercase(),
                s.involved_object.name
            ),
            s.count.to_string(),
            s.message.clone(),
        ]
    }
}

fn ago(t: chrono::DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs))
        .to_string()
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join("")
}

/// `lambda get events`: LAST SEEN, TYPE, REASON, OBJECT, COUNT, MESSAGE, newest last.
pub async fn list(store: &Store, namespace: Option<&str>) -> Result<()> {
    let mut items = store.list::<EventSpec>(namespace).await?.items;
    if items.is_empty() {
        eprintln!(
            "No events found in {}.",
            namespace.unwrap_or("any namespace")
        );
        return Ok(());
    }
    items.sort_by_key(|e| e.spec.last_timestamp);
    let mut rows = vec![Vec::new()];
    if namespace.is_none() {
        rows[0].push("NAMESPACE".to_string());
    }
    rows[0].extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"].map(String::from));
    for e in &items {
        let s = &e.spec;
        let mut r = Vec::new();
        if namespace.is_none() {
            r.push(e.metadata.namespace().to_string());
        }
        r.extend([
            ago(s.last_timestamp),
            s.type_.to_string(),
            s.reason.clone(),
            format!(
                "{}/{}",
                s.involved_object.kind.to_ascii_lowercase(),
                s.involved_object.name
            ),
            s.count.to_string(),
            s.message.clone(),
        ]);
        rows.push(r);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// The "Events:" section of `lambda describe` (recent first; a failure to read them is shown,
/// not fatal).
pub async fn describe(store: &Store, kind: Kind, namespace: &str, name: &str) -> String {
    let evs = match events_for(store, kind.name(), namespace, name).await {
        Ok(e) => e,
        Err(e) => return format!("Events:       <unavailable: {e}>\n"),
    };
    if evs.is_empty() {
        return "Events:       <none>\n".into();
    }
    let mut rows = vec![
        ["TYPE", "REASON", "AGE", "COUNT", "FROM", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    for e in evs.iter().take(20) {
        let s = &e.spec;
        rows.push(vec![
            s.type_.to_string(),
            s.reason.clone(),
            ago(s.last_timestamp),
            s.count.to_string(),
            s.source.clone().unwrap_or_default(),
            s.message.clone(),
        ]);
    }
    let body = table(&rows);
    let mut out = String::from("Events:\n");
    for line in body.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}
