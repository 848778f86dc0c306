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
    let watch = |params: Value| {
        let mut p = params.as_array().cloned().unwrap_or_default();
        p.push(json!({"name": "kind", "in": "query", "required": true, "schema": {"type": "string", "enum": Kind::ALL.map(Kind::name)}, "description": "The kind (plural and short forms are accepted too)"}));
        p.push(json!({"name": "resourceVersion", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}, "description": "Resume after this revision (the id of the last event received) without a list"}));
        p.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}, "description": "As resourceVersion (what EventSource sends on reconnect)"}));
        json!({"get": {
        "summary": "Watch a kind's objects: Server-Sent Events of whole objects (spec and status)",
        "description": "Events: `RESET` (forget what you hold; a full list follows), `ADDED`/`MODIFIED`/`DELETED` `{type, object}`, `SYNCED` `{type, resourceVersion}` (the list is complete), `BOOKMARK` `{type, resourceVersion}` (nothing changed up to it), `ERROR` `{type, key, message}` (an unreadable stored value). An event's `id` is a revision up to which everything was sent: resume with `resourceVersion=ID`. A compacted resourceVersion starts over with `RESET`. Without the namespace segment: every namespace.",
        "parameters": p,
        "responses": {
            "200": {"description": "`text/event-stream`", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": err_response("Missing or unknown kind, a bad or future resourceVersion, an unknown parameter (named)"),
            "401": err_response("Missing or invalid bearer token"),
            "403": err_response("The key may not watch this kind here"),
            "503": err_response("etcd unreachable, or too many watches (Retry-After)"),
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
            "/v1/namespaces/{ns}/functions/{name}/history": {
                "get": {"summary": "A function's calls through this gateway over the last hour (the console's charts)",
                        "description": "10-second buckets that had calls, oldest first: `start` (unix s), `codes` (calls by HTTP status, `other` for the rest), `count`, `p50Ms`, `p99Ms` (from a histogram whose bins double: within a factor of 2). `since` is when this gateway started keeping history; each gateway keeps what it served.",
                        "parameters": [ns, name],
                        "responses": {"200": {"description": "`{namespace, name, bucketSeconds, windowSeconds, now, since, buckets}`"},
                                      "404": err_response("Unknown function, or beyond the functions this gateway keeps history for (NoHistory)")}}
            },
            "/v1/namespaces/{ns}/nodepools/{name}/history": {
                "get": {"summary": "A node pool's node counts and the autoscaler's decisions over the last hour",
                        "description": "`samples`: the counts at every change (`time`, `specReplicas`, `replicas`, `readyReplicas`, `desiredReplicas`), the first giving the counts at the window's start; `marks`: `{time, source: Autoscaler|Spec, decision, reason}`.",
                        "parameters": [{"name": "ns", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Namespace"},
                                       {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "NodePool name"}],
                        "responses": {"200": {"description": "`{namespace, name, windowSeconds, now, since, samples, marks}`"},
                                      "404": err_response("Unknown node pool")}}
            },
            "/v1/watch": watch(json!([])),
            "/v1/namespaces/{ns}/watch": watch(json!([ns])),
            "/v1/events": events(json!([])),
            "/v1/namespaces/{ns}/events": events(json!([ns])),
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness: etcd and (when configured) the broker", "security": [], "responses": {"200": {"description": "`{\"etcd\": \"ok\", \"broker\": \"ok\"}`"}, "503": {"description": "the same object, naming the error of what is not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition"}}}},
            "/console/": {"get": {"summary": "The web console (HTML; sign in with an API key)", "security": [], "responses": {"200": {"description": "text/html"}}}},
            "/console/{path}": {"get": {"summary": "A file of the web console", "security": [],
                "parameters": [{"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "HTML, CSS, JavaScript or SVG"}, "404": {"description": "No such file"}}}},
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
