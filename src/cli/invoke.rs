//! `lambda gateway`, `lambda apikey …` and `lambda invoke`.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::gateway::authz::Access;
use crate::gateway::{GatewayConfig, Scope, apikeys};

use super::GlobalArgs;

/// `lambda gateway`
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve without authentication. Only for trusted local setups.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// RabbitMQ for asynchronous invocations and events [default: the context's broker].
    #[arg(long, env = "LAMBDA_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// A request's line and headers must arrive within this (and an idle keep-alive
    /// connection closes after it).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// A request's whole body must arrive within this (408 past it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: std::time::Duration,
}

/// `lambda apikey …`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; prints the token once (only its hash is stored). It acts in the
    /// namespaces given with -n/--namespace (repeatable; default: the context's, else
    /// `default`), or in all of them with --all-namespaces.
    Create {
        name: String,
        /// invoker (invoke, async, read executions), developer (+ function CRUD, logs,
        /// reading events, event sources and the platform's pools and nodes) or admin
        /// (+ event sources; with --all-namespaces, keys, pools, nodes and snapshots).
        #[arg(long, default_value = "invoker")]
        role: crate::gateway::Role,
        /// Every namespace, and the platform's own objects.
        #[arg(long)]
        all_namespaces: bool,
    },
    /// List keys: id, name, role, namespaces, age (never secrets).
    List,
    /// Delete a key by id.
    Delete { id: String },
}

/// `lambda invoke`
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Function name.
    pub name: String,
    /// The event: JSON text, or @FILE.
    #[arg(short, long, default_value = "{}")]
    pub data: String,
    /// Gateway URL [default: the context's, else http://127.0.0.1:8080].
    #[arg(long, env = "LAMBDA_GATEWAY")]
    pub gateway: Option<String>,
    /// API key (bearer token).
    #[arg(long, env = "LAMBDA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the response headers (invocation id, duration) to stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Queue the invocation and print its execution id (202) instead of waiting for the
    /// result; follow it with `lambda execution get ID`.
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// With --async: a URL that receives the result when the execution ends.
    #[arg(long, requires = "asynchronous")]
    pub callback_url: Option<String>,
}

pub async fn gateway(g: &GlobalArgs, args: GatewayArgs) -> Result<()> {
    let store = g.store_waiting().await?;
    let cfg = GatewayConfig {
        listen: args.listen,
        insecure_no_auth: args.insecure_no_auth,
        amqp_url: g.broker(args.amqp_url.as_ref()).map(|r| r.value),
        limits: crate::gateway::HttpLimits {
            header_read_timeout: args.header_read_timeout,
            body_read_timeout: args.body_read_timeout,
            ..Default::default()
        },
    };
    crate::gateway::run(store, cfg, super::shutdown_signal()).await?;
    Ok(())
}

pub async fn apikey(g: &GlobalArgs, cmd: ApiKeyCommand) -> Result<()> {
    let store = g.store().await?;
    match cmd {
        ApiKeyCommand::Create {
            name,
            role,
            all_namespaces,
        } => {
            let scope = match (all_namespaces, g.namespace_arg.is_empty()) {
                (true, false) => bail!("--all-namespaces and --namespace exclude each other"),
                (true, true) => Scope::All,
                (false, false) => Scope::of(g.namespace_arg.iter().cloned()),
                (false, true) => Scope::of([g.namespace()]),
            };
            let access = Access { role, scope };
            let (key, token) = apikeys::create(&store, &name, &access).await?;
            eprintln!(
                "created API key {} ({}): {access}; the token is shown only now:",
                key.id, key.name
            );
            println!("{token}");
        }
        ApiKeyCommand::List => {
            let (keys, bad) = apikeys::list(&store).await?;
            for b in bad {
                eprintln!("warning: {b}");
            }
            let mut rows = vec![vec![
                "ID".to_string(),
                "NAME".into(),
                "ROLE".into(),
                "NAMESPACES".into(),
                "AGE".into(),
            ]];
            rows.extend(keys.iter().map(|k| {
                let (role, namespaces) = match k.access() {
                    Ok(a) => {
                        let role = if k.is_legacy() {
                            format!("{} (legacy)", a.role)
                        } else {
                            a.role.to_string()
                        };
                        let ns = match a.scope {
                            Scope::All => "*".to_string(),
                            Scope::Namespaces(set) => set.into_iter().collect::<Vec<_>>().join(","),
                        };
                        (role, ns)
                    }
                    Err(why) => ("invalid".to_string(), why),
                };
                vec![
                    k.id.clone(),
                    k.name.clone(),
                    role,
                    namespaces,
                    super::output::age(Some(k.created_at)),
                ]
            }));
            print!("{}", super::output::table(&rows));
        }
        ApiKeyCommand::Delete { id } => {
            apikeys::delete(&store, &id).await?;
            println!("apikey/{id} deleted");
        }
    }
    Ok(())
}

pub async fn invoke(g: &GlobalArgs, args: InvokeArgs) -> Result<()> {
    let body = match args.data.strip_prefix('@') {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {path}"))?,
        None => args.data.clone().into_bytes(),
    };
    serde_json::from_slice::<serde_json::Value>(&body).context("the event (-d) must be JSON")?;
    let gateway = g.gateway(args.gateway.as_ref());
    let token = g.token(args.token.as_ref());
    let url = format!(
        "{}/v1/namespaces/{}/functions/{}/invoke",
        gateway.value.trim_end_matches('/'),
        g.namespace(),
        args.name
    );
    let client = reqwest::Client::new();
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    if args.asynchronous {
        req = req.header("prefer", "respond-async");
    }
    if let Some(c) = &args.callback_url {
        req = req.header("x-callback-url", c);
    }
    if let Some(t) = &token {
        req = req.bearer_auth(&t.value);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| unreachable_gateway(g, &gateway, &e))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED
        || resp.status() == reqwest::StatusCode::FORBIDDEN
    {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "{}",
            refused_token(g, &gateway, token.as_ref(), status, &text)
        );
    }
    let status = resp.status();
    if args.verbose {
        for h in ["x-lambda-invocation-id", "x-lambda-duration-ms"] {
            if let Some(v) = resp.headers().get(h).and_then(|v| v.to_str().ok()) {
                eprintln!("{h}: {v}");
            }
        }
    }
    let text = resp.text().await.context("reading the response")?;
    if status == reqwest::StatusCode::ACCEPTED {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match v["executionId"].as_str() {
            Some(id) => {
                println!("{id}");
                eprintln!("queued; follow it with `lambda execution get {id}`");
            }
            None => println!("{text}"),
        }
        Ok(())
    } else if status.is_success() {
        println!("{text}");
        Ok(())
    } else {
        eprintln!("{text}");
        bail!("invocation failed: HTTP {status}")
    }
}

/// "cannot reach the gateway at URL (from …)", with what to do.
pub(crate) fn unreachable_gateway(
    g: &GlobalArgs,
    gateway: &super::context::Resolved<String>,
    e: &reqwest::Error,
) -> anyhow::Error {
    let mut cause = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause.push_str(&format!(": {s}"));
        src = s.source();
    }
    anyhow::anyhow!(
        "cannot reach the gateway at {} ({}): {cause}\n  hint: start the local platform with `lambda up`, pass --gateway URL (or set LAMBDA_GATEWAY), or choose a context with `lambda config use-context NAME` ({})",
        gateway.value,
        gateway.source,
        g.context_description()
    )
}

/// The gateway answered 401/403: say which key was sent (by source, never its value) and how to
/// get one.
pub(crate) fn refused_token(
    g: &GlobalArgs,
    gateway: &super::context::Resolved<String>,
    token: Option<&super::context::Resolved<String>>,
    status: reqwest::StatusCode,
    body: &str,
) -> String {
    let sent = match token {
        Some(t) => format!("the API key {}", t.source),
        None => format!(
            "no API key (none of --token, $LAMBDA_TOKEN or a context gives one; {})",
            g.context_description()
        ),
    };
    let hint = if status == reqwest::StatusCode::FORBIDDEN {
        "the key is valid but lacks the permission named above: use a key of that namespace and role (`lambda apikey create NAME -n NAMESPACE --role invoker|developer|admin`)"
    } else {
        "`lambda up` writes a context with a key; elsewhere create one with `lambda apikey create NAME -n NAMESPACE --role ROLE` and save it with `lambda config set-context NAME --token KEY`, or pass --token"
    };
    format!(
        "the gateway at {} refused the call with HTTP {status} {}; sent {sent}\n  hint: {hint}",
        gateway.value,
        body.trim()
    )
}
