//! A job: one execution to run, as it travels on [`EXECUTIONS_QUEUE`] (and through the delay
//! levels when it waits for a retry). The body is the event in structured mode; headers name
//! the execution, its function and the optional callback URL. Pure encoding and decoding, so
//! the wire form is unit-tested without a broker.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::api::ObjectKey;
use crate::events::cloudevent::{AmqpValue, CloudEvent, Data, STRUCTURED_CONTENT_TYPE};
use crate::events::delay::{EXECUTION_HEADER, FUNCTION_HEADER};

/// The queue of executions to run, consumed by every listener (competing consumers).
pub const EXECUTIONS_QUEUE: &str = "lambda.executions";
/// Header of a job: where to POST the result when the execution ends.
pub const CALLBACK_HEADER: &str = "x-lambda-callback-url";
/// Header of an asynchronous invocation's job: when it was accepted (RFC 3339), so that a
/// listener that finds no record yet creates it as the gateway would have.
pub const CREATED_HEADER: &str = "x-lambda-created-at";

/// One execution to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub execution_id: String,
    pub function: ObjectKey,
    pub callback: Option<String>,
    pub event: CloudEvent,
    /// Set on asynchronous invocations, whose `Queued` record is written after the 202: when
    /// the invocation was accepted. A job without it always has its record written first.
    pub created_at: Option<DateTime<Utc>>,
}

/// Why a message on the executions queue is not a job (it goes to the poison queue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job message lacks the {0} header")]
    MissingHeader(&'static str),
    #[error("job header {FUNCTION_HEADER} is {0:?}, not namespace/name")]
    BadFunction(String),
    #[error("job body is not a structured CloudEvent: {0}")]
    Event(String),
    #[error("job header {CREATED_HEADER} is {0:?}, not an RFC 3339 time")]
    BadCreated(String),
}

fn text(headers: &[(String, AmqpValue)], name: &str) -> Option<String> {
    headers.iter().find_map(|(k, v)| match v {
        AmqpValue::Text(t) if k.eq_ignore_ascii_case(name) && !t.is_empty() => Some(t.clone()),
        _ => None,
    })
}

impl Job {
    /// The message's properties: content type, headers, the execution id as message id.
    pub fn properties(&self) -> BasicProperties {
        let mut h = FieldTable::default();
        let long = |s: &str| AMQPValue::LongString(LongString::from(s.to_string()));
        h.insert(EXECUTION_HEADER.into(), long(&self.execution_id));
        h.insert(
            FUNCTION_HEADER.into(),
            long(&format!(
                "{}/{}",
                self.function.namespace, self.function.name
            )),
        );
        if let Some(c) = &self.callback {
            h.insert(CALLBACK_HEADER.into(), long(c));
        }
        if let Some(t) = &self.created_at {
            h.insert(
                CREATED_HEADER.into(),
                long(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            );
        }
        BasicProperties::default()
            .with_content_type(STRUCTURED_CONTENT_TYPE.into())
            .with_message_id(self.execution_id.as_str().into())
            .with_headers(h)
    }

    /// The message body: the event in structured mode.
    pub fn body(&self) -> Vec<u8> {
        self.event.to_structured_bytes()
    }

    /// Reads a job back from a message's headers and body.
    pub fn decode(headers: &[(String, AmqpValue)], body: &[u8]) -> Result<Job, JobError> {
        let execution_id =
            text(headers, EXECUTION_HEADER).ok_or(JobError::MissingHeader(EXECUTION_HEADER))?;
        let f = text(headers, FUNCTION_HEADER).ok_or(JobError::MissingHeader(FUNCTION_HEADER))?;
        let function = match f.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                ObjectKey::new(ns, name)
            }
            _ => return Err(JobError::BadFunction(f)),
        };
        let event =
            CloudEvent::from_structured(body).map_err(|e| JobError::Event(e.to_string()))?;
        let created_at = match text(headers, CREATED_HEADER) {
            None => None,
            Some(t) => Some(
                DateTime::parse_from_rfc3339(&t)
                    .map_err(|_| JobError::BadCreated(t.clone()))?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Job {
            execution_id,
            function,
            callback: text(headers, CALLBACK_HEADER),
            event,
            created_at,
        })
    }

    /// The `Queued` record of this job's asynchronous invocation, accepted at `created`: what
    /// the gateway writes behind its 202, and what a listener writes when it takes the job first.
    pub fn queued_record(&self, created: DateTime<Utc>) -> crate::events::execution::Execution {
        crate::events::execution::Execution::new(
            self.execution_id.clone(),
            &self.function,
            crate::events::execution::Trigger::Async,
            Some(crate::events::execution::EventRef::of(&self.event)),
            created,
        )
    }

    /// What the function receives: the event's JSON data (the original system's whole
    /// message, an async invocation's body); for an event without JSON data, the whole event
    /// in structured mode, so nothing of it is withheld.
    pub fn payload(&self) -> Vec<u8> {
        match &self.event.data {
            Some(Data::Json(v)) => serde_json::to_vec(v).unwrap_or_default(),
            _ => self.body(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::broker::headers_of;

    fn job() -> Job {
        let mut event = CloudEvent::new("e-1", "S1", "FileCreate").expect("event");
        event.data = Some(Data::Json(serde_json::json!({"filename": "test.py"})));
        Job {
            execution_id: "abc123".into(),
            function: ObjectKey::new("alice", "resize"),
            callback: Some("http://127.0.0.1:9999/done".into()),
            event,
            created_at: Some(
                DateTime::parse_from_rfc3339("2026-12-03T10:00:00.123456Z")
                    .expect("time")
                    .with_timezone(&Utc),
            ),
        }
    }

    #[test]
    fn a_job_survives_the_wire() {
        let j = job();
        let headers = headers_of(&j.properties());
        assert_eq!(Job::decode(&headers, &j.body()).expect("decode"), j);
        assert_eq!(j.payload(), br#"{"filename":"test.py"}"#);
    }

    #[test]
    fn events_without_json_data_are_passed_whole() {
        let mut j = job();
        j.event.data = Some(Data::Binary(vec![1, 2, 3]));
        let v: serde_json::Value = serde_json::from_slice(&j.payload()).expect("json");
        assert_eq!(v["id"], "e-1");
        assert_eq!(v["data_base64"], "AQID");
        j.event.data = None;
        let v: serde_json::Value = serde_json::from_slice(&j.payload()).expect("json");
        assert_eq!(v["type"], "FileCreate");
    }

    #[test]
    fn bad_jobs_name_what_is_wrong() {
        let j = job();
        let mut headers = headers_of(&j.properties());
        assert!(matches!(
            Job::decode(&headers, b"{}"),
            Err(JobError::Event(_))
        ));
        headers.retain(|(k, _)| k != FUNCTION_HEADER);
        assert_eq!(
            Job::decode(&headers, &j.body()),
            Err(JobError::MissingHeader(FUNCTION_HEADER))
        );
        headers.push((FUNCTION_HEADER.into(), AmqpValue::Text("nope".into())));
        assert_eq!(
            Job::decode(&headers, &j.body()),
            Err(JobError::BadFunction("nope".into()))
        );
        let mut headers = headers_of(&j.properties());
        headers.retain(|(k, _)| k != CREATED_HEADER);
        headers.push((CREATED_HEADER.into(), AmqpValue::Text("yesterday".into())));
        assert_eq!(
            Job::decode(&headers, &j.body()),
            Err(JobError::BadCreated("yesterday".into()))
        );
    }
}
