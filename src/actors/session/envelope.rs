//! The command envelope of a WebSocket text frame:
//! `{"cmd", "ack"?, "idempotency_key"?, ...the REST body's fields}`, and what
//! the session does with it. `ping`, `refresh`, `watch` and `unwatch` are the socket's own; every
//! other `cmd` is a service command, typed only after the rate check, so that
//! a flood of bad frames still counts against the sender.

use serde_json::{Map, Value};

use crate::domain::IdempotencyKey;
use crate::domain::names::CommandKind;
use crate::error::{Error, Result};
use crate::protocol::bodies::{self, RefreshBody, WatchBody};
use crate::service::command::Command;

/// What one frame asks for.
pub enum Request {
    Ping,
    Refresh(Result<RefreshBody>),
    Watch(Result<WatchBody>),
    Unwatch(Result<WatchBody>),
    Call(Call),
}

/// A service command not yet typed.
pub struct Call {
    pub name: String,
    fields: Map<String, Value>,
}

/// Reads a frame: its `ack` (echoed in the reply, null when absent or the
/// frame is not an object) and what it asks for.
pub fn parse(text: &str) -> (Value, Result<Request>) {
    let mut fields = match bodies::command_fields(text) {
        Ok(m) => m,
        Err(e) => return (Value::Null, Err(e)),
    };
    let ack = fields.remove("ack").unwrap_or(Value::Null);
    let name = match fields.remove("cmd") {
        Some(Value::String(s)) => s,
        _ => return (ack, Err(Error::BadRequest("a command needs a string \"cmd\"".into()))),
    };
    let request = match CommandKind::parse(&name) {
        Some(CommandKind::Ping) => Request::Ping,
        Some(CommandKind::Refresh) => Request::Refresh(
            serde_json::from_value(Value::Object(fields)).map_err(|_| Error::BadRequest("refresh takes {\"token\": \"<JWT>\"}".into())),
        ),
        Some(kind @ (CommandKind::Watch | CommandKind::Unwatch)) => {
            let body = serde_json::from_value(Value::Object(fields)).map_err(|_| Error::BadRequest(format!("{name} takes {{\"user_ids\": [\"<user id>\", ...]}}")));
            if kind == CommandKind::Watch { Request::Watch(body) } else { Request::Unwatch(body) }
        }
        _ => Request::Call(Call { name, fields }),
    };
    (ack, Ok(request))
}

impl Call {
    /// The typed command and its idempotency key.
    pub fn typed(mut self) -> Result<(Option<IdempotencyKey>, Command)> {
        let key = match self.fields.remove("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(IdempotencyKey::parse(&k)?),
            Some(_) => return Err(Error::BadRequest("idempotency_key is a string".into())),
        };
        Ok((key, bodies::command(&self.name, Value::Object(self.fields))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_is_kept_whatever_fails_after_it() {
        let (ack, r) = parse(r#"{"ack": 7, "cmd": 3}"#);
        assert_eq!(ack, 7);
        assert!(r.is_err());
        let (ack, r) = parse(r#"{"cmd": "ping", "ack": "a"}"#);
        assert_eq!(ack, "a");
        assert!(matches!(r, Ok(Request::Ping)));
    }

    #[test]
    fn a_call_is_typed_with_its_key() {
        let (_, r) = parse(r#"{"cmd": "cameraOff", "idempotency_key": "k1"}"#);
        let Ok(Request::Call(call)) = r else { panic!("a call") };
        let (key, cmd) = call.typed().unwrap();
        assert_eq!(key.unwrap().as_str(), "k1");
        assert!(matches!(cmd, Command::CameraOff));
        let (_, r) = parse(r#"{"cmd": "cameraOff", "idempotency_key": 1}"#);
        let Ok(Request::Call(call)) = r else { panic!("a call") };
        assert!(call.typed().is_err());
    }
}
