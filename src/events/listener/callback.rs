//! Callbacks (`X-Callback-Url`): the listener POSTs an execution's result to a URL its caller
//! chose. The result is the function author's bytes, so without a fence a callback would let
//! anyone who can invoke a function make the listener POST to what only the platform's hosts
//! reach: etcd's HTTP gateway on loopback (`/v3/kv/put` takes JSON), a cloud's metadata
//! service on 169.254.169.254. The listener therefore refuses loopback, link-local,
//! unspecified, multicast and broadcast addresses (IPv4-mapped ones too) unless the operator
//! allows a network with `--callback-allow`; hostnames are checked after resolution, at
//! connection time (no DNS rebinding), and redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::events::execution::Execution;

use super::Context;

/// Where callbacks may go.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    /// Networks allowed even though restricted by default (e.g. `127.0.0.0/8` on a laptop).
    pub allow: Vec<IpNet>,
}

/// Addresses only the platform's own hosts should reach.
fn restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fe80::/10
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

impl CallbackPolicy {
    /// Whether a callback may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !restricted(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// An HTTP client for callbacks that connects only where [`permits`](Self::permits) says,
    /// follows no redirect and gives up after `timeout`.
    pub fn client(&self, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Fenced(self.clone())))
            .build()
            .unwrap_or_default()
    }

    /// Why `url` may not be called, when its host is an address literal the policy refuses
    /// (hostnames are checked by the client's resolver).
    pub fn refuses_literal(&self, url: &str) -> Option<String> {
        let u = reqwest::Url::parse(url).ok()?;
        let host = u.host_str()?;
        let ip: IpAddr = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse()
            .ok()?;
        (!self.permits(ip)).then(|| refusal(&ip.to_string()))
    }
}

fn refusal(what: &str) -> String {
    Refused(what.to_string()).to_string()
}

/// The resolver's error for a host with no permitted address (found again by [`is_refusal`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "callback to {0} refused: loopback, link-local, multicast and unspecified addresses are reserved to the platform (allow a network with lambda events --callback-allow CIDR)"
)]
struct Refused(String);

/// A resolver that drops the addresses the policy refuses.
struct Fenced(CallbackPolicy);

impl Resolve for Fenced {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(Refused(format!("{host} (no permitted address)"))) as _);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// POSTs the result (or the last error) to the callback URL, with the execution id, status and
/// duration as headers; three tries, then logged and given up (the record has it all).
pub(super) async fn post(ctx: &Context, url: &str, e: &Execution) {
    if let Some(why) = ctx.callbacks.refuses_literal(url) {
        tracing::warn!(url, execution = %e.id, "{why}");
        ctx.metrics.callback("refused");
        return;
    }
    let duration: u64 = e.attempts.iter().filter_map(|a| a.duration_ms).sum();
    let body = match (&e.result, e.attempts.last().and_then(|a| a.error.clone())) {
        (Some(r), _) if !e.result_truncated => r.clone(),
        (_, err) => serde_json::json!({
            "status": e.status.as_str(),
            "reason": e.reason,
            "error": err,
        })
        .to_string(),
    };
    for attempt in 1..=3u32 {
        let sent = ctx
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-lambda-execution-id", &e.id)
            .header("x-lambda-execution-status", e.status.as_str())
            .header("x-lambda-duration-ms", duration.to_string())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                ctx.metrics.callback("delivered");
                return;
            }
            Ok(r) => tracing::warn!(url, status = %r.status(), attempt, "callback refused"),
            Err(err) if is_refusal(&err) => {
                tracing::warn!(url, execution = %e.id, error = %err, "callback not sent");
                ctx.metrics.callback("refused");
                return;
            }
            Err(err) => tracing::warn!(url, error = %err, attempt, "callback failed"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    ctx.metrics.callback("failed");
}

/// True when the resolver refused every address of the host (retrying cannot help).
fn is_refusal(err: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<Refused>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_platforms_own_addresses_are_refused_unless_allowed() {
        let p = CallbackPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.10.0.3",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!p.permits(ip(bad)), "{bad}");
        }
        for good in ["10.0.0.5", "192.168.1.2", "203.0.113.7", "2001:db8::1"] {
            assert!(p.permits(ip(good)), "{good}");
        }
        let p = CallbackPolicy {
            allow: vec!["127.0.0.0/8".parse().expect("net")],
        };
        assert!(p.permits(ip("127.0.0.1")));
        assert!(!p.permits(ip("169.254.169.254")));
    }

    #[test]
    fn address_literals_are_checked_before_sending() {
        let p = CallbackPolicy::default();
        let why = p
            .refuses_literal("http://169.254.169.254/latest/meta-data")
            .expect("refused");
        assert!(why.contains("--callback-allow"), "{why}");
        assert!(p.refuses_literal("http://[::1]:2379/v3/kv/put").is_some());
        assert_eq!(p.refuses_literal("http://10.1.2.3:8080/done"), None);
        // Hostnames go to the resolver, which applies the same rule per address.
        assert_eq!(p.refuses_literal("http://localhost:2379/"), None);
    }

    #[tokio::test]
    async fn hostnames_resolving_only_to_refused_addresses_are_not_called() {
        let p = CallbackPolicy::default();
        let err = p
            .client(Duration::from_secs(5))
            .post("http://localhost:9/done")
            .send()
            .await
            .expect_err("refused");
        assert!(is_refusal(&err), "{err:?}");
    }
}
