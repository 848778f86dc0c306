//! Asynchronous invocation (`Prefer: respond-async`, or `X-Lambda-Invocation-Type: Event`) and
//! `POST /v1/events`: the request becomes a message on the broker, and the answer is a 202 only
//! once the broker confirmed it (durably held), never before.
//!
//! An asynchronous invocation publishes its job for the listeners (the 202 waits only for the
//! broker's confirm) and writes its `Queued` record behind the answer; its id is derived from
//! the function and the invocation id, so a client that repeats a request with the same
//! `X-Lambda-Invocation-Id` gets the same execution back instead of a second run.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use lapin::BasicProperties;
use serde_json::json;

use crate::api::ObjectKey;
use crate::events::broker::EVENTS_EXCHANGE;
use crate::events::cloudevent::{CloudEvent, Data, STRUCTURED_CONTENT_TYPE};
use crate::events::execution::store;
use crate::events::execution::{Execution, ExecutionStatus, execution_id};
use crate::events::listener::{EXECUTIONS_QUEUE, Job};
use crate::events::publisher::Publisher;

use super::Gateway;
use super::authz::{Permission, Principal};
use super::error::HttpError;

/// The event type of an asynchronous invocation's event.
pub const ASYNC_EVENT_TYPE: &str = "lambda.invoke.async";

/// True when the caller asked for an asynchronous invocation: RFC 7240's `Prefer:
/// respond-async` (among other preferences, any case), or `X-Lambda-Invocation-Type: Event`
/// (AWS's spelling).
pub fn wants_async(headers: &HeaderMap) -> bool {
    let prefer = headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|p| {
                p.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async"))
            })
        })
    });
    prefer
        || headers
            .get("x-lambda-invocation-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("event"))
}

/// Most records [`Unwritten`] holds (beyond, a `GET` may miss a record for a moment).
const MAX_UNWRITTEN: usize = 65_536;

/// `Queued` records of invocations this gateway accepted whose write has not landed yet, so
/// that a client following `Location` right after the 202 finds its execution. An entry lives
/// from the 202 until its write returned (written, found already written by a listener, or
/// failed: the listener then writes it).
#[derive(Default)]
pub struct Unwritten(std::sync::Mutex<std::collections::HashMap<(String, String), Execution>>);

impl Unwritten {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), Execution>> {
        // A panic elsewhere cannot leave the map half-updated: every change is one call.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, e: Execution) {
        let mut m = self.map();
        if m.len() < MAX_UNWRITTEN {
            m.insert((e.namespace.clone(), e.id.clone()), e);
        }
    }

    fn remove(&self, ns: &str, id: &str) {
        self.map().remove(&(ns.to_string(), id.to_string()));
    }

    /// The record of an accepted invocation still being written.
    pub fn get(&self, ns: &str, id: &str) -> Option<Execution> {
        self.map().get(&(ns.to_string(), id.to_string())).cloned()
    }
}

fn publisher(gw: &Gateway) -> Result<&Publisher, HttpError> {
    gw.publisher.as_ref().ok_or_else(|| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BrokerNotConfigured",
            "this gateway has no broker: start it with --amqp-url (or LAMBDA_AMQP_URL)",
        )
    })
}

fn broker_down(p: &Publisher, e: impl std::fmt::Display) -> HttpError {
    let mut err = HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "BrokerUnavailable",
        format!("RabbitMQ at {} did not take the message: {e}", p.address()),
    );
    err.retry_after = Some(1);
    err
}

fn bad_request(m: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "BadRequest", m)
}

/// A callback URL must be absolute http(s).
fn callback_url(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let Some(v) = headers.get("x-callback-url") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| bad_request("X-Callback-Url: not visible ASCII"))?;
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Some(s.to_string()))
        }
        _ => Err(bad_request(format!(
            "X-Callback-Url: {s:?} is not an absolute http(s) URL"
        ))),
    }
}

/// `POST …/functions/{name}/invoke` when [`wants_async`]: 202 with the execution id and its
/// `Location`, once the broker confirmed the job (the record follows).
pub async fn submit(
    gw: &Arc<Gateway>,
    ns: &str,
    name: &str,
    invocation_id: &str,
    req: Request<Body>,
) -> Response {
    match try_submit(gw, ns, name, invocation_id, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn try_submit(
    gw: &Arc<Gateway>,
    ns: &str,
    name: &str,
    invocation_id: &str,
    req: Request<Body>,
) -> Result<Response, HttpError> {
    let route = match gw.table.get(ns, name) {
        Some(r) if r.http => r,
        Some(_) => {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("function {ns}/{name} has no http trigger"),
            ));
        }
        None => return Err(HttpError::unknown_function(ns, name)),
    };
    let callback = callback_url(req.headers())?;
    let client_named_it = req.headers().contains_key("x-lambda-invocation-id");
    let p = publisher(gw)?;
    let body = super::invoke::read_event(&route, req).await?;
    let data: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("the event is not JSON: {e}")))?
    };
    let mut event = CloudEvent::new(
        invocation_id,
        format!("/v1/namespaces/{ns}/functions/{name}"),
        ASYNC_EVENT_TYPE,
    )
    .map_err(|e| bad_request(e.to_string()))?;
    event.datacontenttype = Some("application/json".into());
    event.data = Some(Data::Json(data));
    event
        .set_namespace(ns)
        .map_err(|e| bad_request(e.to_string()))?;
    let key = ObjectKey::new(ns, name);
    let id = execution_id(&key, &event);
    let accepted_at = chrono::Utc::now();
    let mut job = Job {
        execution_id: id.clone(),
        function: key,
        callback,
        event,
        created_at: Some(accepted_at),
    };
    let record = job.queued_record(accepted_at);
    if client_named_it {
        // The same invocation id again: the execution it started, not a second one. One still
        // `Queued` may never have had its job confirmed (the client retries after a 503), so
        // it is published again, as a job of an existing record (no creation time): the
        // listener reads the record first and runs the execution once.
        match store::peek(&gw.store, ns, &id).await {
            Ok(s) if s.execution.status != ExecutionStatus::Queued => {
                return Ok(accepted(ns, &id, s.execution.status));
            }
            Ok(_) => job.created_at = None,
            Err(store::ExecutionError::NotFound { .. }) => {}
            Err(e) => {
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "StoreUnavailable",
                    e.to_string(),
                ));
            }
        }
    }
    p.publish("", EXECUTIONS_QUEUE, &job.body(), job.properties())
        .await
        .map_err(|e| broker_down(p, e))?;
    if job.created_at.is_some() {
        // The confirmed job is the durable copy: it carries all the record holds at this
        // point, and a listener that finds no record creates it from the job. The `Queued`
        // record is written after the 202 (group-committed with the others), and until it
        // lands this gateway answers `GET` for it from memory.
        gw.unwritten.insert(record.clone());
        let gw2 = gw.clone();
        gw.spawn(async move {
            if let Err(e) = store::create(&gw2.store, &record).await {
                tracing::warn!(execution = %record.id, error = %e,
                    "Queued record not written; the listener writes it when it takes the job");
            }
            gw2.unwritten.remove(&record.namespace, &record.id);
        });
    }
    Ok(accepted(ns, &id, ExecutionStatus::Queued))
}

fn accepted(ns: &str, id: &str, status: ExecutionStatus) -> Response {
    let location = format!("/v1/namespaces/{ns}/executions/{id}");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({"executionId": id, "status": status.as_str(), "location": location})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert("location", v);
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-lambda-execution-id", v);
    }
    r
}

/// `POST /v1/events`: one CloudEvent (binary or structured HTTP mode, or the original system's
/// message) published to `lambda.events`; 202 with its id once confirmed.
pub async fn events_default(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    req: Request<Body>,
) -> Response {
    publish_event(&gw, &principal, None, req).await
}

/// `POST /v1/namespaces/{ns}/events`: the same, for the functions of `ns` (an event naming
/// another namespace is refused).
pub async fn events_ns(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path(ns): Path<String>,
    req: Request<Body>,
) -> Response {
    publish_event(&gw, &principal, Some(&ns), req).await
}

/// Most bytes of an event sent to `POST /v1/events`: the largest payload a function takes,
/// plus room for a structured event's envelope.
const MAX_EVENT_BYTES: usize = crate::api::function::MAX_PAYLOAD_LIMIT as usize + 1024;

async fn publish_event(
    gw: &Gateway,
    principal: &Principal,
    ns: Option<&str>,
    req: Request<Body>,
) -> Response {
    let result = async {
        if let Some(ns) = ns {
            principal.check(ns, Permission::EventsPublish)?;
        }
        let headers = req.headers().clone();
        let body = super::body::read_body(
            req,
            MAX_EVENT_BYTES,
            super::body::too_large(MAX_EVENT_BYTES),
        )
        .await?;
        let mut event =
            CloudEvent::from_http(&headers, &body).map_err(|e| bad_request(e.to_string()))?;
        if let Some(ns) = ns {
            event
                .set_namespace(ns)
                .map_err(|e| bad_request(e.to_string()))?;
        }
        // The namespace whose functions the event reaches (the listener's rule).
        principal.check(
            crate::events::matching::event_namespace(&event),
            Permission::EventsPublish,
        )?;
        let p = publisher(gw)?;
        let props = BasicProperties::default()
            .with_content_type(STRUCTURED_CONTENT_TYPE.into())
            .with_message_id(event.id.as_str().into());
        p.publish(
            EVENTS_EXCHANGE,
            &event.type_,
            &event.to_structured_bytes(),
            props,
        )
        .await
        .map_err(|e| broker_down(p, e))?;
        Ok::<_, HttpError>((StatusCode::ACCEPTED, Json(json!({"id": event.id}))).into_response())
    };
    match result.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn async_is_asked_for_by_prefer_or_invocation_type() {
        assert!(wants_async(&headers(&[("prefer", "respond-async")])));
        assert!(wants_async(&headers(&[(
            "prefer",
            "return=minimal, Respond-Async; wait=10"
        )])));
        assert!(wants_async(&headers(&[
            ("prefer", "return=minimal"),
            ("prefer", "respond-async")
        ])));
        assert!(wants_async(&headers(&[(
            "x-lambda-invocation-type",
            "Event"
        )])));
        assert!(!wants_async(&headers(&[(
            "x-lambda-invocation-type",
            "RequestResponse"
        )])));
        assert!(!wants_async(&headers(&[(
            "prefer",
            "respond-asynchronously"
        )])));
        assert!(!wants_async(&HeaderMap::new()));
    }

    #[test]
    fn callback_urls_must_be_absolute_http() {
        assert_eq!(
            callback_url(&headers(&[("x-callback-url", "http://10.0.0.1:8000/done")])).expect("ok"),
            Some("http://10.0.0.1:8000/done".into())
        );
        assert_eq!(callback_url(&HeaderMap::new()).expect("none"), None);
        for bad in ["/relative", "ftp://x/y", "not a url"] {
            let h = {
                let mut h = HeaderMap::new();
                h.insert(
                    "x-callback-url",
                    HeaderValue::from_str(bad).expect("header"),
                );
                h
            };
            let e = callback_url(&h).expect_err(bad);
            assert!(e.message.contains("X-Callback-Url"), "{}", e.message);
        }
    }
}
