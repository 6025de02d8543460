//! The WebSocket protocol as data: every event and every command with its
//! schema. It feeds the OpenAPI components (so SDKs get the types) and the
//! AsyncAPI 3 document, so the two cannot drift apart.

use serde_json::{Map, Value, json};
use utoipa::openapi::{OpenApi, RefOr, Schema};

use crate::domain::names::{COMMANDS, CommandSpec, EVENTS, EventSpec};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A schema of any JSON value (`"type": null` is how utoipa reads "no type").
fn any(description: &str) -> Value {
    json!({"type": null, "description": description})
}

fn event_schema_name(e: &EventSpec) -> String {
    format!("{}Event", pascal(e.name))
}

fn command_schema_name(c: &CommandSpec) -> String {
    format!("{}Command", pascal(c.name))
}

fn pascal(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut cs = w.chars();
            cs.next().map(|c| c.to_uppercase().chain(cs).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

/// The schemas the protocol adds to `components.schemas`, by name.
fn schemas() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in EVENTS {
        let mut props = Map::new();
        props.insert("action".into(), json!({"type": "string", "enum": [format!("server-action:{}", e.name)]}));
        let mut required = vec!["action", "data"];
        if e.logged {
            props.insert("id".into(), json!({"type": "string", "description": "This event's place in the user's log: pass it as `since` to resume after it.", "example": "1732212000123-0"}));
            required.push("id");
        }
        props.insert("data".into(), schema_ref(e.data));
        out.push((event_schema_name(e), json!({"type": "object", "description": e.doc, "required": required, "properties": props})));
    }
    let mapping: Map<String, Value> =
        EVENTS.iter().map(|e| (format!("server-action:{}", e.name), json!(format!("#/components/schemas/{}", event_schema_name(e))))).collect();
    out.push((
        "Event".into(),
        json!({
            "description": "Everything the server pushes on `/ws` (and `GET /webrtc/events` returns): `{\"action\": \"server-action:<name>\", \"id\"?, \"data\"}`.",
            "oneOf": EVENTS.iter().map(|e| schema_ref(&event_schema_name(e))).collect::<Vec<_>>(),
            "discriminator": {"propertyName": "action", "mapping": mapping},
        }),
    ));
    for c in COMMANDS {
        let frame = json!({
            "type": "object",
            "required": ["cmd"],
            "properties": {
                "cmd": {"type": "string", "enum": [c.name]},
                "ack": any("Any JSON value; echoed in the reply so the client can match it."),
                "idempotency_key": {"type": "string", "description": "As the `Idempotency-Key` header."},
            },
        });
        let schema = match c.body {
            Some(body) => json!({"description": c.doc, "allOf": [schema_ref(body), frame]}),
            None => {
                let mut f = frame;
                f["description"] = json!(c.doc);
                f
            }
        };
        out.push((command_schema_name(c), schema));
    }
    out.push((
        "Command".into(),
        json!({
            "description": "A text frame a client sends on `/ws`: `{\"cmd\", \"ack\"?, ...the REST body's fields}`.",
            "oneOf": COMMANDS.iter().map(|c| schema_ref(&command_schema_name(c))).collect::<Vec<_>>(),
        }),
    ));
    out.push((
        "CommandAck".into(),
        json!({
            "type": "object",
            "description": "The reply to a command that succeeded; `result` is the REST reply body (`{}` for ping).",
            "required": ["cmd", "action", "result"],
            "properties": {
                "cmd": {"type": "string", "enum": ["ack"]},
                "ack": any("The command's `ack`, as given (null when absent)."),
                "action": {"type": "string", "enum": COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>()},
                "result": {"type": "object"},
            },
        }),
    ));
    out.push((
        "CommandError".into(),
        json!({
            "type": "object",
            "description": "The reply to a command that failed, with the REST error's code; the session stays open.",
            "required": ["cmd", "error"],
            "properties": {
                "cmd": {"type": "string", "enum": ["error"]},
                "ack": any("The command's `ack`, as given (null when absent)."),
                "error": schema_ref("ErrorBody"),
            },
        }),
    ));
    out
}

/// Adds the protocol's schemas to an OpenAPI document.
pub struct WsSchemas;

impl utoipa::Modify for WsSchemas {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        for (name, schema) in schemas() {
            let schema: RefOr<Schema> = serde_json::from_value(schema.clone()).unwrap_or_else(|e| panic!("{name}: {e}: {schema}"));
            components.schemas.insert(name, schema);
        }
    }
}

/// Every `$ref` name reachable from `roots` within `all`.
fn reachable(all: &Map<String, Value>, roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref")
                    && let Some(name) = r.strip_prefix("#/components/schemas/")
                {
                    out.push(name.to_owned());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo: Vec<String> = roots.into_iter().collect();
    let mut seen = Map::new();
    while let Some(name) = todo.pop() {
        if seen.contains_key(&name) {
            continue;
        }
        let Some(s) = all.get(&name) else { continue };
        refs(s, &mut todo);
        seen.insert(name, s.clone());
    }
    seen
}

/// JSON Schema (AsyncAPI's dialect) ignores siblings of `$ref`: a
/// description beside one, inside a `oneOf`, moves up to the `oneOf` itself.
fn lift_ref_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let mut lifted = None;
            if let Some(Value::Array(alts)) = m.get_mut("oneOf") {
                for alt in alts.iter_mut().filter_map(Value::as_object_mut).filter(|a| a.contains_key("$ref")) {
                    lifted = lifted.or(alt.remove("description"));
                }
            }
            if let Some(d) = lifted {
                m.entry("description").or_insert(d);
            }
            m.values_mut().for_each(lift_ref_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(lift_ref_descriptions),
        _ => {}
    }
}

/// The AsyncAPI 3 document of `/ws`, with the schemas taken from `openapi`.
pub fn asyncapi(openapi: &OpenApi) -> Value {
    let api = serde_json::to_value(openapi).expect("the spec serializes");
    let all = api["components"]["schemas"].as_object().cloned().unwrap_or_default();
    let roots = EVENTS
        .iter()
        .map(event_schema_name)
        .chain(COMMANDS.iter().map(command_schema_name))
        .chain(["CommandAck".into(), "CommandError".into()]);
    let mut schemas = reachable(&all, roots);
    schemas.values_mut().for_each(lift_ref_descriptions);

    let mut messages = Map::new();
    for e in EVENTS {
        messages.insert(
            e.name.into(),
            json!({"name": format!("server-action:{}", e.name), "title": e.name, "summary": e.doc, "payload": schema_ref(&event_schema_name(e))}),
        );
    }
    for c in COMMANDS {
        let mut summary = c.doc.to_owned();
        if let Some(r) = c.reply {
            summary.push_str(&format!(" The ack's `result` is a {r}."));
        }
        messages.insert(
            format!("{}Command", c.name),
            json!({"name": c.name, "title": format!("{} command", c.name), "summary": summary, "payload": schema_ref(&command_schema_name(c))}),
        );
    }
    messages.insert("ack".into(), json!({"name": "ack", "title": "Command ack", "summary": "A command succeeded.", "payload": schema_ref("CommandAck")}));
    messages.insert("error".into(), json!({"name": "error", "title": "Command error", "summary": "A command failed.", "payload": schema_ref("CommandError")}));

    let channel_msgs: Map<String, Value> =
        messages.keys().map(|k| (k.clone(), json!({"$ref": format!("#/components/messages/{k}")}))).collect();
    let msg_refs = |names: Vec<String>| names.into_iter().map(|n| json!({"$ref": format!("#/channels/session/messages/{n}")})).collect::<Vec<_>>();
    let events = msg_refs(EVENTS.iter().map(|e| e.name.to_owned()).collect());
    let commands = msg_refs(COMMANDS.iter().map(|c| format!("{}Command", c.name)).collect());

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "camsig WebSocket",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One WebSocket per device. The server pushes a user's events as JSON text frames; the client may send the REST commands as text frames too. Events addressed to a user carry an `id` from the user's log: reopen with `?since=<id>` on any node to get what was missed, in order, then live events.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:8080",
                "protocol": "ws",
                "description": "A node started with `cargo run`.",
                "security": [{"$ref": "#/components/securitySchemes/bearer"}, {"$ref": "#/components/securitySchemes/token"}],
            }
        },
        "channels": {
            "session": {
                "address": "/ws",
                "title": "A user's session",
                "description": "Opened with `GET /ws`; refused with 401 before the upgrade when the token is bad. The server pings every `heartbeat_s`; a session silent for three times that is closed (1001).",
                "messages": channel_msgs,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {"type": "string", "description": "The JWT, for clients that cannot set `Authorization`."},
                                "since": {"type": "string", "description": "Replay the user's events after this id first."},
                                "presence": {"type": "string", "enum": ["all", "watched", "none", "true", "false", "1", "0"], "default": "all", "description": "Which `update_user` events: `all` (everyone's; `true`, `1`), `watched` (only the users this session `watch`es), `none` (`false`, `0`). With `presence.broadcast = \"watched\"`, `all` acts as `watched`."},
                            },
                        },
                        "bindingVersion": "0.1.0",
                    }
                },
            }
        },
        "operations": {
            "receiveEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/session"},
                "summary": "Events the server pushes.",
                "messages": events,
            },
            "sendCommand": {
                "action": "send",
                "channel": {"$ref": "#/channels/session"},
                "summary": "Commands a client sends; each is answered by an ack or an error.",
                "messages": commands,
                "reply": {"channel": {"$ref": "#/channels/session"}, "messages": msg_refs(vec!["ack".into(), "error".into()])},
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "`Authorization: Bearer <jwt>` on the upgrade request."},
                "token": {"type": "httpApiKey", "name": "token", "in": "query", "description": "`?token=<jwt>`, for browsers."},
            },
        },
    })
}
