//! The gateway's OpenAPI 3.1 document and an HTML reference page rendered from it (served from
//! the gateway itself: no external scripts, works offline).
//!
//! The kinds' schemas come from schemars (JSON Schema 2020-12, which OpenAPI 3.1 embeds as is);
//! their `$defs` are hoisted into `components/schemas` and every `#/$defs/X` reference rewritten
//! to `#/components/schemas/X`, so that every `$ref` of the document resolves (validators and
//! client generators resolve references against the document's root, not the embedded schema).

use serde_json::{Map, Value, json};

use crate::api::Kind;
use crate::api::schema::schema;

fn err_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// Points `#/$defs/X` references at `#/components/schemas/X`, everywhere in `v`.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{name}");
            }
            o.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// A schemars schema as a component: its `$defs` moved into `components`, its references
/// rewritten to point there.
fn component(mut schema: Value, components: &mut Map<String, Value>) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        if let Some(Value::Object(defs)) = o.remove("$defs") {
            for (name, mut def) in defs {
                rewrite_refs(&mut def);
                components.insert(name, def);
            }
        }
    }
    rewrite_refs(&mut schema);
    schema
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let function_schema = component(schema(Kind::Function), &mut schemas);
    schemas.insert("Function".into(), function_schema);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "properties": {"error": {"type": "object", "properties": {
            "code": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}}}}),
    );
    schemas.insert(
        "FunctionError".into(),
        json!({"type": "object", "properties": {"errorType": {"type": "string"}, "errorMessage": {"type": "string"}, "stackTrace": {"type": "array", "items": {"type": "string"}}}}),
    );
    let ns = json!({"name": "ns", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Namespace"});
    let name = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Function name"});
    let function_ref = json!({"$ref": "#/components/schemas/Function"});
    let invoke = |params: Value| {
        json!({"post": {
        "summary": "Invoke a function (synchronously, or queued with Prefer: respond-async)",
        "description": "The request body is the event (JSON); the response body is the function's result. One timeout, the function's, governs the whole call. With `Prefer: respond-async` (or `X-Lambda-Invocation-Type: Event`) the invocation is queued on the broker instead: 202 once the broker confirmed it, with the execution id and its Location; `X-Callback-Url` receives the result when it ends.",
        "parameters": with_async_headers(params),
        "requestBody": {"required": true, "content": {"application/json": {"schema": {}}}},
        "responses": {
            "200": {"description": "The function's result", "headers": {
                "X-Lambda-Invocation-Id": {"schema": {"type": "string"}},
                "X-Lambda-Duration-Ms": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {}}}},
            "202": {"description": "Queued (asynchronous): `{executionId, status, location}`", "headers": {
                "Location": {"schema": {"type": "string"}}, "X-Lambda-Execution-Id": {"schema": {"type": "string"}}}},
            "401": err_response("Missing or invalid bearer token"),
            "404": err_response("Unknown function"),
            "413": err_response("The event exceeds the function's maxPayloadBytes"),
            "429": err_response("Over the function's concurrency (see Retry-After)"),
            "502": {"description": "The function raised an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FunctionError"}}}},
            "503": err_response("No ready replica"),
            "504": err_response("The function exceeded its timeout"),
        }}})
    };
    let events = |params: Value| {
        json!({"post": {
        "summary": "Publish an event to lambda.events",
        "description": "One CloudEvent in binary mode (`ce-*` headers, the body is its data) or structured mode (`application/cloudevents+json`), or the original system's `{event_source, user_name, event_data}` message. The namespaced form addresses the event to that namespace's functions.",
        "parameters": params,
        "requestBody": {"required": true, "content": {"application/cloudevents+json": {"schema": {}}, "application/json": {"schema": {}}}},
        "responses": {
            "202": {"description": "Published and confirmed by the broker: `{id}`"},
            "400": err_response("Not an event (the error names the attribute)"),
            "401": err_response("Missing or invalid bearer token"),
            "503": err_response("The broker did not take it"),
        }}})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Lambda on OpenStack gateway", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Invoke functions and manage them over REST. Authenticate with `Authorization: Bearer <API key>` (create one with `lambda apikey create NAME`)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/functions/{name}/invoke": invoke(json!([name])),
            "/v1/namespaces/{ns}/functions/{name}/invoke": invoke(json!([ns, name])),
            "/v1/namespaces/{ns}/functions": {
                "get": {"summary": "List functions", "parameters": [ns], "responses": {"200": {"description": "FunctionList"}}},
                "post": {"summary": "Create a function", "parameters": [ns],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": function_ref}}},
                         "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": function_ref}}},
                                       "400": err_response("Malformed JSON or an invalid Function (details name the fields)"),
                                       "409": err_response("Already exists")}}
            },
            "/v1/namespaces/{ns}/functions/{name}": {
                "get": {"summary": "Get a function with its status", "parameters": [ns, name],
                        "responses": {"200": {"description": "The Function", "content": {"application/json": {"schema": function_ref}}}, "404": err_response("Not found")}},
                "put": {"summary": "Create or replace a function's spec, labels and annotations", "parameters": [ns, name],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": function_ref}}},
                        "responses": {"200": {"description": "Replaced"}, "201": {"description": "Created"}, "400": err_response("Invalid")}},
                "delete": {"summary": "Delete a function", "parameters": [ns, name],
                           "responses": {"200": {"description": "Deleted"}, "202": {"description": "Deletion started (finalizers run)"}, "404": err_response("Not found")}}
            },
            "/v1/namespaces/{ns}/functions/{name}/executions": {
                "get": {"summary": "A function's execution records, newest first", "parameters": [ns, name,
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["Queued", "Running", "Retrying", "Succeeded", "Failed", "DeadLettered"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                    {"name": "continue", "in": "query", "schema": {"type": "string"}, "description": "The `continue` of the previous page"}],
                        "responses": {"200": {"description": "ExecutionList (`continue` absent on the last page)"}, "400": err_response("A bad or unknown query parameter (named)")}}
            },
            "/v1/namespaces/{ns}/executions/{id}": {
                "get": {"summary": "One execution record: status, attempts, result and logs", "parameters": [ns, {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "The Execution"}, "400": err_response("Malformed id"), "404": err_response("Not found")}}
            },
            "/v1/events": events(json!([])),
            "/v1/namespaces/{ns}/events": events(json!([ns])),
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness: etcd and (when configured) the broker", "security": [], "responses": {"200": {"description": "`{\"etcd\": \"ok\", \"broker\": \"ok\"}`"}, "503": {"description": "the same object, naming the error of what is not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3"}}}},
        }
    })
}

/// The invoke parameters plus the headers of asynchronous invocation.
fn with_async_headers(params: Value) -> Value {
    let mut v = params.as_array().cloned().unwrap_or_default();
    for (name, desc) in [
        ("Prefer", "`respond-async` queues the invocation (RFC 7240)"),
        ("X-Lambda-Invocation-Type", "`Event` queues the invocation"),
        (
            "X-Callback-Url",
            "With async: receives the result when the execution ends",
        ),
        (
            "X-Lambda-Invocation-Id",
            "Idempotency: the same id twice is the same execution",
        ),
    ] {
        v.push(json!({"name": name, "in": "header", "required": false, "schema": {"type": "string"}, "description": desc}));
    }
    Value::Array(v)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained HTML reference of the document.
pub fn html(doc: &Value) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lambda on OpenStack API</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}code,pre{background:#f4f4f4}h3 code{font-size:1.1em}.m{display:inline-block;min-width:4em;font-weight:bold}</style></head><body>",
    );
    out.push_str(&format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>",
        esc(doc["info"]["title"].as_str().unwrap_or_default()),
        esc(doc["info"]["description"].as_str().unwrap_or_default())
    ));
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            let Some(ops) = ops.as_object() else { continue };
            for (method, op) in ops {
                out.push_str(&format!(
                    "<h3><span class=\"m\">{}</span> <code>{}</code></h3><p>{}</p>",
                    method.to_uppercase(),
                    esc(path),
                    esc(op["summary"].as_str().unwrap_or_default())
                ));
                if let Some(d) = op["description"].as_str() {
                    out.push_str(&format!("<p>{}</p>", esc(d)));
                }
                if let Some(rs) = op["responses"].as_object() {
                    out.push_str("<ul>");
                    for (code, r) in rs {
                        out.push_str(&format!(
                            "<li><b>{}</b> {}</li>",
                            esc(code),
                            esc(r["description"].as_str().unwrap_or_default())
                        ));
                    }
                    out.push_str("</ul>");
                }
            }
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r);
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_against_the_document_root() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(
            all.iter().any(|r| r.contains("ConditionStatus")),
            "the Function schema's own definitions are referenced: {all:?}"
        );
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external reference {r}"));
            assert!(doc.pointer(pointer).is_some(), "unresolvable $ref {r}");
        }
        assert!(
            doc["components"]["schemas"]["Function"]
                .get("$defs")
                .is_none()
        );
    }
}
