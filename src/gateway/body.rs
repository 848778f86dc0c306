//! Request bodies: every body must arrive within a deadline (a middleware wraps each one, so
//! a handler that reads a body in any way is covered), and handlers read theirs through
//! [`read_body`], which maps the ways a body goes wrong to the gateway's errors: 413 past the
//! size limit (from `Content-Length` before reading anything), 408 past the deadline, 400 when
//! the client broke off.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};

use super::error::HttpError;

/// The error a body yields once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTimeout`] when it has not ended by its deadline.
    struct Deadline<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: tokio::time::Sleep,
        limit: Duration,
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(*this.limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, failing with [`BodyTimeout`] unless it ends within `limit` from now.
pub fn within<B>(body: B, limit: Duration) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    Body::new(Deadline {
        inner: body,
        sleep: tokio::time::sleep(limit),
        limit,
    })
}

/// Middleware: the request's body must arrive within `limit` of the request's start.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    next.run(req.map(|inner| within(inner, limit))).await
}

/// A body declared past the limit but not past this is still read (and dropped) after the
/// 413 is sent, as nginx's lingering close does: a client busy writing it then reads the answer
/// instead of a broken pipe. A larger one is not waited for.
const DRAIN_UP_TO: usize = 16 * 1024 * 1024;

/// How long such a body is read at most.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// Reads and drops `body`, for at most [`DRAIN_FOR`].
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Reads a whole body of at most `limit` bytes; `too_large` is the 413 to answer past it.
pub async fn read_body(
    req: Request,
    limit: usize,
    too_large: impl Fn() -> HttpError,
) -> Result<Bytes, HttpError> {
    if let Some(len) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        if len <= DRAIN_UP_TO {
            tokio::spawn(drain(req.into_body()));
        }
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(unreadable(e.as_ref())),
    }
}

/// 408 for a body past its deadline, else 400 naming the cause.
fn unreadable(e: &(dyn std::error::Error + 'static)) -> HttpError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<BodyTimeout>() {
            return HttpError::new(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", t.to_string());
        }
        cause = c.source();
    }
    HttpError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("cannot read the request body: {e}"),
    )
}

/// A 413 for bodies past `limit` bytes.
pub fn too_large(limit: usize) -> impl Fn() -> HttpError {
    move || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body exceeds {limit} bytes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Body, len: Option<usize>) -> Request {
        let mut b = axum::http::Request::post("/");
        if let Some(l) = len {
            b = b.header("content-length", l.to_string());
        }
        b.body(body).expect("request")
    }

    #[tokio::test]
    async fn sizes_are_bounded() {
        let ok = read_body(request(Body::from("hello"), None), 5, too_large(5)).await;
        assert_eq!(ok.expect("read"), Bytes::from("hello"));
        let e = read_body(request(Body::from("hello!"), None), 5, too_large(5))
            .await
            .expect_err("too long");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Content-Length alone decides, before a byte is read.
        let e = read_body(request(Body::empty(), Some(6)), 5, too_large(5))
            .await
            .expect_err("declared too long");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        tx.send(Ok(Frame::data(Bytes::from("{"))))
            .await
            .expect("send");
        let endless = Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let body = within(endless, Duration::from_secs(3));
        let e = read_body(request(body, None), 100, too_large(100))
            .await
            .expect_err("timed out");
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT, "{}", e.message);
        assert!(e.message.contains("3s"), "{}", e.message);
        drop(tx);
    }
}
