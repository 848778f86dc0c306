//! Reading an agent's HTTP/1.1 answer: its head (status, the headers the caller keeps, how
//! the body is framed, whether the connection can be reused) and a chunked body. Pure
//! functions over bytes, so every framing and every way an answer can be broken is tested
//! here without a socket.
//!
//! Framing follows RFC 9112 §6.3 for the answer to a `POST`: 1xx interim answers are skipped,
//! 204 and 304 have no body, `Transfer-Encoding` wins over `Content-Length` (chunked when it
//! is the last coding, else the body runs to the connection's end), `Content-Length` must be
//! one number (repeats must agree), and without either the body runs to the connection's end.

use axum::http::{HeaderName, HeaderValue};

/// Most bytes of an answer's head (status line and headers), as hyper's client allows about.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Most headers in an answer (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// Why an answer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("malformed answer head: {0}")]
    Malformed(String),
    #[error("the answer's head exceeds {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the answer's content-length {0:?} is not one number")]
    ContentLength(String),
    #[error("the answer switches protocols (101), which the gateway never asks for")]
    Upgrade,
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes follow the head.
    Length(usize),
    /// Chunked transfer coding.
    Chunked,
    /// The body runs until the agent closes the connection.
    UntilClose,
}

/// An answer's head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// The final status code (interim 1xx answers skipped).
    pub status: u16,
    /// The headers the caller asked to keep, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bytes of the head, interim answers before it included.
    pub len: usize,
    /// How its body is delimited.
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Parses the answer head at the start of `buf`, skipping interim (1xx) answers; `Ok(None)`
/// while it is incomplete. Only headers for which `keep` (given the name as sent) is true are
/// converted.
pub fn parse_head(buf: &[u8], keep: impl Fn(&str) -> bool) -> Result<Option<Head>, AnswerError> {
    let mut offset = 0;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        let len = match resp.parse(&buf[offset..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() - offset > MAX_HEAD_BYTES {
                    Err(AnswerError::HeadTooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(AnswerError::Malformed(format!(
                    "more than {MAX_HEADERS} headers"
                )));
            }
            Err(e) => return Err(AnswerError::Malformed(e.to_string())),
        };
        if len > MAX_HEAD_BYTES {
            return Err(AnswerError::HeadTooLarge);
        }
        let status = resp.code.unwrap_or(0);
        let version = resp.version.unwrap_or(1);
        if status == 101 {
            return Err(AnswerError::Upgrade);
        }
        if (100..200).contains(&status) {
            offset += len;
            continue;
        }
        let mut content_length: Option<usize> = None;
        let mut transfer: Option<bool> = None;
        let mut close = version == 0;
        let mut headers = Vec::new();
        for h in resp.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let text = String::from_utf8_lossy(h.value);
                for part in text.split(',') {
                    let n: usize = part
                        .trim()
                        .parse()
                        .map_err(|_| AnswerError::ContentLength(text.to_string()))?;
                    if content_length.is_some_and(|c| c != n) {
                        return Err(AnswerError::ContentLength(text.to_string()));
                    }
                    content_length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let text = String::from_utf8_lossy(h.value);
                let last = text.rsplit(',').next().unwrap_or("").trim();
                transfer = Some(last.eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in String::from_utf8_lossy(h.value).split(',') {
                    let token = token.trim();
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                        close = false;
                    }
                }
            }
            if keep(name) {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| AnswerError::Malformed(format!("header name {name:?}")))?;
                let v = HeaderValue::from_bytes(h.value)
                    .map_err(|_| AnswerError::Malformed(format!("value of header {name}")))?;
                headers.push((n, v));
            }
        }
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            match (transfer, content_length) {
                (Some(true), cl) => {
                    // Both framings at once smells of smuggling: read it, never reuse it.
                    close |= cl.is_some();
                    Framing::Chunked
                }
                (Some(false), _) => Framing::UntilClose,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::UntilClose,
            }
        };
        return Ok(Some(Head {
            status,
            headers,
            len: offset + len,
            framing,
            keep_alive: !close && framing != Framing::UntilClose,
        }));
    }
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes of the current chunk remain.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// An incremental decoder of a chunked body: fed the bytes as they arrive, it appends the
/// data to the output and says how much input it consumed.
#[derive(Debug)]
pub struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: ChunkState::Size,
        }
    }
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

/// The line at the start of `input` without its CRLF and the bytes it spans; `None` while
/// incomplete.
fn line(input: &[u8]) -> Result<Option<(&[u8], usize)>, AnswerError> {
    match input.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&input[..i], i + 2))),
        None if input.len() > MAX_LINE => Err(AnswerError::Chunk("line too long")),
        None => Ok(None),
    }
}

impl Chunked {
    /// True once the last chunk and the trailers are read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input` into `out`; returns the bytes consumed (the rest must
    /// be fed again with more behind it).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, AnswerError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => {
                    let Some((l, n)) = line(rest)? else {
                        return Ok(at);
                    };
                    // Chunk extensions (after ';') carry nothing the gateway uses.
                    let size = l.split(|&b| b == b';').next().unwrap_or(b"");
                    let size = std::str::from_utf8(size)
                        .ok()
                        .map(str::trim)
                        .filter(|s| !s.is_empty() && s.len() <= 15)
                        .and_then(|s| usize::from_str_radix(s, 16).ok())
                        .ok_or(AnswerError::Chunk("bad chunk size"))?;
                    at += n;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = left.min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(AnswerError::Chunk("no CRLF after a chunk's data"));
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some((l, n)) = line(rest)? else {
                        return Ok(at);
                    };
                    at += n;
                    if l.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str) -> bool {
        true
    }

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), all)
            .expect("parses")
            .expect("complete")
    }

    #[test]
    fn content_length_answers() {
        let text = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nX-Lambda-Status: ok\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        let h = head(text);
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(11));
        assert!(h.keep_alive);
        assert_eq!(&text[h.len..], "{\"ok\":true}");
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "x-lambda-status", "content-length"],
            "names lower-cased, in order"
        );
        // Only the headers asked for are converted.
        let h = parse_head(text.as_bytes(), |n| {
            n.eq_ignore_ascii_case("x-lambda-status")
        })
        .unwrap()
        .unwrap();
        assert_eq!(h.headers.len(), 1);
        assert_eq!(h.headers[0].1, "ok");
        // Repeated, agreeing lengths are one length.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn bodiless_and_interim_answers() {
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        let text =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n";
        let h = head(text);
        assert_eq!(h.status, 502);
        assert_eq!(h.len, text.len(), "the interim answer is consumed too");
        assert_eq!(
            parse_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", all),
            Err(AnswerError::Upgrade)
        );
    }

    #[test]
    fn chunked_and_until_close_answers_are_framed_and_never_reused_when_unsafe() {
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
    }

    #[test]
    fn connection_reuse_follows_the_version_and_connection_header() {
        let h = head("HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn truncated_heads_ask_for_more() {
        let text = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n";
        for cut in 0..text.len() {
            assert_eq!(
                parse_head(&text.as_bytes()[..cut], all),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(parse_head(text.as_bytes(), all).unwrap().is_some());
        // Interim answer complete, final one not yet.
        assert_eq!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", all),
            Ok(None)
        );
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_head(bad.as_bytes(), all),
                    Err(AnswerError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        for bad in ["-1", "abc", "1, 2", "", "99999999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
            assert!(
                matches!(
                    parse_head(text.as_bytes(), all),
                    Err(AnswerError::ContentLength(_))
                ),
                "{bad:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            parse_head(text.as_bytes(), all),
            Err(AnswerError::Malformed(m)) if m.contains("headers")
        ));
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(
            parse_head(huge.as_bytes(), all),
            Err(AnswerError::HeadTooLarge)
        );
    }

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize, bool), AnswerError> {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let n = c.feed(input, &mut out)?;
        Ok((out, n, c.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_whole_and_byte_by_byte() {
        let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        let (out, n, done) = decode(body).expect("decodes");
        assert_eq!(out, b"hello, world");
        assert!(done);
        assert_eq!(&body[n..], b"NEXT", "stops at the body's end");
        // Fed as it trickles in, one byte more each time.
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for &b in &body[..body.len() - 4] {
            pending.push(b);
            let used = c.feed(&pending, &mut out).expect("decodes");
            pending.drain(..used);
        }
        assert!(c.is_done());
        assert_eq!(out, b"hello, world");
        assert!(pending.is_empty());
    }

    #[test]
    fn truncated_and_malformed_chunked_bodies() {
        let (out, n, done) = decode(b"5\r\nhel").expect("partial");
        assert_eq!((out.as_slice(), n, done), (&b"hel"[..], 6, false));
        let (_, n, done) = decode(b"5\r\nhello\r\n0\r\n").expect("no final CRLF yet");
        assert_eq!((n, done), (13, false));
        for (bad, why) in [
            (&b"zz\r\n"[..], "bad chunk size"),
            (b"\r\n", "bad chunk size"),
            (b"fffffffffffffffff\r\n", "bad chunk size"),
            (b"2\r\nhiXX", "no CRLF after a chunk's data"),
        ] {
            assert_eq!(decode(bad), Err(AnswerError::Chunk(why)), "{bad:?}");
        }
        let long = vec![b'1'; MAX_LINE + 1];
        assert_eq!(decode(&long), Err(AnswerError::Chunk("line too long")));
    }
}
