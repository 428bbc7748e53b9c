//! The checks a new flow version passes before it may run beside the others. Their
//! diagnostics quote the text the version was built from ([`FlowSource`]), never the file
//! as it is on disk by then.

use crate::flow::{CompiledFlow, FlowSource};
use sluice_flow::Diagnostic;
use std::path::Path;

/// The error for a second file (`source`) claiming a flow name, pointing at its `name:` (or
/// at the top of the file when the name comes from the file stem).
pub fn duplicate_name(source: &FlowSource, name: &str, first: &Path) -> Diagnostic {
    let message = format!(
        "flow name `{name}` is claimed by both {} and {}",
        first.display(),
        source.path.display()
    );
    let span = source.name_span.unwrap_or(sluice_flow::Span {
        line: 1,
        column: 1,
        len: 1,
    });
    source.diagnostic(Some(span), message).with_help("give one of them another `name:` (a name defaults to the file stem); the flow from the first file keeps running")
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
    let diagnostic = flow
        .source
        .diagnostic(span, format!("a cycle of calls: {}", cycle.join(" → ")));
    Some(diagnostic.with_help(
        "a cycle of `call`s would never end; break it by calling a flow that does not call back",
    ))
}

/// The error for a trigger whose exclusive resource another flow already holds.
fn trigger_clash(
    source: &FlowSource,
    claim: &str,
    other_name: &str,
    other_path: &Path,
) -> Diagnostic {
    let message = format!(
        "`{claim}` is already taken by flow `{other_name}` ({}); {} cannot use it too",
        other_path.display(),
        source.path.display()
    );
    source
        .diagnostic(source.trigger_span, message)
        .with_help("give one of the two flows another path or method")
}

/// Why the flow `name` built from `source` (claiming `claim`) may not run beside the
/// others, if it may not.
pub(super) fn conflicts(
    state: &super::State,
    source: &FlowSource,
    name: &str,
    claim: Option<&str>,
) -> Result<(), Diagnostic> {
    let path = source.path.as_path();
    if let Some(claim) = claim {
        let clash = state.running.iter().find(|(other, f)| {
            *other != name && f.path != path && f.claim.as_deref() == Some(claim)
        });
        if let Some((other_name, other)) = clash {
            return Err(trigger_clash(source, claim, other_name, &other.path));
        }
    }
    if let Some(other) = state.running.get(name).filter(|f| f.path != path)
        && other.path.exists()
    {
        return Err(duplicate_name(source, name, &other.path));
    }
    Ok(())
}
