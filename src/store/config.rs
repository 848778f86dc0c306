//! How to reach etcd: endpoints, TLS, user/password and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::StoreError;
use super::keys::DEFAULT_PREFIX;

/// Connection settings of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `http://host:port` or `https://host:port`, one or more.
    pub endpoints: Vec<String>,
    /// CA bundle that signs etcd's server certificate (enables TLS).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Root key prefix, `/lambda` by default.
    pub prefix: String,
    /// Deadline of each request (watches excepted) and of connecting.
    pub request_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_cert: None,
            client_cert: None,
            client_key: None,
            user: None,
            password: None,
            prefix: DEFAULT_PREFIX.into(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// Settings for endpoints given as a comma-separated list.
    pub fn from_endpoints(endpoints: &str) -> Self {
        StoreConfig {
            endpoints: endpoints
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            ..Default::default()
        }
    }

    fn read(path: &PathBuf) -> Result<Vec<u8>, StoreError> {
        std::fs::read(path).map_err(|source| StoreError::Tls {
            path: path.display().to_string(),
            source,
        })
    }

    fn options(&self) -> Result<ConnectOptions, StoreError> {
        // gRPC keep-alive: a dead or hung etcd is noticed within seconds, even on an idle watch.
        // etcd enforces a minimum ping interval (`--grpc-keepalive-min-time`, default 5 s) and
        // refuses pings on a connection without streams: more frequent or idle pings earn a
        // GOAWAY (too_many_pings) that breaks every watch on the connection every few seconds.
        // So: every 6 s, only while a stream (watch, lease keep-alive, request) is open.
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout.min(Duration::from_secs(3)))
            .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3))
            .with_keep_alive_while_idle(false)
            .with_tcp_keepalive(Duration::from_secs(5));
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if self.ca_cert.is_some() || self.client_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(Self::read(ca)?));
            }
            if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
                tls = tls.identity(Identity::from_pem(Self::read(c)?, Self::read(k)?));
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }

    /// Connects and proves etcd answers (a `status` call) within the request timeout.
    pub(crate) async fn connect(&self) -> Result<(Client, Duration), StoreError> {
        let unreachable = |message: String| StoreError::Unreachable {
            endpoints: self.endpoints.join(","),
            message,
        };
        if self.endpoints.is_empty() {
            return Err(unreachable("no endpoints configured".into()));
        }
        let opts = self.options()?;
        let deadline = self.request_timeout;
        let fut = async {
            let mut client = Client::connect(&self.endpoints, Some(opts))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            client
                .status()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Ok::<_, StoreError>(client)
        };
        match tokio::time::timeout(deadline, fut).await {
            Ok(r) => Ok((r?, self.request_timeout)),
            Err(_) => Err(unreachable(format!("no answer within {deadline:?}"))),
        }
    }
}
