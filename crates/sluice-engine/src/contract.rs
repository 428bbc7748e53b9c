//! JSON Schema contracts, loaded from the schemas folder and compiled once per flow load.

use crate::error::{ErrorKind, FlowError, Violation};
use serde_json::Value;
use sluice_flow::{Diagnostic, Span};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A compiled contract.
pub struct Contract {
    name: String,
    path: PathBuf,
    /// The schema as loaded (published by `sluice openapi`).
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Contract({})", self.name)
    }
}

impl Contract {
    /// The name as referenced in the flow.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The JSON Schema this contract checks against, as it was loaded.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks a payload; the error lists every violation with its JSON pointer.
    pub fn check(&self, payload: &Value) -> Result<(), FlowError> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(payload)
            .map(|e| Violation {
                pointer: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            })
            .collect();
        let mut error = FlowError::new(
            ErrorKind::Contract,
            format!(
                "payload breaks contract `{}` ({} violation{})",
                self.name,
                violations.len(),
                if violations.len() == 1 { "" } else { "s" }
            ),
        );
        error.violations = violations;
        Err(error)
    }
}

/// Where a contract reference points: `order.v1` → `<schemas>/order.v1.json`; a value with a
/// `/` or ending in `.json` is a path relative to the working directory.
pub fn contract_path(reference: &str, schemas_dir: &Path) -> PathBuf {
    if reference.contains('/') || reference.ends_with(".json") {
        PathBuf::from(reference)
    } else {
        schemas_dir.join(format!("{reference}.json"))
    }
}

/// Loads and compiles a contract. `at` is the position of the reference in the flow file,
/// used for "not found" errors; problems inside the schema point into the schema file.
pub fn load_contract(
    reference: &str,
    schemas_dir: &Path,
    flow_diagnostic: &dyn Fn(Option<Span>, String) -> Diagnostic,
    at: Option<Span>,
) -> Result<Arc<Contract>, Diagnostic> {
    let path = contract_path(reference, schemas_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            let mut d = flow_diagnostic(
                at,
                format!(
                    "contract `{reference}` not found: cannot read {} ({e})",
                    path.display()
                ),
            );
            let available = available_contracts(schemas_dir);
            if let Some(close) = sluice_flow::diagnostic::did_you_mean(
                reference,
                available.iter().map(String::as_str),
            ) {
                d = d.with_help(format!("did you mean `{close}`?"));
            }
            if !available.is_empty() {
                d = d.with_help(format!(
                    "contracts in {}: {}",
                    schemas_dir.display(),
                    available.join(", ")
                ));
            } else {
                d = d.with_help(format!(
                    "create {} with a JSON Schema, or fix the name",
                    path.display()
                ));
            }
            return Err(d);
        }
    };
    let schema: Value = serde_json::from_str(&text).map_err(|e| {
        Diagnostic::at(
            &path,
            &text,
            Some(Span {
                line: e.line() as u64,
                column: e.column().max(1) as u64,
                len: 1,
            }),
            format!("the schema is not valid JSON: {e}"),
        )
        .with_help("fix the JSON syntax of the schema file")
    })?;
    let formats = check_formats(&schema).map_err(|message| {
        Diagnostic::file(&path, message).with_help(format!(
            "write `\"{FORMATS_SWITCH}\": false` to accept any string for a `format`, or remove the key to check formats"
        ))
    })?;
    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    let validator = jsonschema::options()
        .with_base_uri(format!("file://{}", absolute.display()))
        // On by default whatever the draft: a contract that says `"format": "email"` means it
        // (2019-09 and 2020-12 make `format` an annotation only, which lets typos through).
        .should_validate_formats(formats)
        .build(&schema)
        .map_err(|e| {
            Diagnostic::file(&path, format!("the schema is not a valid JSON Schema: {e}"))
                .with_help(format!("at schema location `{}`", e.schema_path().as_str()))
        })?;
    Ok(Arc::new(Contract {
        name: reference.to_owned(),
        path,
        schema,
        validator,
    }))
}

/// The key at the root of a contract that turns the checking of `format` off (`false`).
pub const FORMATS_SWITCH: &str = "x-sluice-formats";

/// Whether the contract checks `format`: `true` unless its root says
/// `"x-sluice-formats": false`.
fn check_formats(schema: &Value) -> Result<bool, String> {
    match schema.get(FORMATS_SWITCH) {
        None => Ok(true),
        Some(Value::Bool(on)) => Ok(*on),
        Some(other) => Err(format!(
            "`{FORMATS_SWITCH}` must be true or false, not {other}"
        )),
    }
}

fn available_contracts(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .filter(|n| n != "sluice-flow.schema")
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn violations_carry_json_pointers_and_refs_resolve_locally() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("line.json"),
            r#"{"type":"object","properties":{"qty":{"type":"integer","minimum":1}},"required":["qty"]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("order.json"),
            r#"{"type":"object","required":["id"],"properties":{"id":{"type":"string"},
                "lines":{"type":"array","items":{"$ref":"line.json"}}}}"#,
        )
        .unwrap();
        let diag = |_: Option<Span>, m: String| Diagnostic::file("f", m);
        let contract = load_contract("order", dir.path(), &diag, None).unwrap();
        assert!(
            contract
                .check(&json!({"id": "a", "lines": [{"qty": 2}]}))
                .is_ok()
        );
        let err = contract
            .check(&json!({"id": 5, "lines": [{"qty": 0}]}))
            .unwrap_err();
        let pointers: Vec<_> = err.violations.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/id"), "{pointers:?}");
        assert!(pointers.contains(&"/lines/0/qty"), "{pointers:?}");
        let missing = load_contract("ordr", dir.path(), &diag, None).unwrap_err();
        assert!(
            missing
                .help
                .iter()
                .any(|h| h.contains("did you mean `order`")),
            "{missing}"
        );
    }

    #[test]
    fn formats_are_checked_unless_the_contract_turns_them_off() {
        let dir = tempfile::tempdir().unwrap();
        let diag = |_: Option<Span>, m: String| Diagnostic::file("f", m);
        for draft in [
            "https://json-schema.org/draft/2020-12/schema",
            "https://json-schema.org/draft/2019-09/schema",
            "http://json-schema.org/draft-07/schema#",
        ] {
            std::fs::write(
                dir.path().join("person.json"),
                json!({"$schema": draft, "properties": {"email": {"format": "email"},
                    "born": {"format": "date"}}})
                .to_string(),
            )
            .unwrap();
            let contract = load_contract("person", dir.path(), &diag, None).unwrap();
            assert!(
                contract
                    .check(&json!({"email": "a@example.com", "born": "2001-02-03"}))
                    .is_ok()
            );
            let err = contract
                .check(&json!({"email": "not-an-email", "born": "yesterday"}))
                .unwrap_err();
            assert_eq!(err.violations.len(), 2, "{draft}: {err}");
        }
        std::fs::write(
            dir.path().join("loose.json"),
            r#"{"x-sluice-formats": false, "properties": {"email": {"format": "email"}}}"#,
        )
        .unwrap();
        let loose = load_contract("loose", dir.path(), &diag, None).unwrap();
        assert!(loose.check(&json!({"email": "not-an-email"})).is_ok());
        std::fs::write(dir.path().join("odd.json"), r#"{"x-sluice-formats": "no"}"#).unwrap();
        let odd = load_contract("odd", dir.path(), &diag, None).unwrap_err();
        assert!(odd.to_string().contains("must be true or false"), "{odd}");
    }
}
