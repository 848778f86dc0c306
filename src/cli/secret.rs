//! `lambda secret …`: the platform's secrets (see [`crate::store::secrets`]), by namespace.

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::GlobalArgs;
use crate::store::secrets;

/// `lambda secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret of the namespace (functions name it in `spec.secrets`).
    Create {
        /// A DNS label: the file name functions read it from (`/run/secrets/NAME`).
        name: String,
        /// Read the value from this file (`-` for stdin).
        #[arg(long, conflicts_with = "from_literal")]
        from_file: Option<String>,
        /// The value itself (it lands in the shell's history: prefer --from-file).
        #[arg(long)]
        from_literal: Option<String>,
    },
    /// List the namespace's secrets (names, sizes and ages; never values).
    List,
    /// Delete a secret. Functions that use it keep their current replicas; new ones cannot start.
    Delete { name: String },
}

pub async fn run(g: &GlobalArgs, cmd: SecretCommand) -> Result<()> {
    let store = g.store().await?;
    let ns = g.namespace();
    match cmd {
        SecretCommand::Create {
            name,
            from_file,
            from_literal,
        } => {
            let value = match (from_file, from_literal) {
                (Some(f), _) if f == "-" => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                        .context("reading the secret from stdin")?;
                    v
                }
                (Some(f), _) => std::fs::read(&f).with_context(|| format!("reading {f}"))?,
                (None, Some(v)) => v.into_bytes(),
                (None, None) => {
                    bail!("give the value with --from-file FILE (or -) or --from-literal")
                }
            };
            let s = secrets::put(&store, &ns, &name, &value).await?;
            println!(
                "secret/{} created in {} ({} bytes)",
                s.name,
                s.namespace,
                value.len()
            );
        }
        SecretCommand::List => {
            let mut rows = vec![vec!["NAME".to_string(), "BYTES".into(), "AGE".into()]];
            for s in secrets::list(&store, &ns).await? {
                let len = s
                    .value()
                    .map(|v| v.len().to_string())
                    .unwrap_or_else(|e| e.to_string());
                rows.push(vec![s.name, len, super::output::age(Some(s.created_at))]);
            }
            print!("{}", super::output::table(&rows));
        }
        SecretCommand::Delete { name } => {
            secrets::delete(&store, &ns, &name).await?;
            println!("secret/{name} deleted");
        }
    }
    Ok(())
}
