//! JSON → XML, the inverse of the reading convention (see the crate's documentation).

use crate::read::is_name;
use crate::{ATTRIBUTE_PREFIX, TEXT_KEY};
use serde_json::{Map, Value};

/// Why a payload has no XML form; `path` is where in the payload (a JSON pointer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at `{path}` of the payload)")]
pub struct WriteError {
    /// What is wrong, for humans.
    pub reason: String,
    /// The JSON pointer of the value.
    pub path: String,
}

fn refuse(reason: impl Into<String>, path: &str) -> WriteError {
    WriteError {
        reason: reason.into(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    }
}

/// Writes `value` as a UTF-8 document with an XML declaration. With `root`, the value is the
/// root element's content; without, it must be an object of one key, the root's name.
pub fn to_xml(value: &Value, root: Option<&str>) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    match root {
        Some(name) => element(&mut out, name, value, "")?,
        None => match value {
            Value::Object(map) if map.len() == 1 => {
                let (name, content) = map.iter().next().expect("one key");
                element(&mut out, name, content, &pointer("", name))?;
            }
            _ => {
                return Err(refuse(
                    "the payload must be an object of one key, the root element's name, or the sink must name the root (`xml: { root: Order }`)",
                    "",
                ));
            }
        },
    }
    out.push(b'\n');
    Ok(out)
}

fn pointer(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn check_name(name: &str, path: &str) -> Result<(), WriteError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(refuse(
            format!(
                "`{name}` is not an XML name (a letter or `_` first, then letters, digits, `-`, `.`, `_`, `:`)"
            ),
            path,
        ))
    }
}

/// A scalar as text; `None` for `null`.
fn scalar(value: &Value, path: &str, what: &str) -> Result<Option<String>, WriteError> {
    match value {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Null => Ok(None),
        Value::Array(_) | Value::Object(_) => Err(refuse(
            format!("{what} must be a string, number or boolean"),
            path,
        )),
    }
}

fn element(out: &mut Vec<u8>, name: &str, value: &Value, path: &str) -> Result<(), WriteError> {
    check_name(name, path)?;
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}/{i}");
                if item.is_array() {
                    return Err(refuse("an array inside an array has no XML form", &at));
                }
                element(out, name, item, &at)?;
            }
            Ok(())
        }
        Value::Object(map) => object(out, name, map, path),
        other => {
            match scalar(other, path, "a value")? {
                Some(text) if !text.is_empty() => {
                    open(out, name);
                    out.push(b'>');
                    escape_into(out, &text, false);
                    close(out, name);
                }
                _ => empty(out, name),
            }
            Ok(())
        }
    }
}

fn object(
    out: &mut Vec<u8>,
    name: &str,
    map: &Map<String, Value>,
    path: &str,
) -> Result<(), WriteError> {
    open(out, name);
    let mut text = None;
    let mut children = Vec::new();
    for (key, value) in map {
        let at = pointer(path, key);
        if let Some(attribute) = key.strip_prefix(ATTRIBUTE_PREFIX) {
            check_name(attribute, &at)?;
            let Some(value) = scalar(value, &at, "an attribute")? else {
                return Err(refuse("an attribute cannot be null", &at));
            };
            out.push(b' ');
            out.extend_from_slice(attribute.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_into(out, &value, true);
            out.push(b'"');
        } else if key == TEXT_KEY {
            text = scalar(value, &at, "`#text`")?;
        } else {
            children.push((key, value, at));
        }
    }
    if text.is_none() && children.is_empty() {
        out.extend_from_slice(b"/>");
        return Ok(());
    }
    out.push(b'>');
    if let Some(text) = text {
        escape_into(out, &text, false);
    }
    for (key, value, at) in children {
        element(out, key, value, &at)?;
    }
    close(out, name);
    Ok(())
}

fn open(out: &mut Vec<u8>, name: &str) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
}

fn close(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

fn empty(out: &mut Vec<u8>, name: &str) {
    open(out, name);
    out.extend_from_slice(b"/>");
}

/// Escapes text (or an attribute value): the markup characters, and the characters that a
/// reader would otherwise normalize away (`\r` everywhere, `\n` and `\t` in attributes),
/// so that what is written reads back as the same string.
fn escape_into(out: &mut Vec<u8>, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\r' => out.extend_from_slice(b"&#13;"),
            '"' if attribute => out.extend_from_slice(b"&quot;"),
            '\n' if attribute => out.extend_from_slice(b"&#10;"),
            '\t' if attribute => out.extend_from_slice(b"&#9;"),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}
