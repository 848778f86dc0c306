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

/// The Error body every error of the gateway has (and nothing else: a test fuzzes the
/// gateway against it).
fn error_schema() -> Value {
    json!({"type": "object", "required": ["error"], "additionalProperties": false, "properties": {
        "error": {"type": "object", "required": ["code", "reason", "message"], "additionalProperties": false, "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status"},
            "reason": {"type": "string", "pattern": "^[A-Z][A-Za-z]*$", "description": "CamelCase, stable: what to act on"},
            "message": {"type": "string", "minLength": 1, "description": "For people: names the field, the permission or the limit"},
            "details": {"type": "array", "description": "`Invalid`: one `{field, message}` per invalid field; `Forbidden`: `{permission, namespace}`",
                "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"},
                    "permission": {"type": "string"}, "namespace": {"type": ["string", "null"]}}}}}}}})
}

/// The execution record (`GET …/executions/{id}`).
fn execution_schema() -> Value {
    json!({"type": "object", "required": ["id", "namespace", "function", "status", "createdAt"], "properties": {
        "id": {"type": "string"}, "namespace": {"type": "string"}, "function": {"type": "string"},
        "trigger": {}, "event": {"type": "object"},
        "status": {"type": "string", "enum": ["Queued", "Running", "Retrying", "Succeeded", "Failed", "DeadLettered"]},
        "reason": {"type": "string"}, "createdAt": {"type": "string"}, "finishedAt": {"type": "string"},
        "attempts": {"type": "array", "items": {"type": "object"}},
        "result": {"type": "string", "description": "The result's JSON text (cut at 32 KiB)"},
        "resultTruncated": {"type": "boolean"}, "logs": {"type": "string"}, "duplicates": {"type": "integer"}}})
}

fn list_schema(kind: &str, item: &str) -> Value {
    json!({"type": "object", "required": ["apiVersion", "kind", "items"], "properties": {
        "apiVersion": {"type": "string"}, "kind": {"const": kind},
        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "continue": {"type": "string", "description": "Absent on the last page"}}})
}

fn ok_json(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// Responses every operation behind authentication can give, added where an operation does
/// not describe them itself: the auth middleware's, the body reader's, the store's.
fn add_common_responses(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for (path, ops) in paths.iter_mut() {
        let Some(ops) = ops.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let secured = op.get("security").is_none();
            let has_body = op.get("requestBody").is_some();
            let api = path.starts_with("/v1/");
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |code: &str, desc: &str| {
                responses.entry(code).or_insert_with(|| err_response(desc));
            };
            if api {
                add("400", "A path parameter or query the gateway cannot decode");
            }
            if secured {
                add("401", "Missing or invalid bearer token");
                add(
                    "403",
                    "The API key lacks the permission in this namespace (the message names it, `details` too)",
                );
            }
            if has_body {
                add(
                    "408",
                    "The request body did not arrive within the gateway's body timeout",
                );
                add("413", "The request body exceeds the limit");
            }
            if api {
                add("503", "etcd (or the broker) is unavailable");
            }
        }
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let function_schema = component(schema(Kind::Function), &mut schemas);
    schemas.insert("Function".into(), function_schema);
    schemas.insert("Error".into(), error_schema());
    schemas.insert(
        "FunctionError".into(),
        json!({"type": "object", "required": ["errorType", "errorMessage"], "properties": {"errorType": {"type": "string"}, "errorMessage": {"type": "string"}, "stackTrace": {"type": "array", "items": {"type": "string"}}}}),
    );
    schemas.insert("Execution".into(), execution_schema());
    schemas.insert(
        "FunctionList".into(),
        list_schema("FunctionList", "Function"),
    );
    schemas.insert(
        "ExecutionList".into(),
        list_schema("ExecutionList", "Execution"),
    );
    schemas.insert(
        "Accepted".into(),
        json!({"type": "object", "required": ["executionId", "status", "location"], "properties": {
            "executionId": {"type": "string"}, "status": {"type": "string"}, "location": {"type": "string"}}}),
    );
    // What an invocation's error can be: the gateway's own, or the function's (the agent's,
    // passed through).
    let gateway_or_function = |desc: &str| {
        json!({"description": desc, "content": {"application/json": {"schema": {"anyOf": [
            {"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/FunctionError"}]}}}})
    };
    let ns = json!({"name": "ns", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Namespace"});
    let name = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Function name"});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Execution id"});
    let function_ref = json!({"$ref": "#/components/schemas/Function"});
    // Where a created function and an accepted execution can be read back (client generators
    // and stateful fuzzers follow these).
    let function_links = json!({
        "GetFunction": {"operationId": "getFunction", "parameters": {"ns": "$request.path.ns", "name": "$response.body#/metadata/name"}},
        "ReplaceFunction": {"operationId": "replaceFunction", "parameters": {"ns": "$request.path.ns", "name": "$response.body#/metadata/name"}},
        "DeleteFunction": {"operationId": "deleteFunction", "parameters": {"ns": "$request.path.ns", "name": "$response.body#/metadata/name"}},
        "InvokeFunction": {"operationId": "invokeFunction", "parameters": {"ns": "$request.path.ns", "name": "$response.body#/metadata/name"}},
    });
    let invoke = |op_id: &str, params: Value| {
        let mut accepted = json!({"description": "Queued (asynchronous)", "headers": {
                "Location": {"schema": {"type": "string"}}, "X-Lambda-Execution-Id": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}});
        if op_id == "invokeFunction" {
            accepted["links"] = json!({"GetExecution": {"operationId": "getExecution",
                "parameters": {"ns": "$request.path.ns", "id": "$response.body#/executionId"}}});
        }
        json!({"post": {
        "operationId": op_id,
        "summary": "Invoke a function (synchronously, or queued with Prefer: respond-async)",
        "description": "The request body is the event (JSON); the response body is the function's result. One timeout, the function's, governs the whole call. With `Prefer: respond-async` (or `X-Lambda-Invocation-Type: Event`) the invocation is queued on the broker instead: 202 once the broker confirmed it, with the execution id and its Location; `X-Callback-Url` receives the result when it ends. Needs `functions:invoke` in the namespace.",
        "parameters": with_async_headers(params),
        "requestBody": {"required": true, "content": {"application/json": {"schema": {}}}},
        "responses": {
            "200": {"description": "The function's result", "headers": {
                "X-Lambda-Invocation-Id": {"schema": {"type": "string"}},
                "X-Lambda-Duration-Ms": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {}}}},
            "202": accepted,
            "400": gateway_or_function("The event or a header is malformed, or the function rejected the event"),
            "404": err_response("Unknown function, or one without an http trigger"),
            "413": gateway_or_function("The event exceeds the function's maxPayloadBytes"),
            "429": err_response("Over the function's concurrency (see Retry-After)"),
            "502": gateway_or_function("The function raised an error (FunctionError), or no replica could be reached"),
            "503": err_response("No ready replica, too many held requests, or the broker (async) is unavailable"),
            "504": gateway_or_function("The function exceeded its timeout"),
        }}})
    };
    let events = |op_id: &str, params: Value| {
        json!({"post": {
        "operationId": op_id,
        "summary": "Publish an event to lambda.events",
        "description": "One CloudEvent in binary mode (`ce-*` headers, the body is its data) or structured mode (`application/cloudevents+json`), or the original system's `{event_source, user_name, event_data}` message. The namespaced form addresses the event to that namespace's functions. Needs `events:publish` in the event's namespace.",
        "parameters": params,
        "requestBody": {"required": true, "content": {"application/cloudevents+json": {"schema": {}}, "application/json": {"schema": {}}}},
        "responses": {
            "202": {"description": "Published and confirmed by the broker: `{id}`", "content": {"application/json": {"schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}}},
            "400": err_response("Not an event (the error names the attribute)"),
            "503": err_response("The broker did not take it, or none is configured"),
        }}})
    };
    let watch = |op_id: &str, params: Value| {
        let mut p = params.as_array().cloned().unwrap_or_default();
        p.push(json!({"name": "kind", "in": "query", "required": true, "schema": {"type": "string", "enum": Kind::ALL.map(Kind::name)}, "description": "The kind (plural and short forms are accepted too)"}));
        p.push(json!({"name": "resourceVersion", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}, "description": "Resume after this revision (the id of the last event received) without a list"}));
        p.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}, "description": "As resourceVersion (what EventSource sends on reconnect)"}));
        json!({"get": {
        "operationId": op_id,
        "summary": "Watch a kind's objects: Server-Sent Events of whole objects (spec and status)",
        "description": "Events: `RESET` (forget what you hold; a full list follows), `ADDED`/`MODIFIED`/`DELETED` `{type, object}`, `SYNCED` `{type, resourceVersion}` (the list is complete), `BOOKMARK` `{type, resourceVersion}` (nothing changed up to it), `ERROR` `{type, key, message}` (an unreadable stored value). An event's `id` is a revision up to which everything was sent: resume with `resourceVersion=ID`. A compacted resourceVersion starts over with `RESET`. Without the namespace segment: every namespace.",
        "parameters": p,
        "responses": {
            // On OpenAPI 3.1 a text/event-stream schema describes one event, as parsed from
            // the stream (what schemathesis checks each event against).
            "200": {"description": "`text/event-stream`", "content": {"text/event-stream": {"schema": {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"type": "string", "enum": ["RESET", "ADDED", "MODIFIED", "DELETED", "SYNCED", "BOOKMARK", "ERROR"]},
                    "data": {"type": "string", "contentMediaType": "application/json", "description": "The event as JSON: `{type, object}`, `{type, resourceVersion}` or `{type, key, message}`"},
                    "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The revision up to which everything was sent"},
                    "retry": {"type": "integer"}
                }
            }}}},
            "400": err_response("Missing or unknown kind, a bad or future resourceVersion, an unknown parameter (named)"),
            "401": err_response("Missing or invalid bearer token"),
            "403": err_response("The key may not watch this kind here"),
            "503": err_response("etcd unreachable, or too many watches (Retry-After)"),
        }}})
    };
    let execution_get = |op_id: &str, params: Value| {
        json!({"get": {"operationId": op_id, "summary": "One execution record: status, attempts, result and logs (needs `executions:read`)", "parameters": params,
            "responses": {"200": ok_json("The Execution", "Execution"), "400": err_response("Malformed id"), "404": err_response("Not found"),
                          "500": err_response("The stored record cannot be decoded (named)")}}})
    };
    let mut paths = json!({
        "/v1/functions/{name}/invoke": invoke("invokeDefaultFunction", json!([name])),
        "/v1/namespaces/{ns}/functions/{name}/invoke": invoke("invokeFunction", json!([ns, name])),
        "/v1/namespaces/{ns}/functions": {
            "get": {"operationId": "listFunctions", "summary": "List functions (needs `functions:read`)", "parameters": [ns],
                    "responses": {"200": ok_json("The namespace's functions", "FunctionList")}},
            "post": {"operationId": "createFunction", "summary": "Create a function (needs `functions:write`)", "parameters": [ns],
                     "requestBody": {"required": true, "content": {"application/json": {"schema": function_ref}}},
                     "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": function_ref}}, "links": function_links},
                                   "400": err_response("Malformed JSON or an invalid Function (details name the fields)"),
                                   "409": err_response("Already exists")}}
        },
        "/v1/namespaces/{ns}/functions/{name}": {
            "get": {"operationId": "getFunction", "summary": "Get a function with its status (needs `functions:read`)", "parameters": [ns, name],
                    "responses": {"200": {"description": "The Function", "content": {"application/json": {"schema": function_ref}}}, "404": err_response("Not found")}},
            "put": {"operationId": "replaceFunction", "summary": "Create or replace a function's spec, labels and annotations (needs `functions:write`)", "parameters": [ns, name],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": function_ref}}},
                    "responses": {"200": {"description": "Replaced", "content": {"application/json": {"schema": function_ref}}},
                                  "201": {"description": "Created", "content": {"application/json": {"schema": function_ref}}},
                                  "400": err_response("Malformed JSON or an invalid Function (details name the fields)"),
                                  "409": err_response("Being deleted, or it kept changing")}},
            "delete": {"operationId": "deleteFunction", "summary": "Delete a function (needs `functions:write`)", "parameters": [ns, name],
                       "responses": {"200": {"description": "Deleted", "content": {"application/json": {"schema": {"type": "object"}}}},
                                     "202": {"description": "Deletion started (finalizers run)", "content": {"application/json": {"schema": function_ref}}},
                                     "404": err_response("Not found")}}
        },
        "/v1/namespaces/{ns}/functions/{name}/executions": {
            "get": {"operationId": "listExecutions", "summary": "A function's execution records, newest first (needs `executions:read`)", "parameters": [ns, name,
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["Queued", "Running", "Retrying", "Succeeded", "Failed", "DeadLettered"]}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                {"name": "continue", "in": "query", "schema": {"type": "string"}, "description": "The `continue` of the previous page"}],
                    "responses": {"200": ok_json("ExecutionList (`continue` absent on the last page)", "ExecutionList"), "400": err_response("A bad or unknown query parameter (named)")}}
        },
        "/v1/namespaces/{ns}/executions/{id}": execution_get("getExecution", json!([ns, id])),
        "/v1/executions/{id}": execution_get("getDefaultExecution", json!([id])),
        "/v1/namespaces/{ns}/functions/{name}/history": {"get": {"operationId": "getFunctionHistory",
            "summary": "A function's calls through this gateway over the last hour, for the console's charts (needs `functions:read`)",
            "description": "10-second buckets that had calls, oldest first: `start` (unix s), `codes` (calls by HTTP status, `other` for the rest), `count`, `p50Ms`, `p99Ms` (from a histogram whose bins double: within a factor of 2). `since` is when this gateway started keeping history; each gateway keeps what it served.",
            "parameters": [ns, name],
            "responses": {"200": {"description": "`{namespace, name, bucketSeconds, windowSeconds, now, since, buckets}`", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "404": err_response("Unknown function, or beyond the functions this gateway keeps history for (NoHistory)")}}},
        "/v1/namespaces/{ns}/nodepools/{name}/history": {"get": {"operationId": "getNodePoolHistory",
            "summary": "A node pool's node counts and the autoscaler's decisions over the last hour (needs `nodepools:read`)",
            "description": "`samples`: the counts at every change (`time`, `specReplicas`, `replicas`, `readyReplicas`, `desiredReplicas`), the first giving the counts at the window's start; `marks`: `{time, source: Autoscaler|Spec, decision, reason}`.",
            "parameters": [ns, {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "NodePool name"}],
            "responses": {"200": {"description": "`{namespace, name, windowSeconds, now, since, samples, marks}`", "content": {"application/json": {"schema": {"type": "object"}}}},
                          "404": err_response("Unknown node pool")}}},
        "/v1/watch": watch("watchAll", json!([])),
        "/v1/namespaces/{ns}/watch": watch("watchNamespace", json!([ns])),
        "/console/": {"get": {"operationId": "console", "summary": "The web console (HTML; sign in with an API key)", "security": [], "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/console/{path}": {"get": {"operationId": "consoleFile", "summary": "A file of the web console", "security": [],
            "parameters": [{"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "HTML, CSS, JavaScript or SVG", "content": {"text/html": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}, "text/javascript": {"schema": {"type": "string"}}, "image/svg+xml": {"schema": {"type": "string"}}}},
                          "404": err_response("No such file")}}},
        "/v1/events": events("publishEvent", json!([])),
        "/v1/namespaces/{ns}/events": events("publishNamespaceEvent", json!([ns])),
        "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness", "security": [], "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness: etcd and (when configured) the broker", "security": [], "responses": {
            "200": {"description": "`{\"etcd\": \"ok\", \"broker\": \"ok\"}`", "content": {"application/json": {"schema": {"type": "object"}}}},
            "503": {"description": "the same object, naming the error of what is not ready", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "OpenMetrics text exposition", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/docs": {"get": {"operationId": "docs", "summary": "This document as an HTML page", "security": [], "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    });
    add_common_responses(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Lambda on OpenStack gateway", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Invoke functions and manage them over REST. Authenticate with `Authorization: Bearer <API key>` (create one with `lambda apikey create NAME --namespace NS --role invoker|developer|admin`). Each operation names the permission it needs; a key without it gets 403 naming it. Every error body is an `Error`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
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

    #[test]
    fn every_operation_is_named_and_documents_its_errors() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
                let responses = op["responses"].as_object().expect("responses");
                if op.get("security").is_none() {
                    for code in ["401", "403"] {
                        assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                    }
                }
                if op.get("requestBody").is_some() {
                    for code in ["408", "413"] {
                        assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                    }
                }
                for (code, r) in responses {
                    if code.starts_with('4') || code.starts_with('5') {
                        let schema = r["content"]["application/json"]["schema"].to_string();
                        assert!(
                            schema.contains("#/components/schemas/Error") || path == "/readyz",
                            "{method} {path} {code}: {schema}"
                        );
                    }
                }
            }
        }
    }
}
