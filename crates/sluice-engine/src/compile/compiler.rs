//! The compiler's state for one flow, and the helpers every step's compile code uses
//! (`steps/<kind>.rs`): positioned errors, expressions, contracts, sink names, nested steps.

use super::Folders;
use super::position::line_col;
use crate::connector::Sink;
use crate::contract::{Contract, contract_path, load_contract};
use crate::error::ErrorKind;
use crate::expr::{Expr, ExprError};
use crate::script::Sandbox;
use crate::steps::{self, Steps};
use crate::testing::CompiledTest;
use sluice_flow::diagnostic::did_you_mean;
use sluice_flow::diagnostic::position_in_scalar;
use sluice_flow::{FlowStep, Diagnostic, LoadedFlow, Span, Spanned, StepConfig, Targets, Text};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What compiling one flow has found and built so far.
pub(crate) struct Compiler<'a> {
    pub(crate) flow: &'a LoadedFlow,
    pub(crate) folders: &'a Folders,
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Problems that do not stop the flow (shown by `sluice check`).
    pub(crate) warnings: Vec<Diagnostic>,
    pub(crate) contracts: HashMap<String, Arc<Contract>>,
    pub(crate) dependencies: Vec<PathBuf>,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) sink_map: HashMap<String, Arc<dyn Sink>>,
    pub(crate) calls: Vec<(String, Option<Span>)>,
    pub(crate) stateful: Vec<Arc<dyn steps::Stateful>>,
    /// Step names seen so far, with where: a name is unique within a flow.
    pub(crate) step_names: HashMap<String, Option<Span>>,
    /// Every step, nested ones included, in the order written (for `/api/flows`).
    pub(crate) step_list: Vec<StepInfo>,
}

/// A step of a flow as the admin API lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepInfo {
    /// What metrics, traces and errors call it: its name, or its position and kind
    /// (`steps[2] (script)`).
    pub label: String,
    /// The step kind.
    pub kind: &'static str,
    /// `name:`, when written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Compiler<'_> {
    pub(crate) fn error(
        &mut self,
        span: Option<Span>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let d = self.flow.diagnostic(span, message).with_help(help);
        self.diagnostics.push(d);
    }

    pub(crate) fn depend(&mut self, path: PathBuf) {
        if !self.dependencies.contains(&path) {
            self.dependencies.push(path);
        }
    }

    pub(crate) fn contract(&mut self, reference: &Spanned<Text>) -> Option<Arc<Contract>> {
        let name = reference.value.as_str();
        self.depend(contract_path(name, &self.folders.schemas));
        if let Some(c) = self.contracts.get(name) {
            return Some(c.clone());
        }
        let flow = self.flow;
        let diag = |span: Option<Span>, m: String| flow.diagnostic(span, m);
        match load_contract(name, &self.folders.schemas, &diag, Span::of(reference)) {
            Ok(contract) => {
                self.contracts.insert(name.to_owned(), contract.clone());
                Some(contract)
            }
            Err(d) => {
                self.diagnostics.push(d);
                None
            }
        }
    }

    pub(crate) fn expr(&mut self, text: &Spanned<Text>) -> Option<Expr> {
        match Expr::compile(text.value.as_str()) {
            Ok(expr) => Some(expr),
            Err(e) => {
                self.expr_error(
                    text,
                    &e,
                    "check the JMESPath syntax: https://jmespath.org/specification.html",
                );
                None
            }
        }
    }

    pub(crate) fn expr_error(&mut self, text: &Spanned<Text>, e: &ExprError, help: &str) {
        let (line, column) = line_col(text.value.as_str(), e.offset);
        let span = position_in_scalar(&self.flow.source, Span::of(text), line, column);
        let d = self
            .flow
            .diagnostic(span, e.message.clone())
            .with_help(help);
        self.diagnostics.push(d);
    }

    pub(crate) fn targets(
        &mut self,
        targets: &Spanned<Targets>,
        sinks: &[&str],
    ) -> Option<Vec<String>> {
        let mut ok = true;
        for name in &targets.value.0 {
            if !sinks.contains(&name.as_str()) {
                ok = false;
                self.unknown_sink(targets, name, sinks, "route to");
            }
        }
        ok.then(|| targets.value.0.clone())
    }

    /// Compiles a list of steps (`prefix` is where it sits: `steps`, `steps[2].try`); a
    /// `try` and the `catch` after it become one step.
    pub(crate) fn steps(
        &mut self,
        list: &[Spanned<FlowStep>],
        prefix: &str,
        sinks: &[&str],
    ) -> Steps {
        let mut steps = Steps::default();
        let mut i = 0;
        while i < list.len() {
            let step = &list[i];
            // A named step is known by its name (stable across edits), else by its position.
            let (label, path) = match self.step_name(step) {
                Some(name) => (name.clone(), name),
                None => (
                    format!("{prefix}[{i}] ({})", step.value.kind()),
                    format!("{prefix}[{i}]"),
                ),
            };
            self.step_list.push(StepInfo {
                label: label.clone(),
                kind: step.value.kind(),
                name: step.value.name.as_ref().map(|n| n.value.0.clone()),
            });
            let mut taken = 1;
            let built = match &step.value.config {
                StepConfig::Try(body) => {
                    let handler = match list.get(i + 1).map(|s| &s.value.config) {
                        Some(StepConfig::Catch(handler)) => Some(handler),
                        _ => None,
                    };
                    if handler.is_some() {
                        taken = 2;
                        // The `catch` is part of this step; its name is still its own.
                        self.step_name(&list[i + 1]);
                    }
                    steps::try_catch::compile(self, step, body, handler, &path, sinks)
                }
                StepConfig::Split(_) | StepConfig::Aggregate(_) if prefix != "steps" => {
                    self.error(
                        Span::of(step),
                        format!(
                            "`{}` may only be a top-level step, not inside `route` or `try`",
                            step.value.kind()
                        ),
                        "move it to the flow's `steps:` list",
                    );
                    None
                }
                _ => steps::kinds::compile(self, step, &path, sinks),
            };
            if let Some(step) = built {
                steps.push(&self.flow.name, label, step);
            }
            i += taken;
        }
        steps
    }

    /// The step's `name:`, checked (its spelling, and unique within the flow); `None` when
    /// it has none or the name is refused (reported).
    pub(crate) fn step_name(&mut self, step: &Spanned<FlowStep>) -> Option<String> {
        let name = step.value.name.as_ref()?;
        let text = name.value.as_str();
        let span = Span::of(name);
        let valid = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.error(
                span,
                format!("`{text}` is not a valid step name"),
                "use letters, digits, `-`, `_` and `.` only, e.g. `name: price-lookup`",
            );
            return None;
        }
        if let Some(first) = self.step_names.get(text) {
            let at = match first {
                Some(first) => format!("line {} column {}", first.line, first.column),
                None => "another step".to_owned(),
            };
            let here = span
                .map(|s| format!("line {} column {}", s.line, s.column))
                .unwrap_or_else(|| "here".to_owned());
            self.error(
                span,
                format!("step name `{text}` is used twice: at {at} and at {here}"),
                "step names are unique within a flow (metrics, traces, errors and mocks use them); rename one of the two",
            );
            return None;
        }
        self.step_names.insert(text.to_owned(), span);
        Some(text.to_owned())
    }

    pub(crate) fn unknown_sink<T>(
        &mut self,
        at: &Spanned<T>,
        name: &str,
        sinks: &[&str],
        what: &str,
    ) {
        let mut d = self
            .flow
            .diagnostic(Span::of(at), format!("{what} undefined sink `{name}`"));
        if let Some(close) = did_you_mean(name, sinks.iter().copied()) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        d = d.with_help(if sinks.is_empty() {
            "the flow defines no sinks; add one under `sinks:`".to_owned()
        } else {
            format!("defined sinks: {}", sinks.join(", "))
        });
        self.diagnostics.push(d);
    }

    /// An expression whose position falls back to the step's when it has none (shorthand).
    pub(crate) fn expr_at(&mut self, text: &Spanned<Text>, step: Option<Span>) -> Option<Expr> {
        if Span::of(text).is_some() {
            return self.expr(text);
        }
        match Expr::compile(text.value.as_str()) {
            Ok(expr) => Some(expr),
            Err(e) => {
                self.error(
                    step,
                    e.message,
                    "check the JMESPath syntax: https://jmespath.org/specification.html",
                );
                None
            }
        }
    }

    pub(crate) fn optional_expr(
        &mut self,
        text: &Option<Spanned<Text>>,
    ) -> Result<Option<Expr>, ()> {
        match text {
            None => Ok(None),
            Some(t) => self.expr(t).map(Some).ok_or(()),
        }
    }

    pub(super) fn test(
        &mut self,
        case: &Spanned<sluice_flow::TestCase>,
        sinks: &[&str],
    ) -> Option<CompiledTest> {
        let expect = &case.value.expect;
        let mut ok = true;
        if let Some(sink) = &expect.sink
            && !sinks.contains(&sink.value.as_str())
        {
            let mut d = self.flow.diagnostic(
                Span::of(sink),
                format!(
                    "test `{}` expects undefined sink `{}`",
                    case.value.name, sink.value
                ),
            );
            if let Some(close) = did_you_mean(&sink.value, sinks.iter().copied()) {
                d = d.with_help(format!("did you mean `{close}`?"));
            }
            self.diagnostics.push(d);
            ok = false;
        }
        let error = match &expect.error {
            Some(kind) => match ErrorKind::parse(kind.value.as_str()) {
                Some(k) => Some(k),
                None => {
                    self.error(
                        Span::of(kind),
                        format!("unknown error kind `{}`", kind.value),
                        "expected one of contract, transform, script, sink, timeout, trigger, throttle",
                    );
                    ok = false;
                    None
                }
            },
            None => None,
        };
        ok.then(|| CompiledTest {
            name: case.value.name.0.clone(),
            span: Span::of(case),
            input: case.value.input.clone(),
            meta: case.value.meta.clone(),
            sink: expect.sink.as_ref().map(|s| s.value.0.clone()),
            payload: expect.payload.clone(),
            filtered: expect.filtered,
            error,
        })
    }
}
