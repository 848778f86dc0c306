//! Tests of the client against stand-in agents on local sockets.

use super::*;
use tokio::net::TcpListener;

/// An agent stand-in answering each request on a connection with the next canned answer,
/// recording the requests it got. An answer is written in pieces, 30 ms apart, where it has
/// a `|`; one starting with `!` closes the connection after it.
async fn agent(answers: Vec<&'static str>) -> (String, tokio::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            let mut mine: Vec<&str> = Vec::new();
            // Each connection serves answers until one closes it ("!" prefix).
            for a in answers.by_ref() {
                mine.push(a);
                if a.starts_with('!') {
                    break;
                }
            }
            tokio::spawn(async move {
                for a in mine {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read one request: its head, then content-length bytes.
                    loop {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).to_string();
                        if let Some(i) = text.find("\r\n\r\n") {
                            let len: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if got.len() >= i + 4 + len {
                                break;
                            }
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&got).to_string()).await;
                    let text = a.trim_start_matches('!');
                    for (i, piece) in text.split('|').enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                        let _ = s.write_all(piece.as_bytes()).await;
                    }
                    if a.starts_with('!') {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn post_req(body: &Bytes) -> Post<'_> {
    Post {
        path: "/invoke",
        headers: &[("x-lambda-function", b"default/f")],
        body,
    }
}

/// The whole body (a streamed one read to its end).
async fn bytes(b: AnswerBody) -> Result<Bytes, axum::Error> {
    use http_body_util::BodyExt as _;
    b.into_body().collect().await.map(|c| c.to_bytes())
}

fn keep_lambda(n: &str) -> bool {
    n.to_ascii_lowercase().starts_with("x-lambda-")
}

#[tokio::test]
async fn answers_of_every_framing_over_reused_connections() {
    let (addr, mut seen) = agent(vec![
        "HTTP/1.1 200 OK\r\nx-lambda-status: ok\r\ncontent-length: 2\r\n\r\nhi",
        "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "!HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ])
    .await;
    let pool = Arc::new(Pool::default());
    let body = Bytes::from_static(b"{\"a\":1}");
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("first");
    assert!(
        matches!(&a.body, AnswerBody::Whole(b) if b == "hi"),
        "{a:?}"
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        a.headers,
        [("x-lambda-status".parse().unwrap(), "ok".parse().unwrap())]
    );
    let req = seen.recv().await.expect("request");
    assert!(
        req.starts_with("POST /invoke HTTP/1.1\r\nhost: 127.0.0.1:"),
        "{req}"
    );
    assert!(req.contains("\r\nx-lambda-function: default/f\r\ncontent-length: 7\r\n\r\n{\"a\":1}"));
    assert_eq!(pool.idle(), 1, "kept for the next call");
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("chunked");
    assert_eq!(a.status, 400);
    assert_eq!(bytes(a.body).await.unwrap(), "abc");
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("until close");
    assert_eq!(bytes(a.body).await.unwrap(), "until the end");
    assert_eq!(pool.idle(), 0, "a connection the agent closes is not kept");
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("a new connection");
    assert_eq!(a.status, 200);
    assert_eq!(bytes(a.body).await.unwrap(), "");
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn a_closed_idle_connection_is_not_reused() {
    let (addr, _seen) = agent(vec![
        "!HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb",
    ])
    .await;
    let pool = Arc::new(Pool::default());
    let body = Bytes::new();
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .unwrap();
    assert_eq!(bytes(a.body).await.unwrap(), "a");
    // Kept (the answer did not say close), but the agent closed it behind it.
    assert_eq!(pool.idle(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("goes over a new connection");
    assert_eq!(bytes(a.body).await.unwrap(), "b");
}

#[tokio::test]
async fn broken_answers_and_refused_connections_are_errors() {
    let (addr, _seen) = agent(vec![
        "!HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        "!HTTP/1.1 200 OK\r\ncontent-len",
        "!not http at all\r\n\r\n",
    ])
    .await;
    let pool = Arc::new(Pool::default());
    let body = Bytes::new();
    // The head is complete: the body breaks off while passed on.
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("head");
    let e = bytes(a.body).await.expect_err("truncated body");
    assert!(e.to_string().contains("closed"), "{e}");
    let e = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect_err("truncated head");
    assert!(matches!(e, UpstreamError::Closed), "{e}");
    let e = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect_err("garbage");
    assert!(
        matches!(e, UpstreamError::Answer(AnswerError::Malformed(_))),
        "{e}"
    );
    assert!(!e.is_connect());
    assert_eq!(pool.idle(), 0);
    // Nothing listens there any more.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = free.local_addr().unwrap().to_string();
    drop(free);
    let e = post(&pool, &gone, &post_req(&body), keep_lambda)
        .await
        .expect_err("refused");
    assert!(e.is_connect(), "{e}");
    assert!(e.to_string().contains(&gone), "{e}");
}

#[tokio::test]
async fn bodies_arriving_after_the_head_are_streamed_and_the_connection_reused() {
    let (addr, _seen) = agent(vec![
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n|hello|world",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhe|llo\r\n|0\r\n\r\n",
        "!HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n|short",
    ])
    .await;
    let pool = Arc::new(Pool::default());
    let body = Bytes::new();
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("head");
    assert!(matches!(a.body, AnswerBody::Streamed(_)));
    assert_eq!(pool.idle(), 0, "busy until its body is read");
    assert_eq!(bytes(a.body).await.expect("body"), "helloworld");
    assert_eq!(pool.idle(), 1, "back once the body is read");
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("chunked head");
    assert_eq!(bytes(a.body).await.expect("chunked body"), "hello");
    assert_eq!(pool.idle(), 1);
    // Same connection all along: the third answer is the stand-in's third on it.
    let a = post(&pool, &addr, &post_req(&body), keep_lambda)
        .await
        .expect("head");
    let e = bytes(a.body).await.expect_err("cut short");
    assert!(e.to_string().contains("closed"), "{e}");
    assert_eq!(pool.idle(), 0, "a broken answer's connection is dropped");
}

#[tokio::test]
async fn a_silent_agent_is_left_to_the_caller_s_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    // Accepts and reads, never answers.
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let pool = Arc::new(Pool::default());
    let body = Bytes::new();
    let req = post_req(&body);
    let call = post(&pool, &addr, &req, keep_lambda);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), call)
            .await
            .is_err()
    );
    assert_eq!(
        pool.idle(),
        0,
        "a call cut off by its timeout drops its connection"
    );
}
