//! The OpenAPI 3 document of the HTTP/JSON API, written at build time from
//! the proto's descriptors and their `google.api.http` rules. `build.rs`
//! includes this file (it is not a module of the crate); the server serves
//! the result at `GET /v1/openapi.json` and `docs/openapi.json` is a copy
//! that a test keeps equal to it.
//!
//! It owns the mapping of proto3 canonical JSON to JSON Schema (camelCase
//! names, enums by name, 64-bit integers as strings, unknown fields
//! refused). Every RPC path comes from a rule; the only paths it adds by
//! hand are the three that are not RPCs (`/healthz`, `/readyz` and the
//! document itself).

use std::collections::BTreeMap;

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor,
};
use serde_json::{json, Map, Value};

/// A method's `google.api.http` rule: verb, path template, body.
struct Rule {
    verb: &'static str,
    path: String,
    body: String,
}

/// The document for `service` (e.g. `tokenvault.v1.TokenVault`).
pub fn document(pool: &DescriptorPool, service: &str, version: &str) -> Result<Value, String> {
    let service = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("no service {service} in the descriptors"))?;
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google/api/annotations.proto is not in the descriptors")?;
    let mut schemas = BTreeMap::new();
    let mut paths = Map::new();
    for method in service.methods() {
        let rule = http_rule(&method, &http)?;
        let operation = operation(&method, &rule, &mut schemas);
        let item = paths.entry(rule.path.clone()).or_insert_with(|| json!({}));
        item[rule.verb] = operation;
    }
    add_probe_paths(&mut paths);
    schemas.insert("Status".into(), status_schema());
    Ok(json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tokenvault HTTP/JSON API",
            "version": version,
            "description": "Generated from proto/tokenvault/v1/tokenvault.proto: every RPC by its google.api.http rule, bodies in proto3 canonical JSON. docs/http.md shows each call.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API key of a [[principals]] entry." },
            },
        },
        "security": [{ "bearer": [] }],
    }))
}

fn http_rule(method: &MethodDescriptor, http: &ExtensionDescriptor) -> Result<Rule, String> {
    let options = method.options();
    if !options.has_extension(http) {
        return Err(format!(
            "{} has no google.api.http rule",
            method.full_name()
        ));
    }
    let rule = options.get_extension(http);
    let rule = rule
        .as_message()
        .ok_or("google.api.http is not a message")?;
    let text = |name: &str| string_field(rule, name);
    let (verb, path) = [
        ("get", "get"),
        ("post", "post"),
        ("put", "put"),
        ("delete", "delete"),
        ("patch", "patch"),
    ]
    .into_iter()
    .find_map(|(field, verb)| text(field).map(|path| (verb, path)))
    .ok_or_else(|| format!("{}: a rule without a verb", method.full_name()))?;
    Ok(Rule {
        verb,
        path,
        body: text("body").unwrap_or_default(),
    })
}

fn string_field(message: &DynamicMessage, name: &str) -> Option<String> {
    if !message.has_field_by_name(name) {
        return None;
    }
    message
        .get_field_by_name(name)
        .and_then(|value| value.as_str().map(str::to_string))
}

/// The names between braces in a path template: `{subject_id}`.
fn path_fields(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

fn operation(
    method: &MethodDescriptor,
    rule: &Rule,
    schemas: &mut BTreeMap<String, Value>,
) -> Value {
    let input = method.input();
    let bound = path_fields(&rule.path);
    let mut parameters: Vec<Value> = bound
        .iter()
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect();
    let mut operation = json!({ "operationId": method.name(), "tags": ["TokenVault"] });
    if rule.body == "*" {
        let name = if bound.is_empty() {
            input.name().to_string()
        } else {
            format!("{}Body", input.name())
        };
        let schema = message_schema(&input, &bound, schemas);
        schemas.insert(name.clone(), schema);
        operation["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": reference(&name) } },
        });
    } else {
        add_message(&input, schemas);
        for field in input
            .fields()
            .filter(|f| !bound.contains(&f.name().to_string()))
        {
            parameters.push(json!({
                "name": field.name(), "in": "query", "schema": field_schema(&field, schemas),
            }));
        }
    }
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    let output = method.output();
    add_message(&output, schemas);
    let ok = if method.is_server_streaming() {
        json!({
            "description": "JSON lines: one {\"result\": …} per message; a last {\"error\": Status} if the stream fails after it started",
            "content": { "application/x-ndjson": { "schema": {
                "type": "object",
                "properties": { "result": reference(output.name()), "error": reference("Status") },
            } } },
        })
    } else {
        json!({
            "description": "OK",
            "content": { "application/json": { "schema": reference(output.name()) } },
        })
    };
    operation["responses"] = json!({ "200": ok, "default": error_response() });
    operation
}

fn error_response() -> Value {
    json!({
        "description": "A google.rpc.Status with the HTTP status of its gRPC code (400, 401, 403, 404, 409, 429, 500, 503)",
        "content": { "application/json": { "schema": reference("Status") } },
    })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Adds `message` (and every message it refers to) under its short name.
fn add_message(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) {
    if schemas.contains_key(message.name()) {
        return;
    }
    // A placeholder first: a message may refer to itself.
    schemas.insert(message.name().to_string(), Value::Null);
    let schema = message_schema(message, &[], schemas);
    schemas.insert(message.name().to_string(), schema);
}

fn message_schema(
    message: &MessageDescriptor,
    leave_out: &[String],
    schemas: &mut BTreeMap<String, Value>,
) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        if leave_out.contains(&field.name().to_string()) {
            continue;
        }
        properties.insert(field.json_name().to_string(), field_schema(&field, schemas));
    }
    json!({ "type": "object", "additionalProperties": false, "properties": properties })
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({ "type": "object" });
        };
        let value = entry.map_entry_value_field();
        return json!({ "type": "object", "additionalProperties": kind_schema(&value.kind(), schemas) });
    }
    let one = kind_schema(&field.kind(), schemas);
    if field.is_list() {
        json!({ "type": "array", "items": one })
    } else {
        one
    }
}

fn kind_schema(kind: &Kind, schemas: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": 4_294_967_295u32 })
        }
        // Canonical JSON writes 64-bit integers as strings (a JavaScript
        // number cannot hold them); either is accepted on input.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Message(message) => {
            add_message(message, schemas);
            reference(message.name())
        }
        Kind::Enum(enumeration) => {
            let names: Vec<String> = enumeration
                .values()
                .map(|value| value.name().to_string())
                .collect();
            json!({ "type": "string", "enum": names })
        }
    }
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "google.rpc.Status: the gRPC code (google/rpc/code.proto), a message that names the problem and never a value, and no details",
        "properties": {
            "code": { "type": "integer", "format": "int32" },
            "message": { "type": "string" },
            "details": { "type": "array", "items": { "type": "object" } },
        },
        "required": ["code", "message", "details"],
    })
}

/// The endpoints that are not RPCs: no credentials.
fn add_probe_paths(paths: &mut Map<String, Value>) {
    let text = |description: &str| json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } });
    let probe = |id: &str, ok: &str, not: Option<&str>| {
        let mut responses = json!({ "200": text(ok) });
        if let Some(not) = not {
            responses["503"] = text(not);
        }
        json!({ "get": { "operationId": id, "tags": ["Probes"], "security": [], "responses": responses } })
    };
    paths.insert(
        "/healthz".into(),
        probe("Healthz", "ok: the process serves", None),
    );
    paths.insert(
        "/readyz".into(),
        probe(
            "Readyz",
            "ok: the store, the key provider and the audit log are up",
            Some("not ready: which of them is down"),
        ),
    );
    paths.insert(
        "/v1/openapi.json".into(),
        json!({ "get": {
            "operationId": "OpenApi", "tags": ["Probes"], "security": [],
            "responses": { "200": { "description": "This document", "content": { "application/json": { "schema": { "type": "object" } } } } },
        } }),
    );
}
