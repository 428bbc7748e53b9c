//! A message: its payload (kept in whichever form the last step produced) and its metadata.

use crate::value;
use jmespath::{Rcvar, Variable};
use rhai::Dynamic;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Message metadata: `message_id`, `flow`, `received_at`, `file.name`, …
pub type Meta = BTreeMap<String, String>;

/// Metadata key of the message id (set on every message when it is made).
pub const MESSAGE_ID: &str = "message_id";
/// Metadata key of the correlation id a message arrived with (HTTP `traceparent` or
/// `x-correlation-id`, a broker's correlation property).
pub const CORRELATION_ID: &str = "correlation_id";

/// The ids of a message, read from its metadata in this one place.
pub trait Ids {
    /// The message id; `-` for metadata that has none (a hand-made test message).
    fn message_id(&self) -> &str;
    /// The correlation id the message arrived with, if it came with one.
    fn correlation_id(&self) -> Option<&str>;
    /// The id to pass on to the next system: the correlation id it arrived with, else its
    /// message id.
    fn correlation(&self) -> &str {
        self.correlation_id().unwrap_or_else(|| self.message_id())
    }
}

impl Ids for Meta {
    fn message_id(&self) -> &str {
        self.get(MESSAGE_ID).map_or("-", String::as_str)
    }

    fn correlation_id(&self) -> Option<&str> {
        self.get(CORRELATION_ID).map(String::as_str)
    }
}

/// Metadata key marking a message whose body could not be decoded; holds the reason.
pub const UNDECODABLE: &str = "sluice.undecodable";
/// Metadata key saying how the body of an undecodable message is kept (`base64`).
pub const BODY_ENCODING: &str = "sluice.body_encoding";

/// How deeply arrays and objects may nest in a JSON body: serde_json's recursion limit,
/// which every parse of a payload uses (docs/flow-format.md, "Bodies").
pub const MAX_DEPTH: usize = 127;

/// Why a JSON body was refused where it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// What is wrong with the body.
    pub kind: BodyErrorKind,
    /// The parser's explanation, or the number and the field holding it.
    pub detail: String,
    /// 1-based line and column of the problem; 0 when it is a field (see `detail`).
    pub line: usize,
    /// See `line`.
    pub column: usize,
}

/// The kinds of [`BodyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyErrorKind {
    /// Not JSON: bad syntax, bytes that are not UTF-8 inside a string, trailing data.
    Malformed,
    /// Well-formed JSON nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A number beyond the range of a 64-bit float (`1e400`).
    NumberOutOfRange,
}

impl BodyError {
    /// Whether the body is well-formed JSON that sluice cannot represent (HTTP 422), rather
    /// than malformed (HTTP 400).
    pub fn unrepresentable(&self) -> bool {
        self.kind != BodyErrorKind::Malformed
    }

    fn from_serde(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let detail = text.split(" at line ").next().unwrap_or(&text).to_owned();
        // serde_json has no error code to ask for, only its (stable) message.
        let kind = if detail == "recursion limit exceeded" {
            BodyErrorKind::TooDeep
        } else {
            BodyErrorKind::Malformed
        };
        BodyError {
            kind,
            detail,
            line: e.line(),
            column: e.column(),
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (line, column) = (self.line, self.column);
        match self.kind {
            BodyErrorKind::Malformed => write!(
                f,
                "the body is not JSON: {} at line {line} column {column}",
                self.detail
            ),
            BodyErrorKind::TooDeep => write!(
                f,
                "the body nests arrays and objects deeper than {MAX_DEPTH} levels (at line \
                 {line} column {column}); flatten the document"
            ),
            BodyErrorKind::NumberOutOfRange => write!(
                f,
                "the body holds {}, beyond the range of a 64-bit float (±1.7976931348623157e308); \
                 send such a value as a string",
                self.detail
            ),
        }
    }
}

impl std::error::Error for BodyError {}

/// Parses a JSON body into a payload value: the one parse that decides what a body is. It
/// refuses what no later step could represent (nesting past [`MAX_DEPTH`], invalid UTF-8 or
/// lone surrogates in strings, numbers past f64's range), so nothing downstream fails on it.
pub fn parse_json(body: &[u8]) -> Result<Value, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::from_serde(&e))?;
    if let Err(at) = check_numbers(&value) {
        return Err(BodyError {
            kind: BodyErrorKind::NumberOutOfRange,
            detail: at,
            line: 0,
            column: 0,
        });
    }
    Ok(value)
}

/// Checks that every number of `value` is within f64's range (JMESPath compares and Rhai
/// computes in f64; a number past it would compare as neither smaller nor larger); the error
/// names the number and its JSON pointer. Every edge that parses JSON itself (file trigger,
/// admin injection) calls it, so all of them refuse what the body parse refuses.
pub fn check_numbers(value: &Value) -> Result<(), String> {
    let mut path = Vec::new();
    match out_of_range(value, &mut path) {
        None => Ok(()),
        Some(number) => {
            let text = number.as_str();
            let shown: String = text.chars().take(40).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            let mut pointer = String::new();
            for key in path.iter().rev() {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            if pointer.is_empty() {
                pointer.push('/');
            }
            Err(format!("the number {shown}{more} at {pointer}"))
        }
    }
}

/// The first number past f64's range, with the keys leading to it in `path` (innermost first).
fn out_of_range<'a>(value: &'a Value, path: &mut Vec<String>) -> Option<&'a serde_json::Number> {
    match value {
        Value::Number(n) => {
            let text = n.as_str();
            // Without an exponent, a number of at most 308 characters is below 1e308.
            ((text.len() > 308 || text.contains(['e', 'E'])) && n.as_f64().is_none()).then_some(n)
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let found = out_of_range(item, path)?;
            path.push(i.to_string());
            Some(found)
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let found = out_of_range(v, path)?;
            path.push(k.clone());
            Some(found)
        }),
        _ => None,
    }
}

/// What a payload says when asked for a form after a script took it and failed.
const TAKEN: &str = "the payload was handed to a script that failed before giving it back";

/// A payload that remembers every form it has been converted to.
///
/// Each step asks for the form it needs; a conversion happens only when that form is not
/// already present, and a step that changes the payload keeps only the form it produced.
/// No conversion ever yields null for a value it cannot make: it is an error.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The body as it arrived, while no step has replaced the payload: written out unchanged
    /// (if compact), so what passes through is byte for byte what came in. It was parsed by
    /// [`parse_json`] when it arrived, so parsing it again cannot fail and yields the same
    /// value; `json` may therefore be dropped and derived from it again.
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

    /// A payload from a JSON body. The body is parsed here, once and completely, by
    /// [`parse_json`], so a body that cannot be represented is refused where it arrives, with
    /// the reason; the bytes are kept to be written out unchanged while no step replaces
    /// the payload.
    pub fn from_json_bytes(body: impl Into<bytes::Bytes>) -> Result<Self, BodyError> {
        let body = body.into();
        let value = parse_json(&body)?;
        Ok(Payload {
            raw_compact: is_compact(&body),
            raw: Some(body),
            json: Some(value),
            jmes: None,
            rhai: None,
        })
    }

    /// The JSON form, converting once if needed.
    pub fn json(&mut self) -> Result<&Value, String> {
        if self.json.is_none() {
            let converted = if let Some(jmes) = &self.jmes {
                value::try_jmes_to_json(jmes)?
            } else if let Some(rhai) = &self.rhai {
                value::rhai_to_json(rhai)?
            } else if let Some(raw) = &self.raw {
                parse_json(raw).map_err(|e| e.to_string())?
            } else {
                return Err(TAKEN.to_owned());
            };
            self.json = Some(converted);
        }
        self.json.as_ref().ok_or_else(|| TAKEN.to_owned())
    }

    /// The JMESPath form (a cheap shared handle), converting once if needed.
    pub fn jmes(&mut self) -> Result<Rcvar, String> {
        if let Some(jmes) = &self.jmes {
            return Ok(jmes.clone());
        }
        let converted = if self.raw.is_some() && self.json.is_some() {
            // The JSON form can be parsed again from `raw`, so it is taken apart rather than
            // copied.
            self.json.take().map(value::json_into_jmes)
        } else if let Some(json) = &self.json {
            Some(value::json_to_jmes(json))
        } else if let Some(rhai) = &self.rhai {
            Some(value::rhai_to_jmes(rhai)?)
        } else if let Some(raw) = &self.raw {
            Some(value::json_into_jmes(
                parse_json(raw).map_err(|e| e.to_string())?,
            ))
        } else {
            None
        };
        let converted = converted.ok_or_else(|| TAKEN.to_owned())?;
        self.jmes = Some(converted.clone());
        Ok(converted)
    }

    /// Takes the Rhai form for a script to mutate. The other forms stay: until the script
    /// gives a payload back (which replaces this one) they hold the payload as it was, which
    /// is what a failed script leaves behind. Only a Rhai form is moved out, so after a
    /// failed script that received one the payload is empty and says so when asked.
    pub fn take_rhai(&mut self) -> Result<Dynamic, String> {
        if let Some(rhai) = self.rhai.take() {
            self.raw = None;
            self.json = None;
            self.jmes = None;
            return Ok(rhai);
        }
        if let Some(jmes) = &self.jmes {
            return value::jmes_to_rhai(jmes);
        }
        Ok(value::json_to_rhai(self.json()?))
    }

    /// The JSON value, consuming the payload.
    pub fn into_json(mut self) -> Result<Value, String> {
        self.json()?;
        self.json.ok_or_else(|| TAKEN.to_owned())
    }

    /// A copy for a delivery: the cheapest form to copy (JMESPath values are shared, the
    /// body as it arrived is shared bytes).
    pub fn snapshot(&self) -> Payload {
        let shared = |jmes: Option<Rcvar>| Payload {
            raw: self.raw.clone(),
            raw_compact: self.raw_compact,
            jmes,
            json: None,
            rhai: None,
        };
        match &self.jmes {
            Some(jmes) => shared(Some(jmes.clone())),
            None if self.raw.is_some() => shared(None),
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
        } else if let Some(raw) = &self.raw {
            // Unchanged but not compact: parsed and written again, so the output is one line
            // with the keys in their original order (JMESPath objects would sort them).
            serde_json::to_vec(&parse_json(raw).map_err(|e| e.to_string())?)
        } else if let Some(jmes) = &self.jmes {
            return value::jmes_to_vec(jmes);
        } else if let Some(rhai) = &self.rhai {
            serde_json::to_vec(&value::rhai_to_json(rhai)?)
        } else {
            return Err(TAKEN.to_owned());
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
        } else if let Some(big) = cur.read_lock::<value::BigNumber>() {
            Some(PathValue::Text(big.number().to_string()))
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
        meta.entry(MESSAGE_ID.to_owned())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_body_is_written_out_as_it_arrived() {
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
        let mut copy = p.snapshot();
        assert_eq!(copy.json().unwrap()["s"], "x y\"");
    }

    #[test]
    fn a_body_with_whitespace_is_written_compact() {
        let p = Payload::from_json_bytes(&b"{ \"a\": 1 }\n"[..]).unwrap();
        assert_eq!(p.to_json_vec().unwrap(), br#"{"a":1}"#);
        let mut p = Payload::from_json_bytes(&b"[1, 2]"[..]).unwrap();
        assert_eq!(
            value::rhai_to_json(&p.take_rhai().unwrap()).unwrap(),
            serde_json::json!([1, 2])
        );
        // Until a script gives a payload back, the payload is the one it was given.
        assert_eq!(p.to_json_vec().unwrap(), b"[1,2]");
        let mut p = Payload::from_rhai(Dynamic::from_int(1));
        assert!(p.take_rhai().unwrap().is_int());
        assert_eq!(p.json().unwrap_err(), TAKEN);
        assert_eq!(p.to_json_vec().unwrap_err(), TAKEN);
        assert!(p.take_rhai().is_err() && p.jmes().is_err());
    }

    #[test]
    fn a_body_that_is_not_json_is_refused() {
        let e = Payload::from_json_bytes(&b"{\"a\":"[..]).unwrap_err();
        assert_eq!((e.line, e.column, e.kind), (1, 5, BodyErrorKind::Malformed));
        assert!(Payload::from_json_bytes(&b"{} {}"[..]).is_err());
        let e = Payload::from_json_bytes(&b"{\"a\":\"\xff\"}"[..]).unwrap_err();
        assert_eq!(e.kind, BodyErrorKind::Malformed, "{e}");
        assert!(Payload::from_json_bytes(&br#"["\ud800"]"#[..]).is_err());
    }

    #[test]
    fn a_body_the_parser_cannot_represent_is_refused_with_the_reason() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(Payload::from_json_bytes(nested(MAX_DEPTH)).is_ok());
        let e = Payload::from_json_bytes(nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e.kind, BodyErrorKind::TooDeep);
        assert!(
            e.unrepresentable() && e.to_string().contains("deeper than 127"),
            "{e}"
        );
        let e = Payload::from_json_bytes(&br#"{"a":[1,{"b/c":-1e400}]}"#[..]).unwrap_err();
        assert_eq!(e.kind, BodyErrorKind::NumberOutOfRange);
        // serde_json writes the exponent in its own form.
        assert!(e.to_string().contains("-1e+400 at /a/1/b~1c"), "{e}");
        let long = format!("[{}]", "9".repeat(309));
        assert!(Payload::from_json_bytes(long).is_err());
        assert!(Payload::from_json_bytes(format!("[{}]", "9".repeat(308))).is_ok());
        assert!(Payload::from_json_bytes(&b"[1e308, 1e-400]"[..]).is_ok());
    }

    #[test]
    fn numbers_keep_their_text_in_every_form() {
        let body = br#"{"big":12345678901234567890123,"f":1.10,"u":18446744073709551615}"#;
        let mut p = Payload::from_json_bytes(&body[..]).unwrap();
        let jmes = p.jmes().unwrap();
        assert_eq!(Payload::from_jmes(jmes).to_json_vec().unwrap(), &body[..]);
        let rhai = p.take_rhai().unwrap();
        let back = Payload::from_rhai(rhai).to_json_vec().unwrap();
        // Rhai holds the float as an f64, whose shortest form is 1.1.
        assert_eq!(
            back,
            br#"{"big":12345678901234567890123,"f":1.1,"u":18446744073709551615}"#
        );
        let p = Payload::from_json_bytes(&b"{ \"big\": 12345678901234567890123 }"[..]).unwrap();
        assert_eq!(
            p.to_json_vec().unwrap(),
            br#"{"big":12345678901234567890123}"#
        );
    }
}
