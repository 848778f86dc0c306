//! `lambda get`: tables, YAML, JSON or names; reports unreadable objects without failing.

use anyhow::Result;

use crate::api::{Kind, Object};
use crate::store::Store;

use super::output::{Printable, headers, row, table, to_json, to_yaml};
use super::{GlobalArgs, OutputFormat};

async fn get_kind<K: Printable>(
    store: &Store,
    ns: &str,
    name: Option<&str>,
    output: Option<OutputFormat>,
    all: bool,
) -> Result<()> {
    let objects: Vec<Object<K>> = match name {
        Some(n) => vec![store.get::<K>(ns, n).await?],
        None => {
            let list = store.list::<K>(if all { None } else { Some(ns) }).await?;
            for bad in &list.invalid {
                eprintln!("warning: skipping {}: {}", bad.key, bad.message);
            }
            list.items
        }
    };
    match output {
        Some(OutputFormat::Yaml) => {
            for o in &objects {
                print!("---\n{}", to_yaml(o));
            }
        }
        Some(OutputFormat::Json) => {
            if name.is_some() {
                println!("{}", to_json(&objects[0]));
            } else {
                println!(
                    "{}",
                    to_json(
                        &serde_json::json!({ "apiVersion": crate::api::API_VERSION, "kind": "List", "items": objects })
                    )
                );
            }
        }
        Some(OutputFormat::Name) => {
            for o in &objects {
                println!("{}/{}", K::KIND.to_ascii_lowercase(), o.metadata.name);
            }
        }
        None | Some(OutputFormat::Wide) => {
            if objects.is_empty() {
                eprintln!(
                    "No {} found in {}.",
                    K::PLURAL,
                    if all { "any namespace" } else { ns }
                );
                return Ok(());
            }
            let wide = output == Some(OutputFormat::Wide);
            let mut rows = vec![headers::<K>(wide, all)];
            rows.extend(objects.iter().map(|o| row(o, wide, all)));
            print!("{}", table(&rows));
        }
    }
    Ok(())
}

pub async fn run(
    g: &GlobalArgs,
    kind: Kind,
    name: Option<&str>,
    output: Option<OutputFormat>,
    all: bool,
) -> Result<()> {
    let store = g.store().await?;
    if kind == Kind::Event && name.is_none() && output.is_none() {
        return super::events::list(&store, (!all).then_some(g.namespace().as_str())).await;
    }
    crate::with_kind!(
        kind,
        K,
        get_kind::<K>(&store, &g.namespace(), name, output, all).await
    )
}
