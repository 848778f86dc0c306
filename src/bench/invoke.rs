//! `lambda bench invoke`: warm invocations of one function through the gateway and, in the same
//! run with the same load generator and concurrency, straight to its replicas' agents (the
//! physical limit); RPS, p50 and p99 of both and the ratios.

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

/// Runs direct and gateway loads interleaved (direct, gateway, direct, gateway) so drift in the
/// machine's load affects both alike; prints the comparison table.
pub async fn compare(
    direct: &Target,
    gateway: &Target,
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
) -> Result<(LoadReport, LoadReport), LoadError> {
    let half = duration / 2;
    let d1 = load(direct, body, concurrency, half).await?;
    let g1 = load(gateway, body, concurrency, half).await?;
    let d2 = load(direct, body, concurrency, half).await?;
    let g2 = load(gateway, body, concurrency, half).await?;
    let merge = |a: LoadReport, b: LoadReport| LoadReport {
        requests: a.requests + b.requests,
        errors: a.errors + b.errors,
        rps: (a.rps + b.rps) / 2.0,
        p50: (a.p50 + b.p50) / 2,
        p99: (a.p99 + b.p99) / 2,
    };
    let d = merge(d1, d2);
    let g = merge(g1, g2);
    println!(
        "invoke benchmark: concurrency {concurrency}, {:?} per target (two rounds each)",
        duration
    );
    println!(
        "{:<12} {:>10} {:>8} {:>12} {:>12}",
        "target", "rps", "errors", "p50", "p99"
    );
    for (n, r) in [("direct", &d), ("gateway", &g)] {
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
    println!(
        "gateway/direct throughput {:.2} (target >= 0.90)",
        g.rps / d.rps
    );
    println!(
        "added p50 {} (target <= 0.30 ms), added p99 {} (target <= 1.00 ms)",
        added(g.p50, d.p50),
        added(g.p99, d.p99)
    );
    Ok((d, g))
}
