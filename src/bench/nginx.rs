//! A stock reverse proxy for `lambda bench invoke` to measure the gateway against: Debian's
//! nginx, started by the bench on a loopback port with as many worker processes as the gateway
//! has threads, proxying to the same replicas over keep-alive upstream connections
//! (`least_conn`, as the gateway balances by requests in flight; no access log, as the gateway
//! logs no request). Stopped (by its PID) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why nginx could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error(
        "cannot start nginx ({binary}): {source}; install Debian's nginx (scripts/lib.sh BENCH_PACKAGES)"
    )]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing nginx's configuration in {dir}: {source}")]
    Config {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nginx did not listen on {addr} within 10 s; its log: {log}")]
    NotListening { addr: String, log: String },
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:<port>/invoke`.
    pub url: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM stops it at once (SIGQUIT would wait for keep-alive connections).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration: `workers` processes, the replicas at `upstreams` (`host:port`).
pub fn config(dir: &std::path::Path, port: u16, workers: usize, upstreams: &[String]) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    format!(
        "worker_processes {workers};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 upstream replicas {{\n    least_conn;\n{servers}    keepalive 512;\n  }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port} reuseport;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://replicas;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n"
    )
}

impl Nginx {
    /// Starts `binary` (e.g. `/usr/sbin/nginx`) in the foreground on a free loopback port.
    pub fn start(binary: &str, workers: usize, upstreams: &[String]) -> Result<Nginx, NginxError> {
        let dir = std::env::temp_dir().join(format!(
            "lambda-bench-nginx-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let cfg_err = |source| NginxError::Config {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(cfg_err)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(cfg_err)?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, port, workers.max(1), upstreams)).map_err(cfg_err)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| NginxError::Spawn {
                binary: binary.into(),
                source,
            })?;
        let nginx = Nginx {
            child,
            dir: dir.clone(),
            url: format!("http://127.0.0.1:{port}/invoke"),
        };
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(NginxError::NotListening {
                    addr,
                    log: std::fs::read_to_string(dir.join("error.log")).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_proxies_to_every_replica_over_keep_alive() {
        let c = config(
            std::path::Path::new("/tmp/x"),
            8081,
            2,
            &["10.0.0.1:30001".into(), "10.0.0.2:30002".into()],
        );
        for want in [
            "worker_processes 2;",
            "server 10.0.0.1:30001;",
            "server 10.0.0.2:30002;",
            "keepalive 512;",
            "least_conn;",
            "listen 127.0.0.1:8081",
            "proxy_pass http://replicas;",
            "proxy_set_header Connection \"\";",
            "access_log off;",
        ] {
            assert!(c.contains(want), "{want} missing:\n{c}");
        }
    }
}
