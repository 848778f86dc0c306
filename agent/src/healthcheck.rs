//! `lambda-agent healthcheck`: the Docker HEALTHCHECK of the runtime images (which have no curl).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Why the agent is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Nothing answered on the port.
    #[error("cannot reach the agent on port {port}: {source}")]
    Connect {
        /// `LAMBDA_PORT`.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection broke mid-request.
    #[error("healthz request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The agent answered, but not with 200.
    #[error("healthz answered: {0}")]
    NotOk(String),
}

/// GETs `http://127.0.0.1:port/healthz` within `timeout`; Ok on 200.
pub fn check(port: u16, timeout: Duration) -> Result<(), HealthError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| HealthError::Connect { port, source })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::with_capacity(512);
    // The reply is tiny; 4 KiB is plenty and bounds what a confused server can make us read.
    stream.take(4096).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("");
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        Err(HealthError::NotOk(format!("{status_line} {body}")))
    }
}
