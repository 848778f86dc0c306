//! `lambda bench invoke`: warm invocations of one function through the gateway and, in the same
//! run with the same load generator and concurrency, straight to its replicas' agents (the
//! physical limit) and through a stock reverse proxy to the same replicas (nginx, see
//! [`super::nginx`]); RPS, p50 and p99 of each and the ratios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::stats::{ms, percentile};

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("request to {url} failed: {message}")]
    Request { url: String, message: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// One target of the load.
#[derive(Debug, Clone)]
pub struct Target {
    /// Full URLs; requests rotate over them (several replicas called directly).
    pub urls: Vec<String>,
    pub bearer: Option<String>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: usize,
    pub errors: usize,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Sends `body` to the target from `concurrency` workers for `duration`; latency per request.
pub async fn load(
    target: &Target,
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
) -> Result<LoadReport, LoadError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency * 2)
        .build(connector);
    // One warm-up request per URL proves the target answers 200 before measuring.
    for url in &target.urls {
        one(&client, url, target.bearer.as_deref(), body.clone()).await?;
    }
    let target = Arc::new(target.clone());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let client = client.clone();
        let target = target.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(16 * 1024);
            let mut errors = 0usize;
            let mut i = w;
            while Instant::now() < deadline {
                let url = &target.urls[i % target.urls.len()];
                i += 1;
                let t = Instant::now();
                match one(&client, url, target.bearer.as_deref(), body.clone()).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    all.sort();
    Ok(LoadReport {
        requests: all.len(),
        errors,
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
    })
}

async fn one(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> Result<(), LoadError> {
    let mut req = Request::post(url).header("content-type", "application/json");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let req = req.body(Full::new(body)).map_err(|e| LoadError::Request {
        url: url.into(),
        message: e.to_string(),
    })?;
    let resp = client.request(req).await.map_err(|e| LoadError::Request {
        url: url.into(),
        message: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| LoadError::Request {
            url: url.into(),
            message: e.to_string(),
        })?
        .to_bytes();
    if status != 200 {
        return Err(LoadError::Status {
            url: url.into(),
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(())
}

/// Runs the loads interleaved in rounds (every target once per round, two rounds) so drift in
/// the machine's load affects all alike; prints the comparison table. The first target is the
/// floor (direct), the last the gateway; returns their reports in order.
pub async fn compare(
    targets: &[(&str, &Target)],
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
) -> Result<Vec<LoadReport>, LoadError> {
    let half = duration / 2;
    let mut rounds: Vec<Vec<LoadReport>> = vec![Vec::new(); targets.len()];
    for _ in 0..2 {
        for (i, (_, t)) in targets.iter().enumerate() {
            rounds[i].push(load(t, body, concurrency, half).await?);
        }
    }
    let merged: Vec<LoadReport> = rounds
        .into_iter()
        .map(|r| {
            let n = r.len().max(1) as u32;
            LoadReport {
                requests: r.iter().map(|x| x.requests).sum(),
                errors: r.iter().map(|x| x.errors).sum(),
                rps: r.iter().map(|x| x.rps).sum::<f64>() / f64::from(n),
                p50: r.iter().map(|x| x.p50).sum::<Duration>() / n,
                p99: r.iter().map(|x| x.p99).sum::<Duration>() / n,
            }
        })
        .collect();
    println!(
        "invoke benchmark: concurrency {concurrency}, {:?} per target (two rounds each)",
        duration
    );
    println!(
        "{:<12} {:>10} {:>8} {:>12} {:>12}",
        "target", "rps", "errors", "p50", "p99"
    );
    for ((n, _), r) in targets.iter().zip(&merged) {
        println!(
            "{:<12} {:>10.0} {:>8} {:>12} {:>12}",
            n,
            r.rps,
            r.errors,
            ms(r.p50),
            ms(r.p99)
        );
    }
    let added = |a: Duration, b: Duration| {
        if a > b {
            ms(a - b)
        } else {
            format!("-{}", ms(b - a))
        }
    };
    if let (Some(d), Some(g)) = (merged.first(), merged.last()) {
        println!(
            "gateway/direct throughput {:.2}; added p50 {}, added p99 {}",
            g.rps / d.rps,
            added(g.p50, d.p50),
            added(g.p99, d.p99)
        );
    }
    if let Some(i) = targets.iter().position(|(n, _)| *n == "nginx") {
        let (x, g) = (&merged[i], &merged[merged.len() - 1]);
        println!(
            "gateway/nginx throughput {:.2} (target >= 1.10); added p50 over nginx {} (target <= 0), p99 {}",
            g.rps / x.rps,
            added(g.p50, x.p50),
            added(g.p99, x.p99)
        );
    }
    Ok(merged)
}
