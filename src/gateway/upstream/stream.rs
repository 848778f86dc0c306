//! An answer's body that had not all arrived with its head: passed on to the caller as it
//! arrives (a large result is never held whole), the connection going back to the pool once
//! the body is read to its end. A body dropped before its end (the caller went away) drops
//! its connection.

use std::sync::Arc;

use bytes::Bytes;
use http_body::Frame;

use super::answer::Chunked;
use super::{AnswerBody, Conn, Pool, UpstreamError, fill, reuse};

/// What is left of a body.
pub(super) enum Remaining {
    /// This many bytes.
    Length(usize),
    /// Chunks, after the data decoded with the head (passed on first).
    Chunked(Chunked, Bytes),
    /// Everything until the agent closes the connection.
    UntilClose,
}

/// A body being read from its connection.
struct Reading {
    /// `None` once the body ended or broke off.
    conn: Option<Conn>,
    pool: Arc<Pool>,
    remaining: Remaining,
    keep_alive: bool,
}

/// The rest of an answer's body, read from `conn` as the caller polls it.
pub(super) fn body(
    conn: Conn,
    pool: &Arc<Pool>,
    remaining: Remaining,
    keep_alive: bool,
) -> AnswerBody {
    let reading = Reading {
        conn: Some(conn),
        pool: pool.clone(),
        remaining,
        keep_alive,
    };
    let frames = futures::stream::unfold(reading, |mut r| async move {
        let next = r.next().await?;
        Some((next.map(Frame::data), r))
    });
    AnswerBody::Streamed(axum::body::Body::new(http_body_util::StreamBody::new(
        frames,
    )))
}

impl Reading {
    /// The next piece of the body; `None` at its end (the connection then goes back to the
    /// pool) and after an error.
    async fn next(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        let c = self.conn.as_mut()?;
        loop {
            match &mut self.remaining {
                Remaining::Length(0) => break,
                Remaining::Length(left) => {
                    if !c.buf.is_empty() {
                        let take = (*left).min(c.buf.len());
                        *left -= take;
                        return Some(Ok(c.buf.split_to(take).freeze()));
                    }
                }
                Remaining::Chunked(decoder, first) => {
                    if !first.is_empty() {
                        return Some(Ok(std::mem::take(first)));
                    }
                    if decoder.is_done() {
                        break;
                    }
                    let mut out = Vec::new();
                    match decoder.feed(&c.buf, &mut out) {
                        Ok(used) => {
                            let _ = c.buf.split_to(used);
                        }
                        Err(e) => {
                            self.conn = None;
                            return Some(Err(e.into()));
                        }
                    }
                    if !out.is_empty() {
                        return Some(Ok(Bytes::from(out)));
                    }
                    if decoder.is_done() {
                        break;
                    }
                }
                Remaining::UntilClose => {
                    if !c.buf.is_empty() {
                        return Some(Ok(c.buf.split().freeze()));
                    }
                }
            }
            match fill(c).await {
                Ok(()) => {}
                Err(UpstreamError::Closed) if matches!(self.remaining, Remaining::UntilClose) => {
                    self.conn = None;
                    return None;
                }
                Err(e) => {
                    self.conn = None;
                    return Some(Err(e));
                }
            }
        }
        if let Some(c) = self.conn.take() {
            reuse(&self.pool, c, self.keep_alive);
        }
        None
    }
}
