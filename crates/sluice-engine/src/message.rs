//! A message: its payload (kept in whichever form the last step produced) and its metadata.

use crate::value;
use jmespath::{Rcvar, Variable};
use rhai::Dynamic;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Message metadata: `message_id`, `flow`, `received_at`, `file.name`, …
pub type Meta = BTreeMap<String, String>;

/// Metadata key marking a message whose body could not be decoded; holds the reason.
pub const UNDECODABLE: &str = "sluice.undecodable";
/// Metadata key saying how the body of an undecodable message is kept (`base64`).
pub const BODY_ENCODING: &str = "sluice.body_encoding";

/// A payload that remembers every form it has been converted to.
///
/// Each step asks for the form it needs; a conversion happens only when that form is not
/// already present, and a step that changes the payload keeps only the form it produced.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The body as it arrived, already checked to be JSON: parsed only into the form the
    /// first step asks for, and written out unchanged (if compact) when no step replaced
    /// the payload.
    raw: Option<bytes::Bytes>,
    /// Whether `raw` has no whitespace outside strings, so it can be written out as it is.
    raw_compact: bool,
    json: Option<Value>,
    jmes: Option<Rcvar>,
    rhai: Option<Dynamic>,
}

impl Payload {
    /// A payload in JSON form.
    pub fn from_json(value: Value) -> Self {
        Payload {
            raw: None,
            raw_compact: false,
            json: Some(value),
            jmes: None,
            rhai: None,
        }
    }

    /// A payload in JMESPath form.
    pub fn from_jmes(value: Rcvar) -> Self {
        Payload {
            raw: None,
            raw_compact: false,
            json: None,
            jmes: Some(value),
            rhai: None,
        }
    }

    /// A payload in Rhai form.
    pub fn from_rhai(value: Dynamic) -> Self {
        Payload {
            raw: None,
            raw_compact: false,
            json: None,
            jmes: None,
            rhai: Some(value),
        }
    }

    /// A payload from a JSON body, kept as bytes until a step needs a parsed form. The body
    /// is checked here (without building anything), so a body that is not JSON is refused
    /// where it arrives, with the reason.
    pub fn from_json_bytes(body: impl Into<bytes::Bytes>) -> Result<Self, serde_json::Error> {
        let body = body.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)?;
        Ok(Payload {
            raw_compact: is_compact(&body),
            raw: Some(body),
            json: None,
            jmes: None,
            rhai: None,
        })
    }

    /// The JSON form, converting once if needed.
    pub fn json(&mut self) -> Result<&Value, String> {
        if self.json.is_none() {
            let converted = if let Some(jmes) = &self.jmes {
                value::jmes_to_json(jmes)
            } else if let Some(rhai) = &self.rhai {
                value::rhai_to_json(rhai)?
            } else if let Some(raw) = &self.raw {
                serde_json::from_slice(raw).map_err(|e| format!("the body is not JSON: {e}"))?
            } else {
                Value::Null
            };
            self.json = Some(converted);
        }
        Ok(self.json.get_or_insert(Value::Null))
    }

    /// The JMESPath form (a cheap shared handle), converting once if needed.
    pub fn jmes(&mut self) -> Result<Rcvar, String> {
        if let Some(jmes) = &self.jmes {
            return Ok(jmes.clone());
        }
        let converted = if let Some(json) = &self.json {
            value::json_to_jmes(json)
        } else if let Some(rhai) = &self.rhai {
            value::rhai_to_jmes(rhai)?
        } else if let Some(raw) = &self.raw {
            // Straight from the bytes: no intermediate JSON tree.
            Rcvar::new(
                serde_json::from_slice::<Variable>(raw)
                    .map_err(|e| format!("the body is not JSON: {e}"))?,
            )
        } else {
            Rcvar::new(Variable::Null)
        };
        self.jmes = Some(converted.clone());
        Ok(converted)
    }

    /// Takes the Rhai form for a script to mutate; the payload is empty until replaced.
    pub fn take_rhai(&mut self) -> Dynamic {
        if let Some(rhai) = self.rhai.take() {
            self.raw = None;
            self.json = None;
            self.jmes = None;
            return rhai;
        }
        if self.json.is_none() && self.jmes.is_none() && self.raw.is_some() {
            // A checked body parses; should it not, the script sees `()` as for no payload.
            let _ = self.json();
        }
        let converted = if let Some(jmes) = &self.jmes {
            value::jmes_to_rhai(jmes)
        } else if let Some(json) = &self.json {
            value::json_to_rhai(json)
        } else {
            Dynamic::UNIT
        };
        self.raw = None;
        self.json = None;
        self.jmes = None;
        converted
    }

    /// The JSON value, consuming the payload.
    pub fn into_json(mut self) -> Result<Value, String> {
        self.json()?;
        Ok(self.json.unwrap_or(Value::Null))
    }

    /// A copy for a delivery: the cheapest form to copy (JMESPath values are shared).
    pub fn snapshot(&self) -> Payload {
        match &self.jmes {
            Some(jmes) => Payload {
                raw: self.raw.clone(),
                raw_compact: self.raw_compact,
                jmes: Some(jmes.clone()),
                json: None,
                rhai: None,
            },
            None => self.clone(),
        }
    }

    /// Serializes to compact JSON from whichever form is at hand, without converting.
    pub fn to_json_vec(&self) -> Result<Vec<u8>, String> {
        if let Some(raw) = self.raw.as_ref().filter(|_| self.raw_compact) {
            return Ok(raw.to_vec());
        }
        let result = if let Some(json) = &self.json {
            serde_json::to_vec(json)
        } else if let Some(jmes) = &self.jmes {
            serde_json::to_vec(&**jmes)
        } else if let Some(rhai) = &self.rhai {
            return serde_json::to_vec(&value::rhai_to_json(rhai)?).map_err(|e| e.to_string());
        } else if let Some(raw) = &self.raw {
            // Not compact: parsed and written again, so the output is one line.
            let value: Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
            serde_json::to_vec(&value)
        } else {
            Ok(b"null".to_vec())
        };
        result.map_err(|e| format!("cannot serialize the payload: {e}"))
    }

    /// Reads a field path (`a.b.c`) from whichever form is at hand, without converting.
    pub fn get_path(&mut self, path: &[String]) -> Option<PathValue> {
        if self.json.is_none() && self.jmes.is_none() && self.rhai.is_none() {
            self.jmes().ok()?;
        }
        if let Some(jmes) = &self.jmes {
            let mut cur: &Variable = jmes;
            for key in path {
                cur = match cur {
                    Variable::Object(map) => map.get(key)?,
                    _ => return None,
                };
            }
            return PathValue::from_jmes(cur);
        }
        if let Some(json) = &self.json {
            let mut cur = json;
            for key in path {
                cur = cur.get(key)?;
            }
            return PathValue::from_json(cur);
        }
        let rhai = self.rhai.as_ref()?;
        let mut cur = rhai.clone();
        for key in path {
            let next = cur.read_lock::<rhai::Map>()?.get(key.as_str())?.clone();
            cur = next;
        }
        if cur.is_string() {
            Some(PathValue::Text(cur.into_string().ok()?))
        } else if let Ok(i) = cur.as_int() {
            Some(PathValue::Text(i.to_string()))
        } else if let Ok(f) = cur.as_float() {
            Some(PathValue::Text(
                serde_json::Number::from_f64(f)?.to_string(),
            ))
        } else if let Ok(b) = cur.as_bool() {
            Some(PathValue::Text(b.to_string()))
        } else if cur.is_unit() {
            Some(PathValue::Null)
        } else {
            Some(PathValue::Other)
        }
    }
}

/// Whether a (valid) JSON text has no whitespace outside its strings.
fn is_compact(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            return false;
        }
    }
    true
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::from_json(value)
    }
}

/// A scalar read by [`Payload::get_path`], rendered for a template.
#[derive(Debug, PartialEq, Eq)]
pub enum PathValue {
    /// A string, number or boolean, as text.
    Text(String),
    /// `null`.
    Null,
    /// An array or object.
    Other,
}

impl PathValue {
    fn from_json(v: &Value) -> Option<Self> {
        Some(match v {
            Value::String(s) => PathValue::Text(s.clone()),
            Value::Number(n) => PathValue::Text(n.to_string()),
            Value::Bool(b) => PathValue::Text(b.to_string()),
            Value::Null => PathValue::Null,
            _ => PathValue::Other,
        })
    }

    fn from_jmes(v: &Variable) -> Option<Self> {
        Some(match v {
            Variable::String(s) => PathValue::Text(s.clone()),
            Variable::Number(n) => PathValue::Text(n.to_string()),
            Variable::Bool(b) => PathValue::Text(b.to_string()),
            Variable::Null => PathValue::Null,
            _ => PathValue::Other,
        })
    }
}

/// One message travelling through a flow.
#[derive(Clone, Debug)]
pub struct Message {
    /// The payload in its current form.
    pub payload: Payload,
    /// Metadata; shared because most steps only read it.
    pub meta: Arc<Meta>,
}

impl Message {
    /// A new message with a fresh id, the flow name and the time of arrival in its metadata.
    pub fn new(flow: &str, payload: impl Into<Payload>, mut meta: Meta) -> Self {
        meta.entry("message_id".to_owned())
            .or_insert_with(|| uuid::Uuid::now_v7().to_string());
        meta.insert("flow".to_owned(), flow.to_owned());
        meta.entry("received_at".to_owned()).or_insert_with(|| {
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
        });
        Message {
            payload: payload.into(),
            meta: Arc::new(meta),
        }
    }

    /// A message whose body could not be decoded (`why` says how): the flow does not run
    /// its steps but fails it at once with a permanent `trigger` error, so the dead letter
    /// receives the body as it arrived (a UTF-8 string, else base64 with
    /// `sluice.body_encoding` = `base64`) and the trigger's acker learns the outcome. A body
    /// that cannot be read would never succeed, so ackers settle such a failure for good
    /// instead of asking for a redelivery.
    pub fn undecodable(flow: &str, body: &[u8], why: String, mut meta: Meta) -> Self {
        use base64::Engine as _;
        let payload = match std::str::from_utf8(body) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => {
                meta.insert(BODY_ENCODING.to_owned(), "base64".to_owned());
                Value::String(base64::engine::general_purpose::STANDARD.encode(body))
            }
        };
        meta.insert(UNDECODABLE.to_owned(), why);
        Message::new(flow, payload, meta)
    }

    /// Why the body could not be decoded, for a message made by [`Message::undecodable`].
    pub fn undecodable_reason(&self) -> Option<&str> {
        self.meta.get(UNDECODABLE).map(String::as_str)
    }

    /// The message id.
    pub fn id(&self) -> &str {
        self.meta
            .get("message_id")
            .map(String::as_str)
            .unwrap_or("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_body_is_parsed_only_when_a_form_is_needed() {
        let mut p = Payload::from_json_bytes(&br#"{"id":"a","n":[1,2]}"#[..]).unwrap();
        assert_eq!(p.to_json_vec().unwrap(), br#"{"id":"a","n":[1,2]}"#);
        assert_eq!(
            p.get_path(&["id".to_owned()]),
            Some(PathValue::Text("a".into()))
        );
        let mut p = Payload::from_json_bytes(&b"{\"s\":\"x y\\\"\"}"[..]).unwrap();
        assert_eq!(p.jmes().unwrap().as_object().unwrap().len(), 1);
        assert_eq!(p.json().unwrap()["s"], "x y\"");
        assert_eq!(p.snapshot().to_json_vec().unwrap(), b"{\"s\":\"x y\\\"\"}");
    }

    #[test]
    fn a_body_with_whitespace_is_written_compact() {
        let p = Payload::from_json_bytes(&b"{ \"a\": 1 }\n"[..]).unwrap();
        assert_eq!(p.to_json_vec().unwrap(), br#"{"a":1}"#);
        let mut p = Payload::from_json_bytes(&b"[1, 2]"[..]).unwrap();
        assert_eq!(
            value::rhai_to_json(&p.take_rhai()).unwrap(),
            serde_json::json!([1, 2])
        );
        assert!(p.to_json_vec().unwrap() == b"null");
    }

    #[test]
    fn a_body_that_is_not_json_is_refused() {
        let e = Payload::from_json_bytes(&b"{\"a\":"[..]).unwrap_err();
        assert_eq!((e.line(), e.column()), (1, 5));
        assert!(Payload::from_json_bytes(&b"{} {}"[..]).is_err());
    }
}
