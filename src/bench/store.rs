//! `lambda bench store`: N Function objects through the store vs. the same bytes as raw etcd
//! puts at the same concurrency, plus watch latency (write → event delivered).

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};

use crate::api::{Function, FunctionSpec};
use crate::store::{Store, StoreError, WatchEvent, encode_spec};

use super::stats::{ms, percentile};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StoreBench {
    pub objects: usize,
    pub concurrency: usize,
    pub watch_samples: usize,
    /// Namespace the objects go to; it is purged before and after.
    pub namespace: String,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct StoreBenchReport {
    pub store_per_sec: f64,
    pub raw_per_sec: f64,
    pub watch_p50: Duration,
    pub watch_p99: Duration,
}

fn object(ns: &str, i: usize) -> Function {
    let spec: FunctionSpec = FunctionSpec {
        runtime: crate::api::Runtime::Python3,
        image: None,
        code: Some(crate::api::function::Code {
            inline: Some(format!(
                "def handler(event, context):\n    return {{'n': {i}}}\n"
            )),
            file: None,
        }),
        handler: None,
        env: vec![],
        secrets: vec![],
        resources: Default::default(),
        timeout_seconds: 30,
        max_payload_bytes: 1 << 20,
        concurrency: 8,
        min_replicas: 1,
        max_replicas: 10,
        scale_to_zero_after_seconds: None,
        autoscaling: Default::default(),
        triggers: Default::default(),
        retry: Default::default(),
    };
    Function::new(ns, &format!("bench-{i:05}"), spec)
}

async fn purge(store: &Store, ns: &str) -> Result<(), StoreError> {
    let mut kv = store.client().kv_client();
    for p in [
        store.keys().spec_prefix("functions", Some(ns)),
        store.keys().status_prefix("functions", Some(ns)),
        format!("{}/bench-raw/", store.keys().root()),
    ] {
        kv.delete(
            p.clone(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .map_err(|source| StoreError::Etcd {
            op: "purge",
            key: p,
            source,
        })?;
    }
    // Compact the history the previous run left, so every run starts from a comparable etcd
    // (an uncompacted history of deleted keys slows the compares of the store's transactions).
    let rev = kv
        .get(
            "/",
            Some(
                etcd_client::GetOptions::new()
                    .with_keys_only()
                    .with_limit(1),
            ),
        )
        .await
        .map_err(|source| StoreError::Etcd {
            op: "revision",
            key: "/".into(),
            source,
        })?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    if rev > 0 {
        match kv
            .compact(
                rev,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
        {
            Ok(_) => {}
            // Nothing written since the last compaction: already as compact as it gets.
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") => {}
            Err(source) => {
                return Err(StoreError::Etcd {
                    op: "compact",
                    key: rev.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Runs the benchmark and prints its table.
pub async fn run(store: &Store, cfg: &StoreBench) -> Result<StoreBenchReport, StoreError> {
    purge(store, &cfg.namespace).await?;
    let objects: Vec<Function> = (0..cfg.objects)
        .map(|i| object(&cfg.namespace, i))
        .collect();

    // Raw puts and store creates alternate in four rounds (raw, store, raw, store, …) so that
    // drift in etcd's or the disk's speed affects both alike.
    let rounds = 4;
    let chunk = cfg.objects.div_ceil(rounds).max(1);
    let mut raw_elapsed = std::time::Duration::ZERO;
    let mut store_elapsed = std::time::Duration::ZERO;
    let mut created: Vec<Function> = Vec::with_capacity(cfg.objects);
    for part in objects.chunks(chunk) {
        let payloads: Vec<(String, String)> = part
            .iter()
            .map(|o| {
                Ok((
                    format!("{}/bench-raw/{}", store.keys().root(), o.metadata.name),
                    encode_spec(o)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let t = Instant::now();
        let raw: Vec<Result<(), StoreError>> = stream::iter(payloads)
            .map(|(k, v)| {
                let mut kv = store.client().kv_client();
                async move {
                    kv.put(k.clone(), v, None)
                        .await
                        .map(|_| ())
                        .map_err(|source| StoreError::Etcd {
                            op: "put",
                            key: k,
                            source,
                        })
                }
            })
            .buffer_unordered(cfg.concurrency)
            .collect()
            .await;
        raw_elapsed += t.elapsed();
        raw.into_iter().collect::<Result<Vec<_>, _>>()?;

        let t = Instant::now();
        let made: Vec<Result<Function, StoreError>> = stream::iter(part.iter())
            .map(|o| store.create(o))
            .buffer_unordered(cfg.concurrency)
            .collect()
            .await;
        store_elapsed += t.elapsed();
        for m in made {
            created.push(m?);
        }
    }

    // Watch latency: one write at a time, timed until its event arrives.
    let mut watch = store.watch::<FunctionSpec>(Some(&cfg.namespace), 0).await?;
    let mut samples = Vec::with_capacity(cfg.watch_samples);
    for (i, base) in created.iter().cycle().take(cfg.watch_samples).enumerate() {
        let mut o = store
            .get::<FunctionSpec>(&cfg.namespace, &base.metadata.name)
            .await?;
        o.spec.timeout_seconds = 1 + (i as u32 % 899);
        let t = Instant::now();
        store.update(&o).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
                Ok(Ok(WatchEvent::Spec(ev))) if ev.metadata.name == o.metadata.name => break,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(StoreError::WatchEnded {
                        prefix: cfg.namespace.clone(),
                        message: "no event within 5 s".into(),
                    });
                }
            }
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    purge(store, &cfg.namespace).await?;

    let report = StoreBenchReport {
        store_per_sec: cfg.objects as f64 / store_elapsed.as_secs_f64(),
        raw_per_sec: cfg.objects as f64 / raw_elapsed.as_secs_f64(),
        watch_p50: percentile(&samples, 50.0),
        watch_p99: percentile(&samples, 99.0),
    };
    let ratio = report.store_per_sec / report.raw_per_sec;
    println!(
        "store benchmark: {} objects, concurrency {}, {} watch samples",
        cfg.objects,
        cfg.concurrency,
        samples.len()
    );
    println!("{:<34} {:>14} {:>14}", "measure", "value", "target");
    println!(
        "{:<34} {:>14.0} {:>14}",
        "raw etcd put (objects/s)", report.raw_per_sec, "(limit)"
    );
    println!(
        "{:<34} {:>14.0} {:>14}",
        "store create (objects/s)", report.store_per_sec, ""
    );
    println!("{:<34} {:>14.2} {:>14}", "store / raw", ratio, ">= 0.50");
    println!(
        "{:<34} {:>14} {:>14}",
        "watch latency p50",
        ms(report.watch_p50),
        "<= 5 ms"
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "watch latency p99",
        ms(report.watch_p99),
        ""
    );
    Ok(report)
}
