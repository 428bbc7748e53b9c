//! Message bodies of the broker connectors: bytes on the wire ⇄ payloads, per
//! [`MessageFormat`], and the small helpers every broker connector shares.

use base64::Engine as _;
use serde_json::Value;
use sluice_engine::{ErrorKind, FlowError, Inlet, Payload};
use sluice_flow::MessageFormat;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a received body could not become a payload, or why a broker name was refused.
///
/// A body error travels into the message as its `sluice.undecodable` reason (and from there
/// into the dead letter), so its text is what an operator reads; a name error becomes a load
/// diagnostic at the name.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A `json` body the parser refused: malformed, nested too deep, a number out of range.
    #[error(transparent)]
    Json(#[from] sluice_engine::BodyError),
    /// A `text` body that is not UTF-8.
    #[error("the body is not UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// An `xml` body that is not a document sluice reads (malformed, a DTD, too deep).
    #[error("the body is not XML sluice reads: {0}")]
    Xml(#[from] sluice_xml::XmlError),
    /// A stream, queue, consumer or channel name that is empty.
    #[error("the name is empty")]
    EmptyName,
    /// A name with a character some broker refuses.
    #[error("`{name}` contains `{bad}`; use letters, digits, `-` and `_`")]
    BadName {
        /// The name as written.
        name: String,
        /// Its first character outside the portable set.
        bad: char,
    },
}

/// Turns a received body into a payload; an error names what is wrong with the body. A JSON
/// body is parsed here, completely and once ([`sluice_engine::parse_json`]): a body
/// it refuses (malformed, nested too deep, a number out of range) is the caller's to hand to
/// [`Message::undecodable`](sluice_engine::Message::undecodable), which keeps it as it
/// arrived for the dead letter.
pub fn decode(format: MessageFormat, body: &[u8]) -> Result<Payload, CodecError> {
    match format {
        MessageFormat::Json => Ok(Payload::from_json_bytes(bytes::Bytes::copy_from_slice(
            body,
        ))?),
        MessageFormat::Text => std::str::from_utf8(body)
            .map(|s| Value::String(s.to_owned()).into())
            .map_err(CodecError::NotUtf8),
        MessageFormat::Bytes => {
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(body)).into())
        }
        MessageFormat::Xml => {
            Ok(sluice_xml::to_json(body, &sluice_xml::ReadOptions::default())?.into())
        }
    }
}

/// Turns a payload into the body to send. A payload that cannot be encoded is a permanent
/// `sink` error: no retry changes it.
pub fn encode(format: MessageFormat, payload: &mut Payload) -> Result<Vec<u8>, FlowError> {
    let refuse = |why: String| FlowError::permanent(ErrorKind::Sink, why);
    match format {
        MessageFormat::Json => payload.to_json_vec().map_err(refuse),
        MessageFormat::Text => match payload.json().map_err(refuse)? {
            Value::String(s) => Ok(s.clone().into_bytes()),
            other => serde_json::to_vec(other).map_err(|e| refuse(e.to_string())),
        },
        MessageFormat::Bytes => match payload.json().map_err(refuse)? {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| refuse(format!("`format: bytes` needs a base64 string: {e}"))),
            _ => Err(refuse(
                "`format: bytes` needs the payload to be a base64 string".to_owned(),
            )),
        },
        MessageFormat::Xml => sluice_xml::to_xml(payload.json().map_err(refuse)?, None)
            .map_err(|e| refuse(format!("the payload has no XML form: {e}"))),
    }
}

/// Capped exponential backoff for reconnecting: 100 ms, 200 ms, … up to 10 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    /// Waits the current delay and doubles it; `false` when `stop` was cancelled meanwhile.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// Runs a broker trigger's consuming loop until `stop`, connecting again with capped
/// backoff whenever it fails; the flow reports unready meanwhile. `consume` connects, marks
/// the inlet healthy once it is consuming, and returns `Ok` only when `stop` was cancelled. An
/// attempt that got as far as healthy starts the backoff afresh. The error's text is the
/// flow's unhealthy reason (the registry shows it without the URL's credentials).
pub async fn consume_reconnecting<F, Fut, E>(
    inlet: &Inlet,
    stop: &CancellationToken,
    source: &str,
    mut consume: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::default();
    loop {
        let Err(e) = consume().await else { return };
        if inlet.is_healthy() {
            backoff = Backoff::default();
        }
        inlet.set_unhealthy(e.to_string());
        tracing::warn!(flow = %inlet.flow(), "{source}: {e}; reconnecting in {}", humantime::format_duration(backoff.next));
        if !backoff.wait(stop).await {
            return;
        }
    }
}

/// Checks a name used as a stream, queue, consumer or channel name: non-empty, made of
/// letters, digits, `-` and `_` (the set every broker accepts).
pub(crate) fn check_name(name: &str) -> Result<(), CodecError> {
    if name.is_empty() {
        return Err(CodecError::EmptyName);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(CodecError::BadName {
            name: name.to_owned(),
            bad,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        let mut p = Payload::from_json(serde_json::json!({"a": 1}));
        let body = encode(MessageFormat::Json, &mut p).unwrap();
        assert_eq!(
            decode(MessageFormat::Json, &body).unwrap().json().unwrap()["a"],
            1
        );
        let mut p = Payload::from_json(Value::String("aGk=".into()));
        assert_eq!(encode(MessageFormat::Bytes, &mut p).unwrap(), b"hi");
        assert_eq!(
            decode(MessageFormat::Bytes, b"hi").unwrap().json().unwrap(),
            "aGk="
        );
        assert!(decode(MessageFormat::Json, b"{").is_err());
    }

    #[test]
    fn a_json_body_the_parse_refuses_is_undecodable() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = decode(MessageFormat::Json, deep.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("deeper than"), "{e}");
        let e = decode(MessageFormat::Json, br#"{"n":1e400}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1e+400 at /n"), "{e}");
        let e = decode(MessageFormat::Json, b"{\"s\":\"\xff\"}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the body is not JSON"), "{e}");
        let big = br#"{"id":12345678901234567890123}"#;
        let mut p = decode(MessageFormat::Json, big).unwrap();
        assert_eq!(encode(MessageFormat::Json, &mut p).unwrap(), big);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("orders-v1_2").is_ok());
        assert_eq!(
            check_name("a.b").unwrap_err().to_string(),
            "`a.b` contains `.`; use letters, digits, `-` and `_`"
        );
        assert_eq!(check_name("").unwrap_err().to_string(), "the name is empty");
    }
}
