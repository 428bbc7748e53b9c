//! The checks a new flow version passes before it may run beside the others, and the
//! position-free key that decides whether a reload must restart the trigger.

use crate::flow::CompiledFlow;
use sluice_flow::{Diagnostic, LoadedFlow};
use std::path::Path;

/// The error for a second file claiming a flow name, pointing at its `name:` (or at the top
/// of the file when the name comes from the file stem).
pub fn duplicate_name(path: &Path, name: &str, first: &Path) -> Diagnostic {
    let message = format!(
        "flow name `{name}` is claimed by both {} and {}",
        first.display(),
        path.display()
    );
    let diagnostic = match sluice_flow::load_flow_file(path) {
        Ok(loaded) => {
            let span = loaded
                .file
                .name
                .as_ref()
                .and_then(sluice_flow::Span::of)
                .unwrap_or(sluice_flow::Span {
                    line: 1,
                    column: 1,
                    len: 1,
                });
            loaded.diagnostic(Some(span), message)
        }
        Err(_) => Diagnostic::file(path, message),
    };
    diagnostic.with_help("give one of them another `name:` (a name defaults to the file stem); the flow from the first file keeps running")
}

/// A cycle of `call`s that `flow` would close among the running flows, as a diagnostic at
/// its call step.
pub fn call_cycle(flow: &CompiledFlow) -> Option<Diagnostic> {
    let mut graph = crate::directory::call_graph();
    graph.insert(
        flow.name.clone(),
        flow.calls.iter().map(|(n, _)| n.clone()).collect(),
    );
    let cycle = crate::directory::find_cycle(&flow.name, &graph)?;
    let span = flow
        .calls
        .iter()
        .find(|(n, _)| cycle.get(1) == Some(n))
        .and_then(|(_, s)| *s);
    let diagnostic = match sluice_flow::load_flow_file(&flow.path) {
        Ok(loaded) => loaded.diagnostic(span, format!("a cycle of calls: {}", cycle.join(" → "))),
        Err(d) => d,
    };
    Some(diagnostic.with_help(
        "a cycle of `call`s would never end; break it by calling a flow that does not call back",
    ))
}

/// The error for a trigger whose exclusive resource another flow already holds.
fn trigger_clash(path: &Path, claim: &str, other_name: &str, other_path: &Path) -> Diagnostic {
    let message = format!(
        "`{claim}` is already taken by flow `{other_name}` ({}); {} cannot use it too",
        other_path.display(),
        path.display()
    );
    let diagnostic = match sluice_flow::load_flow_file(path) {
        Ok(loaded) => loaded.diagnostic(sluice_flow::Span::of(&loaded.file.trigger), message),
        Err(_) => Diagnostic::file(path, message),
    };
    diagnostic.with_help("give one of the two flows another path or method")
}

/// Why `path`'s flow `name` (claiming `claim`) may not run beside the others, if it may not.
pub(super) fn conflicts(
    state: &super::State,
    path: &Path,
    name: &str,
    claim: Option<&str>,
) -> Result<(), Diagnostic> {
    if let Some(claim) = claim {
        let clash = state.running.iter().find(|(other, f)| {
            *other != name && f.path != path && f.claim.as_deref() == Some(claim)
        });
        if let Some((other_name, other)) = clash {
            return Err(trigger_clash(path, claim, other_name, &other.path));
        }
    }
    if let Some(other) = state.running.get(name).filter(|f| f.path != path)
        && other.path.exists()
    {
        return Err(duplicate_name(path, name, &other.path));
    }
    Ok(())
}

/// What a flow's `trigger:` says, without where it says it.
///
/// The parsed `TriggerConfig` carries source positions in every `Spanned` field, so comparing
/// two of them restarts a trigger when only the lines above it moved. Instead the `trigger:`
/// node is read again from the same text as plain YAML data: positions, comments, quoting
/// and key order are gone, and every kind of trigger is compared the same way, including
/// fields added later. `${env:…}` references compare as written; the environment of a running
/// process does not change, so equal text means an equal configuration. `None` (never equal
/// to anything) when the text cannot be read as plain data, which only restarts the trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerKey(Option<serde_json::Value>);

impl TriggerKey {
    /// The key of a loaded flow's trigger.
    pub fn of(loaded: &LoadedFlow) -> TriggerKey {
        let data = serde_saphyr::from_str::<serde_json::Value>(&loaded.source)
            .ok()
            .and_then(|mut doc| doc.get_mut("trigger").map(serde_json::Value::take));
        TriggerKey(data)
    }

    /// Whether two versions configure their trigger identically.
    pub fn same_as(&self, other: &TriggerKey) -> bool {
        self.0.is_some() && self.0 == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: &str) -> TriggerKey {
        let loaded = sluice_flow::parse_flow(Path::new("flows/t.yaml"), source.to_owned())
            .expect("the test flow parses");
        TriggerKey::of(&loaded)
    }

    const SINKS: &str = "sinks:\n  out:\n    stdout: {}\n";

    #[test]
    fn moved_lines_and_comments_do_not_change_the_key() {
        let a = key(&format!(
            "trigger:\n  nats: {{ subject: orders, stream: ORDERS, durable: d }}\n{SINKS}"
        ));
        let b = key(&format!(
            "description: |\n  two\n  lines\n# a comment\ntrigger:\n  nats:\n    durable: d   # same\n    subject: \"orders\"\n    stream: ORDERS\n{SINKS}"
        ));
        assert!(a.same_as(&b));
    }

    #[test]
    fn a_changed_value_changes_the_key() {
        let a = key(&format!("trigger:\n  channel: {{ name: a }}\n{SINKS}"));
        let b = key(&format!("trigger:\n  channel: {{ name: b }}\n{SINKS}"));
        assert!(!a.same_as(&b));
    }
}
