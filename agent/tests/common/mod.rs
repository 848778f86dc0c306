//! Test helpers: start the real `lambda-agent` binary on a free port and talk raw HTTP/1.1 to it
//! (a tiny client keeps the agent's dependency set small).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running agent; killed on drop.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

/// Picks a port that is free right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Agent {
    /// Spawns the agent for `runtime` with `code` as its code file, without waiting for health.
    pub fn spawn(runtime: &str, code: &str, env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let code_path = dir.path().join("code");
        std::fs::write(&code_path, code).unwrap();
        let port = free_port();
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda-agent"));
        cmd.env("LAMBDA_RUNTIME", runtime)
            .env("LAMBDA_CODE", &code_path)
            .env("LAMBDA_WORK_DIR", dir.path().join("work"))
            .env("LAMBDA_PORT", port.to_string())
            .env("LAMBDA_FUNCTION", "tests/fn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Agent {
            child,
            port,
            dir,
            log,
        }
    }

    /// Spawns the agent and waits until `/healthz` answers 200.
    pub fn start(runtime: &str, code: &str, env: &[(&str, &str)]) -> Agent {
        let agent = Agent::spawn(runtime, code, env);
        agent.wait_healthy(Duration::from_secs(20));
        agent
    }

    pub fn wait_healthy(&self, within: Duration) {
        let end = Instant::now() + within;
        loop {
            if let Ok(r) = request(self.port, "GET", "/healthz", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "agent not healthy in {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POST /invoke with `body` on a fresh connection.
    pub fn invoke(&self, body: &str) -> Resp {
        request(self.port, "POST", "/invoke", &[], body.as_bytes()).unwrap()
    }

    pub fn invoke_with(&self, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(self.port, "POST", "/invoke", headers, body).unwrap()
    }

    /// Sends SIGTERM (through kill(1): the tests forbid unsafe code too).
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "agent did not exit in {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(req.as_bytes())?;
        stream.write_all(body)?;
        read_response(&mut self.reader)
    }
}

pub fn read_response(reader: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().expect("content-length");
        }
        headers.push((k, v));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    Conn::open(port)?.send(method, path, headers, body)
}

/// Waits until `path` exists (a function's "I have started" marker).
pub fn wait_file(path: &Path, within: Duration) {
    let end = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < end,
            "{} not created in {within:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the agent's log contains `needle` (stderr is forwarded asynchronously).
pub fn wait_log(agent: &Agent, needle: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    while !agent.log_text().contains(needle) {
        assert!(
            Instant::now() < end,
            "{needle:?} not logged:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `/healthz` reports `n` warm workers.
pub fn eventually_workers(agent: &Agent, n: u64) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let h = request(agent.port, "GET", "/healthz", &[], b"").map(|r| r.json());
        if let Ok(h) = &h
            && h["workers"].as_u64() == Some(n)
        {
            return;
        }
        assert!(
            Instant::now() < end,
            "not {n} workers: {h:?}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
