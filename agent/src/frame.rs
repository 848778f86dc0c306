//! The framed protocol between the agent and a worker, over the worker's stdin and a private dup of
//! its stdout (the function's own stdout goes to stderr, so prints cannot corrupt a frame).
//!
//! Every frame is one ASCII header line, then exactly the number of payload bytes it announces:
//!
//! ```text
//! agent → worker   <invocation-id> <remaining-ms> <len>\n<event JSON>
//!                  load <len>\n<function>           a generic worker (pool agent), once: what
//!                                                  to serve (python3/node: JSON, shell: sh)
//! worker → agent   ready 0\n                       when the worker is warm (a generic worker:
//!                                                  once started, again once loaded)
//!                  ok <len>\n<result>              result JSON (shell: raw stdout)
//!                  error <len>\n<error JSON>       {"errorType","errorMessage","stackTrace"}
//!                  exit <code> <len>\n<stderr>     shell: the script exited non-zero; last stderr lines
//! ```
//!
//! Length prefixes (instead of one JSON line) let the event and the result pass through unchanged:
//! the agent never re-encodes a payload.

use bytes::Bytes;
use serde::Serialize;

/// A header line the worker sent that is not a frame of this protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The header has an unknown kind or malformed numbers.
    #[error("malformed frame header from the worker: {0:?}")]
    BadHeader(String),
    /// The announced payload is larger than the agent accepts.
    #[error("the worker announced a {len}-byte payload (limit {limit})")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// A parsed worker → agent header (its payload follows on the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The worker is warm and waits for requests.
    Ready,
    /// The function returned; `len` bytes of result follow.
    Ok {
        /// Payload length.
        len: usize,
    },
    /// The function raised; `len` bytes of error JSON follow.
    Error {
        /// Payload length.
        len: usize,
    },
    /// The shell script exited with `code`; `len` bytes of its stderr tail follow.
    Exit {
        /// The script's exit status.
        code: i32,
        /// Payload length.
        len: usize,
    },
}

impl Header {
    /// Bytes of payload that follow this header.
    pub fn len(&self) -> usize {
        match *self {
            Header::Ready => 0,
            Header::Ok { len } | Header::Error { len } | Header::Exit { len, .. } => len,
        }
    }

    /// True when no payload follows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses one header line (with or without its trailing newline), refusing payloads over `limit`.
pub fn parse_header(line: &[u8], limit: usize) -> Result<Header, FrameError> {
    let bad = || FrameError::BadHeader(String::from_utf8_lossy(line).chars().take(200).collect());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut words = text.trim_end_matches(['\n', '\r']).split(' ');
    let kind = words.next().ok_or_else(bad)?;
    let mut num = || -> Result<i64, FrameError> {
        words
            .next()
            .and_then(|w| w.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let size = |n: i64| -> Result<usize, FrameError> {
        let len = usize::try_from(n).map_err(|_| bad())?;
        if len > limit {
            return Err(FrameError::TooLarge { len, limit });
        }
        Ok(len)
    };
    let header = match kind {
        "ready" => {
            num()?;
            Header::Ready
        }
        "ok" => Header::Ok { len: size(num()?)? },
        "error" => Header::Error { len: size(num()?)? },
        "exit" => {
            let code = i32::try_from(num()?).map_err(|_| bad())?;
            Header::Exit {
                code,
                len: size(num()?)?,
            }
        }
        _ => return Err(bad()),
    };
    if words.next().is_some() {
        return Err(bad());
    }
    Ok(header)
}

/// Writes the request frame for one invocation into `out` (cleared first, so its capacity is reused).
/// `id` must be a valid invocation id (see [`valid_invocation_id`]): it has no spaces or newlines.
pub fn encode_request(out: &mut Vec<u8>, id: &str, remaining_ms: u64, event: &[u8]) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "{id} {remaining_ms} {}", event.len());
    out.extend_from_slice(event);
}

/// Writes the `load` frame that specialises a generic worker into `out` (cleared first).
/// A generic worker reads exactly one of these, before any invocation frame.
pub fn encode_load(out: &mut Vec<u8>, payload: &[u8]) {
    use std::io::Write;
    out.clear();
    let _ = writeln!(out, "load {}", payload.len());
    out.extend_from_slice(payload);
}

/// Invocation ids travel in frame headers and log prefixes: 1–128 of `[A-Za-z0-9._:-]`.
pub fn valid_invocation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The JSON body of every error response: `{"errorType","errorMessage","stackTrace"}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// A CamelCase type: the exception's class, or the agent's own (`Timeout`, `WorkerExited`, …).
    #[serde(rename = "errorType")]
    pub error_type: &'a str,
    /// Human-readable message.
    #[serde(rename = "errorMessage")]
    pub error_message: &'a str,
    /// Stack lines, innermost last; empty for the agent's own errors.
    #[serde(rename = "stackTrace")]
    pub stack_trace: &'a [String],
}

/// Serialises an [`ErrorBody`].
pub fn error_json(error_type: &str, message: &str, stack: &[String]) -> Bytes {
    let body = ErrorBody {
        error_type,
        error_message: message,
        stack_trace: stack,
    };
    // Serialising plain strings into JSON cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Turns a shell script's stdout into a JSON result: valid JSON passes unchanged (trimmed), empty output
/// is `null`, anything else becomes a JSON string (one trailing newline dropped).
pub fn shell_result(stdout: Vec<u8>) -> Bytes {
    let trimmed = stdout.trim_ascii();
    if trimmed.is_empty() {
        return Bytes::from_static(b"null");
    }
    if is_json(trimmed) {
        let (start, len) = (
            stdout.len() - stdout.trim_ascii_start().len(),
            trimmed.len(),
        );
        return Bytes::from(stdout).slice(start..start + len);
    }
    let text = String::from_utf8_lossy(&stdout);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Bytes::from(serde_json::to_vec(text).unwrap_or_default())
}

/// The message of a shell script's non-zero exit: its last stderr lines, or the bare status.
pub fn exit_message(code: i32, stderr_tail: &[u8]) -> String {
    let tail = String::from_utf8_lossy(stderr_tail);
    let tail = tail.trim();
    if tail.is_empty() {
        format!("exit status {code}")
    } else {
        tail.to_string()
    }
}

/// True when `bytes` is one complete JSON value (checked without building it).
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(parse_header(b"ready 0\n", 10), Ok(Header::Ready));
        assert_eq!(parse_header(b"ok 5\n", 10), Ok(Header::Ok { len: 5 }));
        assert_eq!(parse_header(b"error 0", 10), Ok(Header::Error { len: 0 }));
        assert_eq!(
            parse_header(b"exit 3 7\n", 10),
            Ok(Header::Exit { code: 3, len: 7 })
        );
        assert_eq!(Header::Exit { code: 1, len: 7 }.len(), 7);
    }

    #[test]
    fn bad_headers_are_refused() {
        for bad in [
            &b"nope 1\n"[..],
            b"ok\n",
            b"ok -1\n",
            b"ok 1 2\n",
            b"ok x\n",
            b"\xff 1",
            b"",
        ] {
            assert!(
                matches!(parse_header(bad, 10), Err(FrameError::BadHeader(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_header(b"ok 11\n", 10),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );
    }

    #[test]
    fn request_frame_reuses_buffer() {
        let mut buf = Vec::with_capacity(64);
        encode_request(&mut buf, "abc", 250, b"{\"a\":\n1}");
        assert_eq!(buf, b"abc 250 8\n{\"a\":\n1}");
        encode_request(&mut buf, "x", 1, b"2");
        assert_eq!(buf, b"x 1 1\n2");
        encode_load(&mut buf, b"{}");
        assert_eq!(buf, b"load 2\n{}");
    }

    #[test]
    fn invocation_ids() {
        assert!(valid_invocation_id("0f3a-9c:1.x_Y"));
        assert!(!valid_invocation_id(""));
        assert!(!valid_invocation_id("a b"));
        assert!(!valid_invocation_id("a\nb"));
        assert!(!valid_invocation_id(&"a".repeat(129)));
    }

    #[test]
    fn error_shape() {
        let body = error_json("Timeout", "exceeded 5 ms", &[]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errorType": "Timeout", "errorMessage": "exceeded 5 ms", "stackTrace": []})
        );
    }

    #[test]
    fn shell_results() {
        assert_eq!(&shell_result(b" {\"a\": 1}\n".to_vec())[..], b"{\"a\": 1}");
        assert_eq!(&shell_result(b"42\n".to_vec())[..], b"42");
        assert_eq!(
            &shell_result(b"hello world\n".to_vec())[..],
            b"\"hello world\""
        );
        assert_eq!(&shell_result(b"a\"b\n\n".to_vec())[..], b"\"a\\\"b\\n\"");
        assert_eq!(&shell_result(b"\n".to_vec())[..], b"null");
        assert_eq!(exit_message(2, b"\n"), "exit status 2");
        assert_eq!(exit_message(2, b"boom\nbad thing\n"), "boom\nbad thing");
    }
}
