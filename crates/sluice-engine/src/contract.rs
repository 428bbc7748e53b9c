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
    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    let validator = jsonschema::options()
        .with_base_uri(format!("file://{}", absolute.display()))
        .build(&schema)
        .map_err(|e| {
            Diagnostic::file(&path, format!("the schema is not a valid JSON Schema: {e}"))
                .with_help(format!("at schema location `{}`", e.schema_path().as_str()))
        })?;
    Ok(Arc::new(Contract {
        name: reference.to_owned(),
        path,
        validator,
    }))
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
}
