//! `lambda executions [FN]` and `lambda execution get|logs ID`: the execution records of
//! asynchronous, event and scheduled runs, read straight from etcd (the same store functions
//! the gateway's `/v1/…/executions` API serves).

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use crate::api::FunctionSpec;
use crate::events::execution::store::{self, MAX_PAGE};
use crate::events::execution::{Execution, ExecutionStatus, Trigger};

use super::output::{table, to_json};
use super::{GlobalArgs, OutputFormat};

/// Flags of `lambda executions`.
#[derive(Debug, Args)]
pub struct ExecutionsArgs {
    /// Only this function's executions [default: every function of the namespace].
    pub function: Option<String>,
    /// Only executions in this status (Queued, Running, Retrying, Succeeded, Failed, DeadLettered).
    #[arg(long)]
    pub status: Option<ExecutionStatus>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=MAX_PAGE as i64))]
    pub limit: u16,
    /// json or yaml instead of a table.
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

/// `lambda execution …`
#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// Show one execution's record: event, status, every attempt, result.
    Get {
        id: String,
        /// json instead of YAML.
        #[arg(short, long, value_enum)]
        output: Option<OutputFormat>,
    },
    /// Print what the function wrote during this execution.
    Logs { id: String },
}

/// `lambda executions`
pub async fn list(g: &GlobalArgs, args: ExecutionsArgs) -> Result<()> {
    let store = g.store().await?;
    let ns = g.namespace();
    let limit = usize::from(args.limit);
    let functions = match &args.function {
        Some(f) => vec![f.clone()],
        None => {
            let list = store.list::<FunctionSpec>(Some(&ns)).await?;
            list.items.into_iter().map(|f| f.metadata.name).collect()
        }
    };
    let mut items = Vec::new();
    for f in &functions {
        let page = store::list(&store, &ns, f, args.status, limit, None)
            .await
            .with_context(|| format!("executions of {ns}/{f}"))?;
        items.extend(page.items);
    }
    let items = newest(items, limit);
    match args.output {
        Some(OutputFormat::Json) => println!(
            "{}",
            to_json(&serde_json::json!({
                "apiVersion": crate::api::API_VERSION,
                "kind": "ExecutionList",
                "items": items,
            }))
        ),
        Some(OutputFormat::Yaml) => {
            for e in &items {
                print!("---\n{}", yaml(e));
            }
        }
        _ if items.is_empty() => eprintln!("No executions found in namespace {ns}."),
        _ => print!("{}", table(&rows(&items, Utc::now()))),
    }
    Ok(())
}

/// `lambda execution get|logs`
pub async fn run(g: &GlobalArgs, cmd: ExecutionCommand) -> Result<()> {
    let store = g.store().await?;
    let ns = g.namespace();
    match cmd {
        ExecutionCommand::Get { id, output } => {
            let e = store::get(&store, &ns, &id).await?.execution;
            match output {
                Some(OutputFormat::Json) => println!("{}", to_json(&e)),
                _ => print!("{}", yaml(&e)),
            }
        }
        ExecutionCommand::Logs { id } => {
            let e = store::get(&store, &ns, &id).await?.execution;
            print!("{}", e.logs);
            if !e.logs.is_empty() && !e.logs.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(())
}

fn yaml(e: &Execution) -> String {
    serde_saphyr::to_string(e).unwrap_or_else(|err| format!("# cannot render: {err}\n"))
}

/// The `limit` newest of records gathered from several functions.
fn newest(mut items: Vec<Execution>, limit: usize) -> Vec<Execution> {
    items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    items.truncate(limit);
    items
}

fn trigger(t: &Trigger) -> String {
    match t {
        Trigger::Event { index } => format!("event[{index}]"),
        Trigger::Async => "async".into(),
        Trigger::Schedule { index } => format!("schedule[{index}]"),
    }
}

fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs))
        .to_string()
        .split(' ')
        .take(2)
        .collect::<String>()
}

/// The table: ID, FUNCTION, TRIGGER, STATUS, ATTEMPTS, DURATION (of the last attempt), AGE,
/// REASON.
fn rows(items: &[Execution], now: DateTime<Utc>) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "ID", "FUNCTION", "TRIGGER", "STATUS", "ATTEMPTS", "DURATION", "AGE", "REASON",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in items {
        let duration = e
            .attempts
            .last()
            .and_then(|a| a.duration_ms)
            .map(|ms| format!("{ms}ms"))
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            e.id.clone(),
            e.function.clone(),
            trigger(&e.trigger),
            e.status.as_str().to_string(),
            e.attempts.len().to_string(),
            duration,
            age(e.created_at, now),
            e.reason.clone().unwrap_or_default(),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectKey;

    fn exec(id: &str, function: &str, secs_ago: i64, now: DateTime<Utc>) -> Execution {
        Execution::new(
            id.into(),
            &ObjectKey::new("default", function),
            Trigger::Async,
            None,
            now - chrono::Duration::seconds(secs_ago),
        )
    }

    #[test]
    fn merged_lists_are_newest_first_and_bounded() {
        let now = Utc::now();
        let items = vec![
            exec("a", "f", 30, now),
            exec("b", "g", 10, now),
            exec("c", "f", 20, now),
        ];
        let ids: Vec<_> = newest(items, 2).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn table_rows_show_status_trigger_and_age() {
        let now = Utc::now();
        let mut e = exec("abc", "hello", 90, now);
        e.trigger = Trigger::Event { index: 1 };
        let r = rows(&[e], now);
        assert_eq!(r[0][3], "STATUS");
        assert_eq!(r[1][..5], ["abc", "hello", "event[1]", "Queued", "0"]);
        assert_eq!(r[1][5], "-");
        assert_eq!(r[1][6], "1m30s");
    }
}
