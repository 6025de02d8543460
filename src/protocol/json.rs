//! JSON as the contract reads it, over REST and the WebSocket alike: a key
//! repeated in any object is refused (serde_json would keep the last one), and
//! serde's errors are told in the contract's words, never Rust type names.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Value};
use std::fmt;

use crate::error::{Error, Result};

/// Longest error message made from serde's: it quotes what the client sent.
const MAX_MESSAGE_CHARS: usize = 300;

/// Parses one JSON document; a key repeated in any object is a 400.
pub fn parse(bytes: &[u8]) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| Error::BadRequest(message(&e)))
}

/// A REST body: one JSON object, then its fields as `T` wants them.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let value = parse(bytes)?;
    if !value.is_object() {
        return Err(Error::BadRequest("the body must be a JSON object".into()));
    }
    from_value(value)
}

/// Typed fields from parsed JSON, refused in plain words.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::BadRequest(message(&e)))
}

/// A serde_json error for a person: what is wrong in JSON terms ("a JSON
/// object", "an integer"), with serde's field-level words kept ("missing field
/// `owner`", "unknown variant `x`, expected `owner` or `abonent`").
pub fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON: {text}"),
        Category::Data => plain(&text),
    };
    cap(text)
}

/// Replaces the type serde expected ("struct CameraOnBody", "u16") by its JSON kind.
fn plain(text: &str) -> String {
    let typed = ["invalid type: ", "invalid value: ", "invalid length "].iter().any(|p| text.starts_with(p));
    // The last ", expected": what came before quotes the client's value.
    match text.rsplit_once(", expected ") {
        Some((got, want)) if typed => {
            let (want, at) = match want.find(" at line ") {
                Some(i) => want.split_at(i),
                None => (want, ""),
            };
            format!("{got}, expected {}{at}", json_kind(want))
        }
        _ => text.to_owned(),
    }
}

/// What serde's `expecting` says, in the words of JSON.
fn json_kind(want: &str) -> &str {
    if want.starts_with("struct ") || want.starts_with("map") || want == "a map" {
        return "a JSON object";
    }
    // serde_json's words for an enum read from a value that is not a string.
    if want.starts_with("enum ") || want == "string or map" {
        return "one of the allowed strings";
    }
    match want {
        "u8" => "an integer from 0 to 255",
        "u16" => "an integer from 0 to 65535",
        "u32" => "an integer from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a borrowed string" | "a string" => "a string",
        "a sequence" | "sequence" => "an array",
        "option" => "a value or null",
        "unit" => "null",
        "any valid JSON value" => "any JSON value",
        // Anything else is serde's own words ("a boolean"), or a type
        // description that must not reach the client.
        other if other.starts_with("a ") || other.starts_with("an ") => other,
        _ => "a value of another kind",
    }
}

fn cap(text: String) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// A `serde_json::Value` that errors on a key repeated in any object.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // JSON Schema's `integer` includes 124.0: a whole number is read as one.
        if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
            return Ok((n as i64).into());
        }
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{}`", key.escape_debug())));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(bytes: &str) -> String {
        match parse(bytes.as_bytes()) {
            Err(Error::BadRequest(m)) => m,
            other => panic!("{bytes}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert!(refused(r#"{"cmd":"ping","cmd":"cameraOn"}"#).starts_with("duplicate key `cmd`"));
        assert!(refused(r#"{"meta":{"a":1,"b":2,"a":3}}"#).starts_with("duplicate key `a`"));
        assert!(refused(r#"[1,{"x":[{"k":1,"k":1}]}]"#).starts_with("duplicate key `k`"));
        // An escaped key is the same key.
        assert!(refused(r#"{"a":1,"\u0061":2}"#).starts_with("duplicate key `a`"));
        assert!(refused("{\"a\":1,\"a\\n\":2,\"a\\n\":3}").starts_with("duplicate key `a\\n`"));
        // The same key in sibling objects is fine.
        let v = parse(br#"{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":1}]}"#).unwrap();
        assert_eq!(v, json!({"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 1}]}));
    }

    #[test]
    fn everything_else_reads_as_serde_json_does() {
        for text in ["null", "true", "-1", "18446744073709551615", "-9223372036854775808", "1.5e300", "\"\\ud83d\\ude00\"", "[]", "{}", r#"{"a":[1,{"b":null}],"c":"d"}"#, " [ 1 , 2 ] "] {
            assert_eq!(parse(text.as_bytes()).unwrap(), serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
        for bad in ["", "{", "[1,]", "{\"a\":1} x", "{a:1}", "nul", "1e400", &"[".repeat(200)] {
            assert!(refused(bad).starts_with("malformed JSON: "), "{bad}: {}", refused(bad));
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
        kind: crate::domain::Role,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        owner: String,
        inner: Option<Inner>,
        list: Option<Vec<u64>>,
        flag: Option<bool>,
    }

    fn said(v: Value) -> String {
        match from_value::<Outer>(v) {
            Err(Error::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn messages_name_json_kinds_not_rust_types() {
        let cases = [
            (json!("x"), r#"invalid type: string "x", expected a JSON object"#),
            (json!({}), "missing field `owner`"),
            (json!({"owner": 1}), "invalid type: integer `1`, expected a string"),
            (json!({"owner": "a", "foo": 1}), "unknown field `foo`, expected one of `owner`, `inner`, `list`, `flag`"),
            (json!({"owner": "a", "inner": 5}), "invalid type: integer `5`, expected a JSON object"),
            (json!({"owner": "a", "inner": {"port": 70000, "kind": "owner"}}), "invalid value: integer `70000`, expected an integer from 0 to 65535"),
            (json!({"owner": "a", "inner": {"port": -1, "kind": "owner"}}), "invalid value: integer `-1`, expected an integer from 0 to 65535"),
            (json!({"owner": "a", "inner": {"port": 1, "kind": "nobody"}}), "unknown variant `nobody`, expected `owner` or `abonent`"),
            (json!({"owner": "a", "inner": {"port": 1, "kind": 3}}), "invalid type: integer `3`, expected one of the allowed strings"),
            (json!({"owner": "a", "list": {"a": 1}}), "invalid type: map, expected an array"),
            (json!({"owner": "a", "list": [-1]}), "invalid value: integer `-1`, expected a non-negative integer"),
            (json!({"owner": "a", "flag": "yes"}), r#"invalid type: string "yes", expected a boolean"#),
        ];
        for (v, want) in cases {
            assert_eq!(said(v.clone()), want, "{v}");
        }
        let long = said(json!({"owner": "a", "flag": "y".repeat(10_000)}));
        assert!(long.chars().count() <= MAX_MESSAGE_CHARS + 1 && long.ends_with('…'), "{long}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map("[a-c]{1,2}|.{0,6}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Equal as JSON: a whole float reads as the integer it is.
        fn same(a: &Value, b: &Value) -> bool {
            match (a, b) {
                (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
                (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
                (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
                _ => a == b,
            }
        }

        /// `{"k": ...}` as text with its first key written twice.
        fn with_a_repeated_key(v: &Value) -> Option<String> {
            let Value::Object(m) = v else { return None };
            let (k, first) = m.iter().next()?;
            let rest = serde_json::to_string(v).unwrap();
            Some(format!("{{{}:{},{}", serde_json::to_string(k).unwrap(), first, &rest[1..]))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_text_parses_as_serde_json_or_is_bad_request(text in prop_oneof![any::<String>(), "[\\[\\]{}\",:0-9a-z ]{0,40}"]) {
                match parse(text.as_bytes()) {
                    Ok(v) => prop_assert!(same(&v, &serde_json::from_str::<Value>(&text).unwrap()), "{}", text),
                    Err(e) => prop_assert_eq!(e.code(), crate::error::ErrorCode::BadRequest),
                }
            }

            #[test]
            fn json_without_repeats_round_trips_and_a_repeat_is_refused(v in value(), pretty in any::<bool>()) {
                let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
                // serde_json's own reading: without float_roundtrip a float may move by an ulp.
                prop_assert!(same(&parse(text.as_bytes()).unwrap(), &serde_json::from_str::<Value>(&text).unwrap()), "{}", text);
                // The same value nested one level down, with a key repeated there.
                if let Some(repeated) = with_a_repeated_key(&v) {
                    let nested = format!("[1,{{\"x\":{repeated}}}]");
                    let refused = matches!(parse(nested.as_bytes()), Err(Error::BadRequest(m)) if m.starts_with("duplicate key"));
                    prop_assert!(refused, "{}", nested);
                }
            }
        }
    }
}
