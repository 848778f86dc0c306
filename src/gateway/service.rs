//! The gateway's HTTP service: synchronous and asynchronous invocations
//! (`POST /v1/functions/{name}/invoke`, `POST /v1/namespaces/{ns}/functions/{name}/invoke`)
//! are served straight from here, everything else by the axum router.
//!
//! The invocation path is the hot one: the router's matching and its three middleware layers
//! (authentication, body deadline, error shape) cost a good share of a call. Here the same
//! steps run inline, in the same order and through the same functions — [`super::authenticate`],
//! [`super::body::within`], [`super::invoke::invoke`], [`super::error::shape`] — so an
//! invocation behaves the same whichever way it comes. A path this matching does not take
//! (percent-encoded, another method) goes to the router, which serves it as before.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;

use super::Gateway;

/// The service of one connection (cheap to clone: two `Arc`s).
#[derive(Clone)]
pub struct Service {
    gw: Arc<Gateway>,
    router: TowerToHyperService<Router>,
    body_read_timeout: Duration,
}

impl Service {
    /// Invocations served inline, the rest by `router`; every request body must arrive within
    /// `body_read_timeout`.
    pub fn new(gw: Arc<Gateway>, router: Router, body_read_timeout: Duration) -> Service {
        Service {
            gw,
            router: TowerToHyperService::new(router),
            body_read_timeout,
        }
    }
}

/// The function an invocation path names, as `(namespace, name)`; `None` for any other path,
/// and for names the router must decode (percent-encoded) or would not match (empty).
pub fn invoke_target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/")?.strip_suffix("/invoke")?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    if let Some(name) = rest.strip_prefix("functions/") {
        return plain(name).then_some(("default", name));
    }
    let (ns, name) = rest
        .strip_prefix("namespaces/")?
        .split_once("/functions/")?;
    (plain(ns) && plain(name)).then_some((ns, name))
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.method() != Method::POST || invoke_target(req.uri().path()).is_none() {
            return Box::pin(self.router.call(req));
        }
        let this = self.clone();
        Box::pin(async move {
            // The path's parts borrow from the URI (shared bytes: a clone copies nothing).
            let uri = req.uri().clone();
            let Some((ns, name)) = invoke_target(uri.path()) else {
                // Matched in `call` already; the router would serve it all the same.
                return this.router.call(req).await;
            };
            let (gw, limit) = (&this.gw, this.body_read_timeout);
            let req = req.map(|b| super::body::within(b, limit));
            let resp = match super::authenticate(gw, req.headers()).await {
                Ok(principal) => super::invoke::invoke(gw, &principal, ns, name, req).await,
                Err(e) => e.into_response(),
            };
            Ok(super::error::shape(resp).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_paths_and_the_others() {
        assert_eq!(
            invoke_target("/v1/functions/hello/invoke"),
            Some(("default", "hello"))
        );
        assert_eq!(
            invoke_target("/v1/namespaces/team-a/functions/hello/invoke"),
            Some(("team-a", "hello"))
        );
        for other in [
            "/v1/functions/hello",
            "/v1/functions//invoke",
            "/v1/functions/a/b/invoke",
            "/v1/functions/hello/invoke/",
            "/v1/functions/he%6Clo/invoke",
            "/v1/namespaces//functions/hello/invoke",
            "/v1/namespaces/a/functions//invoke",
            "/v1/namespaces/a/b/functions/hello/invoke",
            "/v1/namespaces/a/functions/b/c/invoke",
            "/v1/namespaces/a/functions/hello",
            "/v1/namespaces/a/invoke",
            "/v2/functions/hello/invoke",
            "/console/v1/functions/hello/invoke",
            "/v1/invoke",
        ] {
            assert_eq!(invoke_target(other), None, "{other}");
        }
    }
}
