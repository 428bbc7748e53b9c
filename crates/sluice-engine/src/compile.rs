//! Turns a parsed flow file into a [`CompiledFlow`]: every expression, script, contract,
//! sink and trigger is built here, so a mistake is a load error with a position.

use crate::connector::{BuildContext, Connectors, Sink};
use crate::contract::{Contract, contract_path, load_contract};
use crate::error::ErrorKind;
use crate::expr::{Expr, ExprError, Template};
use crate::flow::CompiledFlow;
use crate::script::Sandbox;
use crate::steps::{self, Node, RouteAction, Steps};
use crate::testing::CompiledTest;
use sluice_flow::diagnostic::did_you_mean;
use sluice_flow::{
    Diagnostic, LoadedFlow, SinkConfig, Span, Spanned, StepConfig, Targets, Text, TriggerConfig,
};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

mod eip;
mod script;
mod size;

pub use size::{MAX_DEPTH, MAX_STEPS};

/// Where a flow's references resolve.
#[derive(Clone, Debug)]
pub struct Folders {
    /// `--schemas`: contract names resolve here.
    pub schemas: PathBuf,
    /// `--scripts`: script paths not found relative to the working directory resolve here.
    pub scripts: PathBuf,
}

impl Default for Folders {
    fn default() -> Self {
        Folders {
            schemas: PathBuf::from("schemas"),
            scripts: PathBuf::from("scripts"),
        }
    }
}

/// Compiles a flow, collecting every problem rather than stopping at the first.
pub fn compile(
    flow: &LoadedFlow,
    folders: &Folders,
    connectors: &dyn Connectors,
) -> Result<CompiledFlow, Vec<Diagnostic>> {
    let mut cx = Compiler {
        flow,
        folders,
        diagnostics: Vec::new(),
        warnings: Vec::new(),
        contracts: HashMap::new(),
        dependencies: Vec::new(),
        sandbox: Arc::new(Sandbox::new(&flow.name, &flow.file.script_limits)),
        sink_map: HashMap::new(),
        calls: Vec::new(),
        stateful: Vec::new(),
    };
    let build = BuildContext { flow };
    let file = &flow.file;
    cx.check_script_limits();

    let trigger = match connectors.trigger(&file.trigger, &build) {
        Ok(trigger) => Some(trigger),
        Err(d) => {
            cx.diagnostics.push(d);
            None
        }
    };
    let watched = watched_folder(&file.trigger.value);

    let mut sinks = HashMap::new();
    for (name, config) in &file.sinks {
        cx.check_sink_folder(config, watched.as_deref(), &format!("sink `{name}`"));
        match connectors.sink(name, config, &build) {
            Ok(sink) => {
                sinks.insert(name.clone(), sink);
            }
            Err(d) => cx.diagnostics.push(d),
        }
    }
    let dead_letter = file.errors.dead_letter.as_ref().and_then(|config| {
        cx.check_sink_folder(config, watched.as_deref(), "the dead letter");
        connectors
            .sink("dead_letter", config, &build)
            .map_err(|d| cx.diagnostics.push(d))
            .ok()
    });

    let input_contract = file.contract.input.as_ref().and_then(|c| cx.contract(c));
    let output_contract = file.contract.output.as_ref().and_then(|c| cx.contract(c));
    let sink_names: Vec<&str> = file.sinks.keys().map(String::as_str).collect();
    cx.sink_map = sinks.clone();
    // A flow past the size limits is not compiled any further: its steps could be many.
    let steps = if cx.check_size() {
        cx.steps(&file.steps, "steps", &sink_names)
    } else {
        Steps::default()
    };
    let breakers = file
        .errors
        .circuit_breaker
        .as_ref()
        .and_then(|config| cx.breakers(config, &sink_names, &sinks));

    let mut tests = Vec::new();
    for case in &file.tests {
        if let Some(test) = cx.test(case, &sink_names) {
            tests.push(test);
        }
    }

    if let Some(c) = &file.concurrency
        && c.value == 0
    {
        cx.error(
            Span::of(c),
            "`concurrency` must be at least 1",
            "use 1 or more",
        );
    }
    if let Some(q) = &file.queue
        && q.value == 0
    {
        cx.error(Span::of(q), "`queue` must be at least 1", "use 1 or more");
    }
    if file.errors.retry.attempts == 0 {
        cx.diagnostics.push(
            flow.diagnostic(
                None,
                "`errors.retry.attempts` must be at least 1 (it counts the first try)",
            )
            .with_help("use `attempts: 1` for no retries"),
        );
    }

    if !cx.diagnostics.is_empty() {
        return Err(cx.diagnostics);
    }
    let concurrency = file
        .concurrency
        .as_ref()
        .map(|c| c.value)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let queue = file
        .queue
        .as_ref()
        .map(|q| q.value)
        .unwrap_or(concurrency * 4);
    let version = version_hash(&flow.source, &cx.dependencies);
    Ok(CompiledFlow {
        name: flow.name.clone(),
        version,
        path: flow.path.clone(),
        description: file.description.as_ref().map(|d| d.0.clone()),
        trigger_config: file.trigger.value.clone(),
        trigger: Mutex::new(trigger),
        concurrency,
        queue,
        input_contract,
        output_contract,
        steps,
        sinks,
        dead_letter,
        dead_letter_folder: file
            .errors
            .dead_letter
            .as_ref()
            .and_then(|d| match &d.value {
                SinkConfig::File(f) => Some(PathBuf::from(f.path.value.as_str())),
                _ => None,
            }),
        dead_letter_answered: file.errors.dead_letter_answered,
        retry: file.errors.retry.clone(),
        tests,
        dependencies: cx.dependencies,
        breakers,
        calls: cx.calls,
        stateful: cx.stateful,
        warnings: cx.warnings,
    })
}

/// The folder a trigger scans, if it scans one.
pub fn watched_folder(trigger: &TriggerConfig) -> Option<PathBuf> {
    match trigger {
        TriggerConfig::File(file) => Some(normalize(Path::new(file.path.value.as_str()))),
        _ => None,
    }
}

/// Makes a path absolute and removes `.` and `..` without touching the filesystem.
pub fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn version_hash(source: &str, dependencies: &[PathBuf]) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(source.as_bytes());
    for dep in dependencies {
        feed(dep.to_string_lossy().as_bytes());
        feed(&std::fs::read(dep).unwrap_or_default());
    }
    format!("{hash:016x}")[..12].to_owned()
}

struct Compiler<'a> {
    flow: &'a LoadedFlow,
    folders: &'a Folders,
    diagnostics: Vec<Diagnostic>,
    /// Problems that do not stop the flow (shown by `sluice check`).
    warnings: Vec<Diagnostic>,
    contracts: HashMap<String, Arc<Contract>>,
    dependencies: Vec<PathBuf>,
    sandbox: Arc<Sandbox>,
    sink_map: HashMap<String, Arc<dyn Sink>>,
    calls: Vec<(String, Option<Span>)>,
    stateful: Vec<Arc<dyn steps::Stateful>>,
}

impl Compiler<'_> {
    fn error(&mut self, span: Option<Span>, message: impl Into<String>, help: impl Into<String>) {
        let d = self.flow.diagnostic(span, message).with_help(help);
        self.diagnostics.push(d);
    }

    fn depend(&mut self, path: PathBuf) {
        if !self.dependencies.contains(&path) {
            self.dependencies.push(path);
        }
    }

    fn contract(&mut self, reference: &Spanned<Text>) -> Option<Arc<Contract>> {
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

    fn check_sink_folder(
        &mut self,
        config: &Spanned<SinkConfig>,
        watched: Option<&Path>,
        what: &str,
    ) {
        let (SinkConfig::File(file), Some(watched)) = (&config.value, watched) else {
            return;
        };
        let target = normalize(Path::new(file.path.value.as_str()));
        if target.starts_with(watched) {
            self.error(
                Span::of(&file.path),
                format!(
                    "{what} writes into `{}`, which is the flow's own watched folder or inside it",
                    file.path.value
                ),
                "write somewhere outside the trigger's folder, or the flow would read its own output",
            );
        }
    }

    fn expr(&mut self, text: &Spanned<Text>) -> Option<Expr> {
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

    fn expr_error(&mut self, text: &Spanned<Text>, e: &ExprError, help: &str) {
        let (line, column) = line_col(text.value.as_str(), e.offset);
        let span = position_in_scalar(&self.flow.source, Span::of(text), line, column);
        let d = self
            .flow
            .diagnostic(span, e.message.clone())
            .with_help(help);
        self.diagnostics.push(d);
    }

    fn targets(&mut self, targets: &Spanned<Targets>, sinks: &[&str]) -> Option<Vec<String>> {
        let mut ok = true;
        for name in &targets.value.0 {
            if !sinks.contains(&name.as_str()) {
                ok = false;
                self.unknown_sink(targets, name, sinks, "route to");
            }
        }
        ok.then(|| targets.value.0.clone())
    }

    fn steps(&mut self, list: &[Spanned<StepConfig>], prefix: &str, sinks: &[&str]) -> Steps {
        let mut steps = Steps::default();
        let mut i = 0;
        while i < list.len() {
            let step = &list[i];
            let label = format!("{prefix}[{i}] ({})", step.value.kind());
            let path = format!("{prefix}[{i}]");
            if let StepConfig::Try(body) = &step.value {
                // `try` and the `catch` after it compile into one step.
                let handler = match list.get(i + 1).map(|s| &s.value) {
                    Some(StepConfig::Catch(handler)) => Some(handler),
                    _ => None,
                };
                if let Some(built) = self.try_catch(step, body, handler, &path, sinks) {
                    steps.push_async(&self.flow.name, label, built);
                }
                i += if handler.is_some() { 2 } else { 1 };
                continue;
            }
            if let StepConfig::Catch(_) = &step.value {
                self.error(
                    Span::of(step),
                    "`catch` must come right after a `try` step",
                    "put the steps that may fail in a `- try: [...]` step just before this one",
                );
                i += 1;
                continue;
            }
            let top = prefix == "steps";
            if !top && matches!(step.value, StepConfig::Split(_) | StepConfig::Aggregate(_)) {
                self.error(
                    Span::of(step),
                    format!(
                        "`{}` may only be a top-level step, not inside `route` or `try`",
                        step.value.kind()
                    ),
                    "move it to the flow's `steps:` list",
                );
                i += 1;
                continue;
            }
            if let Some(built) = self.step(step, &path, sinks) {
                steps.push_node(&self.flow.name, label, built);
            }
            i += 1;
        }
        steps
    }

    fn step(&mut self, step: &Spanned<StepConfig>, path: &str, sinks: &[&str]) -> Option<Node> {
        if let Some(node) = self.eip_step(step, path, sinks) {
            return node;
        }
        Some(Node::Sync(match &step.value {
            StepConfig::Validate(name) => Box::new(steps::Validate::new(self.contract(name)?)),
            StepConfig::Transform(text) => Box::new(steps::Transform::new(self.expr(text)?)),
            StepConfig::Filter(text) => Box::new(steps::Filter::new(self.expr(text)?)),
            StepConfig::Set(fields) => {
                if fields.is_empty() {
                    self.error(
                        Span::of(step),
                        "`set` has no fields",
                        "add `field: <jmespath>` entries",
                    );
                    return None;
                }
                let mut compiled = Vec::new();
                for (field, text) in fields {
                    compiled.push((field.clone(), self.expr(text)?));
                }
                Box::new(steps::Set::new(compiled))
            }
            StepConfig::Script(text) => self.script(text)?,
            StepConfig::To(targets) => Box::new(steps::To::new(self.targets(targets, sinks)?)),
            StepConfig::Log(text) => match Template::compile(text.value.as_str()) {
                Ok(t) => Box::new(steps::Log::new(t)),
                Err(e) => {
                    self.expr_error(text, &e, "a template is text with `{{ jmespath }}` holes");
                    return None;
                }
            },
            StepConfig::Reply(reply) => {
                let status = match &reply.status {
                    Some(status) if !(100..=599).contains(&status.value) => {
                        self.error(
                            Span::of(status),
                            format!("`{}` is not an HTTP status", status.value),
                            "use a status from 100 to 599",
                        );
                        return None;
                    }
                    Some(status) => Some(status.value),
                    None => None,
                };
                let mut headers = Vec::new();
                for (name, value) in &reply.headers {
                    match Template::compile(value.value.as_str()) {
                        Ok(t) => headers.push((name.clone(), t)),
                        Err(e) => {
                            self.expr_error(
                                value,
                                &e,
                                "a header value is text with `{{ jmespath }}` holes",
                            );
                            return None;
                        }
                    }
                }
                Box::new(steps::Reply::new(status, headers))
            }
            StepConfig::Enrich(enrich) => self.enrich(enrich)?,
            StepConfig::Route(arms) => {
                let mut compiled = Vec::new();
                let mut failed = false;
                for (i, arm) in arms.iter().enumerate() {
                    let label = format!("{path}.route[{i}]");
                    let a = &arm.value;
                    let span = Span::of(arm);
                    let action = match (&a.when, &a.to, &a.steps, &a.otherwise) {
                        (Some(_), Some(to), None, None) => self
                            .targets(to, sinks)
                            .map(|t| RouteAction::Deliver(t.into())),
                        (Some(_), None, Some(nested), None) => Some(RouteAction::Steps(
                            self.steps(nested, &format!("{label}.steps"), sinks),
                        )),
                        (None, None, None, Some(to)) => {
                            if i + 1 != arms.len() {
                                self.error(
                                    span,
                                    "`else` must be the last arm of a route",
                                    "move the `else` arm to the end",
                                );
                            }
                            self.targets(to, sinks)
                                .map(|t| RouteAction::Deliver(t.into()))
                        }
                        _ => {
                            self.error(
                                span,
                                "a route arm is `{when, to}`, `{when, steps}` or `{else}`",
                                "give each arm a `when:` with either `to:` or `steps:`, and end with `else:` if needed",
                            );
                            None
                        }
                    };
                    let when = match &a.when {
                        Some(text) => self.expr(text).map(Some),
                        None => Some(None),
                    };
                    match (when, action) {
                        (Some(when), Some(action)) => {
                            compiled.push((label, steps::RouteArm { when, action }))
                        }
                        _ => failed = true,
                    }
                }
                if arms.is_empty() {
                    self.error(
                        Span::of(step),
                        "`route` has no arms",
                        "add `- when: <jmespath>` arms",
                    );
                    return None;
                }
                if failed {
                    return None;
                }
                return Some(Node::Sync(Box::new(steps::Route::new(compiled))));
            }
            // Compiled by `eip_step` (or, for `try`/`catch`, by `steps`).
            _ => return None,
        }))
    }

    fn enrich(&mut self, config: &sluice_flow::EnrichConfig) -> Option<Box<dyn steps::Step>> {
        let headers: Vec<(String, String)> = config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.value.0.clone()))
            .collect();
        let call = match crate::http_client::HttpCall::new(
            config.method,
            config.url.value.as_str(),
            &headers,
            config.timeout.0,
        ) {
            Ok(call) => call,
            Err(e) => {
                let at = if e.which == "url" {
                    &config.url
                } else {
                    &config.headers[&e.which]
                };
                self.expr_error(at, &e.error, e.help);
                return None;
            }
        };
        let body = match &config.body {
            Some(text) => Some(self.expr(text)?),
            None => None,
        };
        let mut query = Vec::new();
        for (name, text) in &config.query {
            query.push((name.clone(), self.expr(text)?));
        }
        if config.into.value.trim().is_empty() {
            self.error(
                Span::of(&config.into),
                "`into` is empty",
                "name the payload field that receives the answer",
            );
            return None;
        }
        Some(Box::new(steps::Enrich::new(
            &self.flow.name,
            call,
            body,
            query,
            config.into.value.0.clone(),
            self.flow.file.errors.retry.clone(),
        )))
    }

    fn test(
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

/// 0-based line and column of a character offset in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 0;
    let mut column = 0;
    for c in text.chars().take(offset) {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Maps a (0-based) line and column inside a YAML scalar's value to a file position; see
/// [`sluice_flow::diagnostic::position_in_scalar`], which rebuilds the value from the text.
pub fn position_in_scalar(
    source: &str,
    at: Option<Span>,
    line: usize,
    column: usize,
) -> Option<Span> {
    sluice_flow::diagnostic::position_in_scalar(source, at, line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_inside_scalars() {
        let source =
            "steps:\n  - filter: \"a ==\"\n  - script: |\n      let a = 1;\n      let = 2;\n";
        let quoted = Span {
            line: 2,
            column: 13,
            len: 1,
        };
        assert_eq!(
            position_in_scalar(source, Some(quoted), 0, 3).map(|s| (s.line, s.column)),
            Some((2, 17))
        );
        let block = Span {
            line: 4,
            column: 7,
            len: 1,
        };
        assert_eq!(
            position_in_scalar(source, Some(block), 1, 4).map(|s| (s.line, s.column)),
            Some((5, 11))
        );
        assert_eq!(
            position_in_scalar(source, Some(block), 0, 4).map(|s| (s.line, s.column)),
            Some((4, 11))
        );
    }
}
