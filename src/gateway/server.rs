//! The gateway's HTTP/1 server: hyper's connection builder rather than `axum::serve`, which has
//! no header-read timeout, so that a client trickling its request (a header byte per second,
//! or a body that never ends) is cut off instead of holding a connection and a task forever.
//!
//! Bounds: the request head must arrive within `header_read_timeout` (the same timeout closes
//! an idle keep-alive connection), it holds at most `max_header_bytes` (else 431) and 100
//! headers, and the body must arrive within `body_read_timeout` (else 408, see
//! [`super::body`]). Body sizes are bounded where bodies are read.

use std::convert::Infallible;
use std::time::Duration;

use std::net::SocketAddr;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::service::Service;

/// Limits on what a client may send and how slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The request line and headers must arrive within this time; an idle keep-alive
    /// connection is closed after it too.
    pub header_read_timeout: Duration,
    /// The whole request body must arrive within this time (408 past it).
    pub body_read_timeout: Duration,
    /// Most bytes of request line and headers (431 past it).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(15),
            body_read_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets every connection
/// finish its request in flight (idle keep-alive connections close at once) and returns.
///
/// Connections are served by one worker thread per core, each with a runtime of its own
/// (as nginx's worker processes): a request and its call to the replica never leave the
/// thread that accepted the connection, so no wake-up crosses threads on the invocation path.
/// The caller's runtime only accepts and hands each connection to the next worker; should no
/// worker thread start, connections are served on the caller's runtime.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Every connection task holds a sender; recv() returns None once all of them are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<Infallible>(1);
    let conns = Connections {
        service,
        limits,
        stop: stop_rx.clone(),
        done: done_tx,
    };
    let workers = workers(&conns);
    let mut next = 0;
    let mut stop = stop_rx;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        // Round robin; a worker whose thread is gone leaves the connection to this runtime.
        let stream = match (workers.get(next % workers.len().max(1)), stream.into_std()) {
            (Some(w), Ok(std)) => match w.send((std, peer)) {
                Ok(()) => {
                    next += 1;
                    continue;
                }
                Err(mpsc::error::SendError((std, _))) => TcpStream::from_std(std),
            },
            (None, Ok(std)) => TcpStream::from_std(std),
            (_, Err(e)) => Err(e),
        };
        match stream {
            Ok(s) => {
                tokio::spawn(conns.clone().serve(s, peer));
            }
            Err(e) => tracing::warn!(%peer, error = %e, "gateway: cannot serve a connection"),
        }
    }
    drop(listener);
    drop(workers);
    drop(conns);
    let _ = done_rx.recv().await;
}

/// A connection handed to a worker thread.
type Handed = (std::net::TcpStream, SocketAddr);

/// What serving a connection needs (cheap to clone).
#[derive(Clone)]
struct Connections {
    service: Service,
    limits: HttpLimits,
    stop: watch::Receiver<bool>,
    /// Held while a connection is served.
    done: mpsc::Sender<Infallible>,
}

impl Connections {
    /// Serves one connection until it ends, or gracefully once the server stops.
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let Connections {
            service,
            limits,
            mut stop,
            done,
        } = self;
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            // A client that hung up, sent garbage or was too slow: its business only.
            tracing::debug!(%peer, error = %e, "gateway: connection ended with an error");
        }
        drop(done);
    }
}

/// Starts one worker thread per core; those that cannot start are left out (with a warning).
fn workers(conns: &Connections) -> Vec<mpsc::UnboundedSender<Handed>> {
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (0..n)
        .filter_map(|i| match worker(i, conns.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(worker = i, error = %e, "gateway: cannot start a worker thread");
                None
            }
        })
        .collect()
}

/// Worker `i`: a thread with a single-threaded runtime serving the connections it is handed,
/// until the sender is dropped and its last connection ended.
fn worker(i: usize, conns: Connections) -> std::io::Result<mpsc::UnboundedSender<Handed>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Handed>();
    std::thread::Builder::new()
        .name(format!("gateway-{i}"))
        .spawn(move || {
            super::upstream::set_worker(i);
            rt.block_on(async move {
                let (mine_tx, mut mine_rx) = mpsc::channel::<Infallible>(1);
                while let Some((std, peer)) = rx.recv().await {
                    match TcpStream::from_std(std) {
                        Ok(s) => {
                            let (c, mine) = (conns.clone(), mine_tx.clone());
                            tokio::spawn(async move {
                                c.serve(s, peer).await;
                                drop(mine);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "gateway: cannot serve a connection");
                        }
                    }
                }
                drop((conns, mine_tx));
                let _ = mine_rx.recv().await;
            });
        })?;
    Ok(tx)
}
