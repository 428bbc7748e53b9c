//! Reading a flow file into the model, with errors that point at the exact position.

use crate::diagnostic::did_you_mean;
use crate::{Diagnostic, FlowFile, Span};
use std::path::{Path, PathBuf};

/// A parsed flow file together with its source text, for later diagnostics.
#[derive(Debug)]
pub struct LoadedFlow {
    /// The file it came from.
    pub path: PathBuf,
    /// Its full text (diagnostics quote lines from it).
    pub source: String,
    /// The parsed model.
    pub file: FlowFile,
    /// `name:` or the file stem.
    pub name: String,
}

impl LoadedFlow {
    /// A diagnostic at a position in this flow file.
    pub fn diagnostic(&self, span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(&self.path, &self.source, span, message)
    }
}

/// The flow name implied by a file: its stem (`flows/order-intake.yaml` → `order-intake`).
pub fn flow_name_from_path(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flow".to_owned())
}

/// Reads and parses a flow file.
pub fn load_flow_file(path: &Path) -> Result<LoadedFlow, Diagnostic> {
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostic::file(path, format!("cannot read the flow file: {e}"))
            .with_help("check that the file exists and is readable")
    })?;
    let source = String::from_utf8(bytes).map_err(|e| {
        Diagnostic::file(
            path,
            format!(
                "the flow file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
        .with_help("save the file as UTF-8")
    })?;
    parse_flow(path, source)
}

/// Parses flow text; `path` is only used for names and diagnostics.
pub fn parse_flow(path: &Path, source: String) -> Result<LoadedFlow, Diagnostic> {
    if source.trim().is_empty() {
        return Err(Diagnostic::file(path, "the flow file is empty")
            .with_help("a flow needs at least a `trigger:`; see docs/flow-format.md"));
    }
    let options = serde_saphyr::options! { with_snippet: false };
    let file: FlowFile = serde_saphyr::from_str_with_options(&source, options)
        .map_err(|e| yaml_diagnostic(path, &source, &e))?;
    let name = match &file.name {
        Some(name) => {
            let valid = !name.value.is_empty()
                && name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(Diagnostic::at(
                    path,
                    &source,
                    Span::of(name),
                    format!("`{}` is not a valid flow name", name.value),
                )
                .with_help("use letters, digits, `-`, `_` and `.` only"));
            }
            name.value.0.clone()
        }
        None => flow_name_from_path(path),
    };
    Ok(LoadedFlow {
        path: path.to_owned(),
        source,
        file,
        name,
    })
}

fn yaml_diagnostic(path: &Path, source: &str, error: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    let mut span = error.location().and_then(|at| {
        (at.line() > 0).then(|| Span {
            line: at.line(),
            column: at.column().max(1),
            len: at.span().len().max(1),
        })
    });
    let mut help = Vec::new();
    let message = match error {
        E::SerdeUnknownField {
            field, expected, ..
        }
        | E::SerdeUnknownVariant {
            variant: field,
            expected,
            ..
        } => {
            let is_step = expected.contains(&"transform");
            let what = match error {
                E::SerdeUnknownField { .. } => "key",
                _ if is_step => "step kind",
                _ => "kind",
            };
            if let Some(close) = did_you_mean(field, expected.iter().copied()) {
                help.push(format!("did you mean `{close}`?"));
            }
            if !expected.is_empty() {
                help.push(format!(
                    "expected one of {}",
                    expected
                        .iter()
                        .map(|w| format!("`{w}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(span) = span.as_mut() {
                span.len = field.chars().count().max(1) as u64;
            }
            format!("unknown {what} `{field}`")
        }
        E::SerdeMissingField { field, .. } => {
            help.push(format!(
                "add `{field}:` to this map; see docs/flow-format.md"
            ));
            format!("missing required key `{field}`")
        }
        E::InvalidScalar { ty, .. } => {
            let found = span
                .and_then(|s| {
                    source
                        .lines()
                        .nth(s.line.saturating_sub(1) as usize)
                        .map(|line| {
                            line.chars()
                                .skip(s.column.saturating_sub(1) as usize)
                                .collect::<String>()
                        })
                })
                .map(|rest| {
                    rest.trim()
                        .trim_end_matches([',', '}', ']'])
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            help.push(format!("write a value of type {}", friendly_type(ty)));
            format!(
                "wrong type: expected {}, found `{found}`",
                friendly_type(ty)
            )
        }
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => {
            help.push("change the value to the expected type".to_owned());
            format!("wrong type: expected {expected}, found {unexpected}")
        }
        _ => {
            let raw = error.without_snippet().to_string();
            strip_location_suffix(&raw).to_owned()
        }
    };
    let mut diagnostic = Diagnostic::at(path, source, span, message);
    diagnostic.help = help;
    diagnostic
}

fn friendly_type(ty: &str) -> String {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "bool" | "boolean" => "`true` or `false`".to_owned(),
        other => other.to_owned(),
    }
}

/// serde-saphyr appends ` at line X, column Y`; the diagnostic shows the position itself.
fn strip_location_suffix(raw: &str) -> &str {
    let raw = raw.trim();
    match raw.rfind(" at line ") {
        Some(pos) if raw[pos..].contains("column") => raw[..pos].trim_end(),
        _ => raw,
    }
}

/// Parses a mocks file for `sluice exec --mocks` (the shape of a test case's `mocks:`);
/// the error names the line and column.
pub fn parse_mocks(
    text: &str,
) -> Result<std::collections::BTreeMap<String, crate::MockConfig>, String> {
    serde_saphyr::from_str(text).map_err(|e| e.without_snippet().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedFlow, Diagnostic> {
        parse_flow(Path::new("flows/t.yaml"), text.to_owned())
    }

    const HEAD: &str = "trigger:\n  file: { path: inbox }\n";

    #[test]
    fn a_minimal_flow_parses_with_defaults() {
        let flow = parse(HEAD).unwrap();
        assert_eq!(flow.name, "t");
        let crate::TriggerConfig::File(file) = &flow.file.trigger.value else {
            panic!("a file trigger");
        };
        assert_eq!(file.path.value.as_str(), "inbox");
        assert_eq!(file.glob.value.as_str(), "*");
        assert_eq!(file.stable_checks, 3);
    }

    #[test]
    fn steps_of_every_kind_parse() {
        let text = format!(
            "{HEAD}steps:\n  - validate: order.v1\n  - transform: \"{{a: b}}\"\n  - set: {{ x: a }}\n  - script: \"payload.x = 1;\"\n  - filter: a\n  - route:\n      - when: a\n        to: s\n      - else: [s, t]\n  - to: s\n  - log: hi\nsinks:\n  s: {{ stdout: {{}} }}\n  t: {{ file: {{ path: out }} }}\n"
        );
        let flow = parse(&text).unwrap();
        let kinds: Vec<_> = flow.file.steps.iter().map(|s| s.value.kind()).collect();
        assert_eq!(
            kinds,
            [
                "validate",
                "transform",
                "set",
                "script",
                "filter",
                "route",
                "to",
                "log"
            ]
        );
    }

    #[test]
    fn unknown_key_has_position_and_suggestion() {
        let err = parse("trigger:\n  file: { path: inbox }\nsteps: []\nsinkz: {}\n").unwrap_err();
        assert_eq!(err.span.map(|s| (s.line, s.column)), Some((4, 1)), "{err}");
        assert!(err.message.contains("unknown key `sinkz`"), "{err}");
        assert!(
            err.help.iter().any(|h| h.contains("did you mean `sinks`")),
            "{err}"
        );
    }

    #[test]
    fn unknown_step_kind_is_named() {
        let err = parse(&format!("{HEAD}steps:\n  - tranform: a\n")).unwrap_err();
        assert!(
            err.message.contains("unknown step kind `tranform`"),
            "{err}"
        );
        assert_eq!(err.span.map(|s| s.line), Some(4), "{err}");
        assert!(err.help.iter().any(|h| h.contains("`transform`")), "{err}");
    }

    #[test]
    fn wrong_type_is_reported_at_the_value() {
        let err = parse(&format!("{HEAD}concurrency: lots\n")).unwrap_err();
        assert_eq!(err.span.map(|s| s.line), Some(3), "{err}");
        assert!(
            err.message.contains("wrong type") && err.message.contains("lots"),
            "{err}"
        );
    }

    #[test]
    fn missing_env_variable_is_a_positioned_error() {
        let err =
            parse("trigger:\n  file: { path: \"${env:SLUICE_SURELY_UNSET_VAR}\" }\n").unwrap_err();
        assert!(err.message.contains("SLUICE_SURELY_UNSET_VAR"), "{err}");
        assert_eq!(err.span.map(|s| s.line), Some(2), "{err}");
    }

    #[test]
    fn malformed_yaml_is_positioned() {
        let err = parse("trigger:\n  file: { path: inbox\nsteps: [\n").unwrap_err();
        assert!(err.span.is_some(), "{err}");
    }
}
