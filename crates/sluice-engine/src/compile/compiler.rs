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
use crate::testing::{CompiledTest, ExpectedError, ExpectedSent};
use sluice_flow::diagnostic::did_you_mean;
use sluice_flow::diagnostic::position_in_scalar;
use sluice_flow::{Diagnostic, FlowStep, LoadedFlow, Span, Spanned, StepConfig, Targets, Text};
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
    /// How many `catch` handlers enclose the steps being compiled: a `reply` there ends the
    /// message (the error is answered; the steps after the `catch` are for the good path).
    pub(crate) catch_depth: u32,
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
    /// Where it is (`steps[2]`, `steps[3].route[0].steps[1]`; under a named step, from
    /// that name).
    pub position: String,
}

impl StepInfo {
    /// What a test's `mocks:` and `sent:` call the step: its name, else its position.
    pub fn key(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.position)
    }
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
            let position = format!("{prefix}[{i}]");
            let (label, path) = match self.step_name(step) {
                Some(name) => (name.clone(), name),
                None => (
                    format!("{position} ({})", step.value.kind()),
                    position.clone(),
                ),
            };
            self.step_list.push(StepInfo {
                label: label.clone(),
                kind: step.value.kind(),
                name: step.value.name.as_ref().map(|n| n.value.0.clone()),
                position,
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
        let name = &case.value.name;
        let before = self.diagnostics.len();
        if let Some(sink) = &expect.sink {
            self.test_sink(name, sink, sinks);
        }
        for delivery in expect.deliveries.iter().flatten() {
            self.test_sink(name, &delivery.value.sink, sinks);
        }
        let error = expect.error.as_ref().and_then(|e| {
            let kind = self.error_kind(e.value.kind(), Span::of(e))?;
            let (pointer, message) = match &e.value {
                sluice_flow::ErrorExpectation::Kind(_) => (None, None),
                sluice_flow::ErrorExpectation::Detail(d) => (
                    d.pointer.as_ref().map(|p| p.0.clone()),
                    d.message.as_ref().map(|m| m.0.clone()),
                ),
            };
            Some(ExpectedError {
                kind,
                pointer,
                message,
            })
        });
        let mut mocks = std::collections::BTreeMap::new();
        for (key, mock) in &case.value.mocks {
            self.mock_target(name, key, Span::of(mock), sinks, "mocks");
            let error = match &mock.value.error {
                Some(kind) => self.error_kind(kind.value.as_str(), Span::of(kind)),
                None => None,
            };
            mocks.insert(
                key.clone(),
                crate::probe::Mock {
                    body: mock.value.body.clone(),
                    status: mock.value.status,
                    delay: mock.value.delay.map(|d| d.0),
                    error,
                },
            );
        }
        let mut sent = Vec::new();
        for expected in expect.sent.iter().flat_map(|s| s.0.iter()) {
            let to = expected.sink.value.as_str();
            self.mock_target(name, to, Span::of(&expected.sink), sinks, "sent");
            sent.push(ExpectedSent {
                to: to.to_owned(),
                payload: expected.payload.clone(),
                count: expected.count,
            });
        }
        (self.diagnostics.len() == before).then(|| CompiledTest {
            name: name.0.clone(),
            span: Span::of(case),
            input: case.value.input.clone(),
            meta: case.value.meta.clone(),
            sink: expect.sink.as_ref().map(|s| s.value.0.clone()),
            payload: expect.payload.clone(),
            filtered: expect.filtered,
            error,
            status: expect.status,
            headers: expect.headers.clone(),
            deliveries: expect.deliveries.as_ref().map(|list| {
                list.iter()
                    .map(|d| (d.value.sink.value.0.clone(), d.value.payload.clone()))
                    .collect()
            }),
            sent,
            mocks,
        })
    }

    fn test_sink(&mut self, test: &str, sink: &Spanned<Text>, sinks: &[&str]) {
        if sinks.contains(&sink.value.as_str()) {
            return;
        }
        let mut d = self.flow.diagnostic(
            Span::of(sink),
            format!("test `{test}` expects undefined sink `{}`", sink.value),
        );
        if let Some(close) = did_you_mean(&sink.value, sinks.iter().copied()) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        self.diagnostics.push(d);
    }

    fn error_kind(&mut self, kind: &str, span: Option<Span>) -> Option<ErrorKind> {
        let parsed = ErrorKind::parse(kind);
        if parsed.is_none() {
            self.error(
                span,
                format!("unknown error kind `{kind}`"),
                "expected one of contract, transform, script, sink, timeout, trigger, throttle",
            );
        }
        parsed
    }

    /// A `mocks:` key or `sent:` target names a sink, an `enrich` or `call` step of this
    /// flow (by name, else position), or a step of a called flow (`<flow>/<step>`).
    fn mock_target(
        &mut self,
        test: &str,
        key: &str,
        span: Option<Span>,
        sinks: &[&str],
        what: &str,
    ) {
        if key.contains('/') || sinks.contains(&key) {
            return;
        }
        let mockable: Vec<&StepInfo> = self
            .step_list
            .iter()
            .filter(|s| matches!(s.kind, "enrich" | "call"))
            .collect();
        if mockable.iter().any(|s| s.key() == key) {
            return;
        }
        if let Some(named) = mockable
            .iter()
            .find(|s| s.position == key && s.name.is_some())
        {
            let name = named.key().to_owned();
            self.error(
                span,
                format!("test `{test}`: the step at `{key}` is named `{name}`"),
                format!("write `{name}` in `{what}:`: a named step is known by its name"),
            );
            return;
        }
        let mut names: Vec<String> = mockable.iter().map(|s| s.key().to_owned()).collect();
        names.extend(sinks.iter().map(|s| (*s).to_owned()));
        let mut d = self.flow.diagnostic(
            span,
            format!("test `{test}`: `{what}` names `{key}`, which is no sink and no `enrich` or `call` step of this flow"),
        );
        if let Some(close) = did_you_mean(key, names.iter().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        d = d.with_help(if names.is_empty() {
            "this flow has no sink and no `enrich` or `call` step to mock".to_owned()
        } else {
            format!(
                "sinks and steps that can be mocked: {} (a step of a called flow: `<flow>/<step>`)",
                names.join(", ")
            )
        });
        self.diagnostics.push(d);
    }
}
