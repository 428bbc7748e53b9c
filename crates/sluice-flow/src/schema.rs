//! The JSON Schema of the flow format, generated from the model types.
//!
//! Doc comments become descriptions, serde defaults become `default`, and the constrained value
//! types (durations, sizes, counts) carry the `pattern` or `minimum` their parsers enforce. The
//! checked-in `schemas/sluice-flow.schema.json` is [`flow_schema_text`]; a test fails when it is
//! stale, and `sluice schema` prints the same text.

use crate::{FlowFile, Text};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer};
use std::borrow::Cow;

/// The `$id` of the flow-format schema.
pub const SCHEMA_ID: &str = "urn:sluice:schema:flow:v1";

/// The schema of a whole flow file.
pub fn flow_schema() -> Schema {
    let mut schema = SchemaGenerator::default().into_root_schema_for::<FlowFile>();
    schema.insert("$id".into(), SCHEMA_ID.into());
    schema.insert("title".into(), "sluice flow (v1)".into());
    let mut value = serde_json::Value::from(schema);
    unwrap_descriptions(&mut value);
    Schema::try_from(value).expect("the schema stays an object")
}

/// Doc comments wrap at 100 columns; an editor shows a description as one paragraph.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text.replace('\n', " ");
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The schema as published: pretty JSON with a final newline.
pub fn flow_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&flow_schema())
        .expect("a schema built from JSON values always serializes");
    text.push('\n');
    text
}

/// Why flow text could not be checked against the schema: the text is not YAML, the
/// definition asked for does not exist, or the schema does not compile.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The text is not YAML (the parser's message has the line and column).
    #[error(transparent)]
    Yaml(#[from] serde_saphyr::Error),
    /// No `$defs` entry of that name.
    #[error("the flow schema has no definition `{0}`")]
    NoDefinition(String),
    /// The generated schema does not compile: a bug in a model type's `JsonSchema`.
    #[error(transparent)]
    Compile(Box<jsonschema::ValidationError<'static>>),
}

/// YAML text as the JSON value a schema validator sees (for checking flow text, or a part of
/// it, against [`flow_schema`]).
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, SchemaError> {
    Ok(serde_saphyr::from_str(text)?)
}

/// A validator for the whole flow file, or for one of its `$defs` (a fragment of a flow, such
/// as a `PostgresSinkConfig`).
pub fn validator(definition: Option<&str>) -> Result<jsonschema::Validator, SchemaError> {
    let mut schema = serde_json::Value::from(flow_schema());
    if let Some(name) = definition {
        let defs = schema.get("$defs").cloned().unwrap_or_default();
        if defs.get(name).is_none() {
            return Err(SchemaError::NoDefinition(name.to_owned()));
        }
        schema = serde_json::json!({ "$ref": format!("#/$defs/{name}"), "$defs": defs });
    }
    jsonschema::validator_for(&schema).map_err(|e| SchemaError::Compile(Box::new(e)))
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
#[path = "schema_edges.rs"]
mod edges;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo_file(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(name)
    }

    /// `SLUICE_BLESS=1` rewrites the file instead of failing.
    fn bless() -> bool {
        std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1")
    }

    #[test]
    fn the_checked_in_schema_is_the_generated_one() {
        let path = repo_file("schemas/sluice-flow.schema.json");
        let generated = flow_schema_text();
        if bless() {
            std::fs::write(&path, &generated).expect("write the schema");
            return;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "schemas/sluice-flow.schema.json is stale: the flow model changed. Regenerate it with \
             `cargo run -q -p sluice -- schema > schemas/sluice-flow.schema.json` \
             (or `SLUICE_BLESS=1 cargo test -p sluice-flow --lib schema`) and commit it"
        );
    }
}
