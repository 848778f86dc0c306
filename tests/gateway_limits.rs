//! Malformed and hostile HTTP against the gateway, over raw TCP: a client that trickles its
//! headers or its body, or sends nothing, is cut off by the gateway's timeouts; oversized or
//! too many headers are refused with 431, oversized bodies with 413 before they are read;
//! garbage is a 400; and the gateway serves normally afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{Etcd, free_port};
use lambda::gateway::{GatewayConfig, HttpLimits};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gateway's timeouts in this test (short, so that it runs quickly).
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long the test waits at most for the gateway to act on them.
const PATIENCE: Duration = Duration::from_secs(15);

async fn gateway(etcd: &Etcd) -> String {
    let store = etcd.store().await;
    let port = free_port();
    let cfg = GatewayConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("address"),
        insecure_no_auth: true,
        amqp_url: None,
        limits: HttpLimits {
            header_read_timeout: TIMEOUT,
            body_read_timeout: TIMEOUT,
            max_header_bytes: 16 * 1024,
        },
    };
    tokio::spawn(lambda::gateway::run(store, cfg, std::future::pending()));
    let addr = format!("127.0.0.1:{port}");
    common::eventually("the gateway listens", Duration::from_secs(10), async || {
        TcpStream::connect(&addr).await.ok()
    })
    .await;
    addr
}

/// Reads until the gateway closes the connection (or `PATIENCE` passes): what it sent.
async fn read_to_close(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw response.
fn body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A well-formed request still gets its answer.
async fn still_serves(addr: &str) {
    let r = reqwest::get(format!("http://{addr}/v1/namespaces/default/functions"))
        .await
        .expect("gateway reachable");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let etcd = Etcd::start();
    let addr = gateway(&etcd).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    let started = Instant::now();
    let mut sent = 0;
    // One byte a second, as a slowloris client does, until the gateway hangs up.
    for b in request {
        if s.write_all(&[*b]).await.is_err() || started.elapsed() > PATIENCE {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            break;
        }
    }
    assert!(
        sent < request.len() && started.elapsed() < PATIENCE,
        "the gateway waited for {sent} of {} bytes over {:?}",
        request.len(),
        started.elapsed()
    );
    // A connection that sends nothing at all is closed too.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    let t = Instant::now();
    read_to_close(&mut idle).await;
    assert!(t.elapsed() < PATIENCE, "an idle connection stayed open");
    still_serves(&addr).await;
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_is_408() {
    let etcd = Etcd::start();
    let addr = gateway(&etcd).await;
    let s = TcpStream::connect(&addr).await.expect("connect");
    let (mut reader, mut writer) = s.into_split();
    writer.write_all(
        b"POST /v1/namespaces/default/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .expect("send head");
    let t = Instant::now();
    // A byte a second: the body would take 100 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let response = read_to_close(&mut reader).await;
    trickle.abort();
    assert_eq!(status_of(&response), 408, "{response}");
    assert_eq!(body_of(&response)["error"]["reason"], "RequestTimeout");
    assert!(t.elapsed() < PATIENCE);
    still_serves(&addr).await;
}

#[tokio::test]
async fn oversized_headers_and_bodies_and_garbage_are_refused() {
    let etcd = Etcd::start();
    let addr = gateway(&etcd).await;
    let raw = async |request: Vec<u8>| {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        // The gateway may answer and close before it read everything: that is the point.
        let _ = s.write_all(&request).await;
        read_to_close(&mut s).await
    };

    // One header of 64 KiB (the limit is 16 KiB).
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(status_of(&raw(big.into_bytes()).await), 431);
    // 200 small headers (hyper's limit is 100).
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(status_of(&raw(many.into_bytes()).await), 431);
    // Garbage instead of a request line.
    let r = raw(b"\x00\x01NOT HTTP AT ALL\r\n\r\n".to_vec()).await;
    assert_eq!(status_of(&r), 400, "{r}");

    // A body declared larger than the limit: 413 at once, in the documented shape, without
    // the gateway waiting for it.
    let t = Instant::now();
    let r = raw(
        b"POST /v1/namespaces/default/functions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n{"
            .to_vec(),
    )
    .await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert_eq!(body_of(&r)["error"]["reason"], "PayloadTooLarge");
    assert!(t.elapsed() < TIMEOUT, "the gateway waited for the body");
    // A chunked body that goes on past the limit: 413 once the limit is read.
    let s = TcpStream::connect(&addr).await.expect("connect");
    let (mut reader, mut writer) = s.into_split();
    let flood = tokio::spawn(async move {
        let head = b"POST /v1/namespaces/default/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        if writer.write_all(head).await.is_err() {
            return;
        }
        let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
        // 64 MiB at most, far past the limit; the gateway stops reading long before.
        for _ in 0..8192 {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let r = read_to_close(&mut reader).await;
    flood.abort();
    assert_eq!(status_of(&r), 413, "{}", &r[..r.len().min(300)]);
    assert_eq!(body_of(&r)["error"]["reason"], "PayloadTooLarge", "{r}");
    let client = reqwest::Client::new();
    // A body a client is still writing when the 413 comes (declared past the limit, not huge):
    // the gateway reads and drops the rest, so the client reads the answer, not a broken pipe.
    for _ in 0..3 {
        let r = client
            .post(format!("http://{addr}/v1/namespaces/default/functions"))
            .body(vec![b' '; 12 * 1024 * 1024])
            .send()
            .await
            .expect("the 413 is read, not a broken pipe");
        assert_eq!(r.status(), 413);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["reason"], "PayloadTooLarge", "{v}");
    }
    // A method a route does not have: 405 with Allow, in the documented shape.
    let r = client
        .patch(format!("http://{addr}/v1/namespaces/default/functions"))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["reason"], "MethodNotAllowed", "{v}");
    // A path segment that is not UTF-8: 400 in the documented shape.
    let r = raw(
        b"GET /v1/namespaces/%FF/functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert_eq!(body_of(&r)["error"]["reason"], "BadRequest", "{r}");
    still_serves(&addr).await;
}
