//! The gateway's HTTP/1.1 client to the replicas' agents, on the invocation path.
//!
//! Each call is driven by the request's own future: it takes an idle keep-alive connection
//! to the replica (or connects), writes the request in one write, reads the answer and puts
//! the connection back — no connection task, no channel, no wake-up of another thread, which
//! is where hyper's pooled client spent much of a call (see the README's benchmark notes).
//! An answer's body that arrived with its head (the usual case: the agent writes its answer
//! at once) is returned whole; one still arriving is passed on as it arrives ([`stream`]), as
//! hyper's client did: content-length, chunked or until the connection closes ([`answer`]).
//! A connection goes back to the pool once its answer's body is read to its end.
//!
//! Idle connections are kept per endpoint and per gateway worker thread ([`Pool`]), so a
//! connection is only ever used by the thread whose reactor it is registered with.

pub mod answer;
mod stream;

use std::cell::Cell;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use answer::{AnswerError, Chunked, Framing, parse_head};
use stream::Remaining;

/// How long a connect may take: a replica's node answers a connect in well under a
/// millisecond, or refuses it; a connect that hangs (a SYN dropped on a node going away) is
/// treated as refused, so the call moves to another replica instead of spending the
/// function's whole timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per endpoint and worker thread.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer of a connection; larger than a usual answer, so one read takes it all.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size are copied out, so the connection keeps its buffer.
const COPY_BODY_UP_TO: usize = 4 * 1024;
/// Bodies up to this size are written in the same write as the head.
const INLINE_BODY_UP_TO: usize = 64 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connect failed (refused, unreachable): the replica never saw the request.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The replica's `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connect did not complete within [`CONNECT_TIMEOUT`].
    #[error("cannot connect to {addr}: no answer within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout {
        /// The replica's `host:port`.
        addr: String,
    },
    /// Writing the request failed.
    #[error("sending the request failed: {0}")]
    Write(#[source] std::io::Error),
    /// Reading the answer failed.
    #[error("reading the answer failed: {0}")]
    Read(#[source] std::io::Error),
    /// The agent closed the connection before its answer was complete.
    #[error("the connection closed before the answer was complete")]
    Closed,
    /// The answer is not valid HTTP/1.1.
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

impl UpstreamError {
    /// True when the replica never saw the request: its connection was refused or timed out.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. }
        )
    }
}

/// An agent's answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// The headers the caller kept, as sent (in order, repeats included).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: AnswerBody,
}

/// An answer's body: whole when it came with the head, else passed on as it arrives.
#[derive(Debug)]
pub enum AnswerBody {
    /// All of it.
    Whole(Bytes),
    /// Read from the connection as the caller polls it (errors when the answer breaks off).
    Streamed(axum::body::Body),
}

impl AnswerBody {
    /// As a response body.
    pub fn into_body(self) -> axum::body::Body {
        match self {
            AnswerBody::Whole(b) => axum::body::Body::from(b),
            AnswerBody::Streamed(b) => b,
        }
    }
}

/// One keep-alive connection and its read buffer.
#[derive(Debug)]
struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

thread_local! {
    /// This thread's slot in every [`Pool`]: 0 for threads that are not gateway workers.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use its own idle connections (slot `worker + 1` of every pool).
pub fn set_worker(worker: usize) {
    SLOT.with(|s| s.set(worker + 1));
}

/// Slots of each pool: one per gateway worker (one per core) and one for other threads.
fn slots() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) + 1)
}

/// One slot's idle connections, each with when it went idle (most recent last).
type Idle = Vec<(Conn, Instant)>;

/// Idle connections to one endpoint, per worker thread.
#[derive(Debug)]
pub struct Pool {
    slots: Box<[Mutex<Idle>]>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: (0..slots()).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }
}

impl Pool {
    fn slot(&self) -> std::sync::MutexGuard<'_, Idle> {
        let i = SLOT.with(Cell::get) % self.slots.len();
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection still open.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.slot();
        while let Some((mut c, since)) = idle.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                // Everything below it is older still.
                idle.clear();
                return None;
            }
            // The reactor marks a connection the agent closed as readable: a read then
            // returns its end (or bytes nobody asked for). Not readable: no syscall at all.
            let mut probe = [0u8; 1];
            match c.io.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    c.buf.clear();
                    return Some(c);
                }
                _ => continue,
            }
        }
        None
    }

    fn put(&self, c: Conn) {
        let mut idle = self.slot();
        if idle.len() < MAX_IDLE {
            idle.push((c, Instant::now()));
        }
    }

    /// Idle connections kept (all slots).
    pub fn idle(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// A request to send: `POST path` with these headers (name, value) and body.
pub struct Post<'a> {
    /// The request target.
    pub path: &'a str,
    /// Headers besides `host` and `content-length` (which are written for it).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body.
    pub body: &'a Bytes,
}

/// Sends `req` to the agent at `addr` (`host:port`) over a connection of `pool`, keeping the
/// answer's headers for which `keep` is true.
pub async fn post(
    pool: &Arc<Pool>,
    addr: &str,
    req: &Post<'_>,
    keep: impl Fn(&str) -> bool + Copy,
) -> Result<Answer, UpstreamError> {
    let mut head = Vec::with_capacity(256);
    write_head(&mut head, addr, req);
    if let Some(mut c) = pool.take() {
        match send(&mut c, &head, req.body).await {
            Ok(()) => return finish(pool, c, keep).await,
            // A reused connection that fails on write had been closed by the agent before
            // the request: no byte of it arrived, so it goes again on a fresh connection.
            Err(_) => drop(c),
        }
    }
    let mut c = connect(addr).await?;
    send(&mut c, &head, req.body)
        .await
        .map_err(UpstreamError::Write)?;
    finish(pool, c, keep).await
}

/// The request's head, `content-length` included.
fn write_head(out: &mut Vec<u8>, addr: &str, req: &Post<'_>) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(addr.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in req.headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "content-length: {}\r\n\r\n", req.body.len());
}

async fn connect(addr: &str) -> Result<Conn, UpstreamError> {
    let io = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(UpstreamError::ConnectTimeout { addr: addr.into() });
        }
        Ok(Err(source)) => {
            return Err(UpstreamError::Connect {
                addr: addr.into(),
                source,
            });
        }
        Ok(Ok(io)) => io,
    };
    let _ = io.set_nodelay(true);
    Ok(Conn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
    })
}

async fn send(c: &mut Conn, head: &[u8], body: &Bytes) -> std::io::Result<()> {
    if body.len() <= INLINE_BODY_UP_TO {
        let mut all = Vec::with_capacity(head.len() + body.len());
        all.extend_from_slice(head);
        all.extend_from_slice(body);
        c.io.write_all(&all).await
    } else {
        c.io.write_all(head).await?;
        c.io.write_all(body).await
    }
}

/// Reads more of the answer; an error at the connection's end.
async fn fill(c: &mut Conn) -> Result<(), UpstreamError> {
    c.buf.reserve(READ_CHUNK);
    match c.io.read_buf(&mut c.buf).await {
        Ok(0) => Err(UpstreamError::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(UpstreamError::Read(e)),
    }
}

/// Reads the answer's head, and its body when it came along; a connection whose answer is
/// read to its end goes back to the pool when it can carry another request.
async fn finish(
    pool: &Arc<Pool>,
    mut c: Conn,
    keep: impl Fn(&str) -> bool + Copy,
) -> Result<Answer, UpstreamError> {
    let head = loop {
        if let Some(h) = parse_head(&c.buf, keep)? {
            break h;
        }
        fill(&mut c).await?;
    };
    let _ = c.buf.split_to(head.len);
    let body = match head.framing {
        Framing::Length(n) if c.buf.len() >= n => {
            let b = if n <= COPY_BODY_UP_TO {
                let b = Bytes::copy_from_slice(&c.buf[..n]);
                let _ = c.buf.split_to(n);
                b
            } else {
                c.buf.split_to(n).freeze()
            };
            reuse(pool, c, head.keep_alive);
            AnswerBody::Whole(b)
        }
        Framing::Length(n) => stream::body(c, pool, Remaining::Length(n), head.keep_alive),
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            let mut out = Vec::new();
            let used = decoder.feed(&c.buf, &mut out)?;
            let _ = c.buf.split_to(used);
            if decoder.is_done() {
                reuse(pool, c, head.keep_alive);
                AnswerBody::Whole(Bytes::from(out))
            } else {
                let rest = Remaining::Chunked(decoder, Bytes::from(out));
                stream::body(c, pool, rest, head.keep_alive)
            }
        }
        Framing::UntilClose => stream::body(c, pool, Remaining::UntilClose, false),
    };
    Ok(Answer {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// Puts a connection whose answer was read to its end back into `pool`, when the answer
/// allows (`keep_alive`) and nothing follows it: bytes after an answer were never asked for.
fn reuse(pool: &Pool, mut c: Conn, keep_alive: bool) {
    if keep_alive && c.buf.is_empty() {
        if c.buf.capacity() > 4 * READ_CHUNK {
            c.buf = BytesMut::with_capacity(READ_CHUNK);
        }
        pool.put(c);
    }
}

#[cfg(test)]
mod tests;
