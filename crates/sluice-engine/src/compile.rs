//! Turns a parsed flow file into a [`CompiledFlow`]: every expression, script, contract,
//! sink and trigger is built here, so a mistake is a load error with a position.
//!
//! The flow-level parts are here; each step kind's compile code sits beside its runtime in
//! `steps/<kind>.rs` (listed in `steps/kinds.rs`), each connector's in sluice-connectors.

use crate::connector::{BuildContext, Connectors, SinkInfo};
use crate::flow::{CompiledFlow, FlowSource};
use crate::script::Sandbox;
use crate::steps::Steps;
use sluice_flow::{Diagnostic, LoadedFlow, Span};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod breakers;
mod compiler;
mod limits;
mod position;
mod size;

pub(crate) use compiler::Compiler;
pub use compiler::StepInfo;

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
        catch_depth: 0,
        step_names: HashMap::new(),
        step_list: Vec::new(),
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
    let trigger_info = connectors.trigger_info(&file.trigger, &build);
    let watched = trigger_info.watched_folder.as_deref();

    let mut sinks = HashMap::new();
    for (name, config) in &file.sinks {
        let info = connectors.sink_info(config);
        cx.check_sink_folder(&info, watched, &format!("sink `{name}`"));
        match connectors.sink(name, config, &build) {
            Ok(sink) => {
                sinks.insert(name.clone(), sink);
            }
            Err(d) => cx.diagnostics.push(d),
        }
    }
    let dead_letter_info = file
        .errors
        .dead_letter
        .as_ref()
        .map(|c| connectors.sink_info(c));
    let dead_letter = file.errors.dead_letter.as_ref().and_then(|config| {
        let info = dead_letter_info.clone().unwrap_or_default();
        cx.check_sink_folder(&info, watched, "the dead letter");
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

    let order_by = file.order_by.as_ref().and_then(|text| cx.expr(text));
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
    // Ordered messages wait for the earlier ones of their key in the workers' lanes.
    let in_place = order_by.is_none()
        && steps.in_place()
        && sinks.values().all(|sink| sink.in_place())
        && dead_letter.as_ref().is_none_or(|sink| sink.in_place());
    let sink_latency = sinks
        .keys()
        .map(String::as_str)
        .chain(dead_letter.as_ref().map(|_| "dead_letter"))
        .map(|sink| {
            let histogram = metrics::histogram!(
                "sluice_sink_write_duration_seconds",
                "flow" => flow.name.clone(),
                "sink" => sink.to_owned()
            );
            (sink.to_owned(), histogram)
        })
        .collect();
    Ok(CompiledFlow {
        sink_latency,
        name: flow.name.clone(),
        version,
        path: flow.path.clone(),
        description: file.description.as_ref().map(|d| d.0.clone()),
        owner: file.owner.as_ref().map(|o| o.0.clone()),
        tags: file.tags.iter().map(|t| t.0.clone()).collect(),
        trigger_info,
        source: FlowSource::of(flow),
        trigger: Mutex::new(trigger),
        concurrency,
        queue,
        input_contract,
        output_contract,
        steps,
        sinks,
        dead_letter,
        dead_letter_folder: dead_letter_info
            .and_then(|info| info.folder)
            .map(|folder| PathBuf::from(folder.value.as_str())),
        dead_letter_answered: file.errors.dead_letter_answered,
        retry: file.errors.retry.clone(),
        tests,
        dependencies: cx.dependencies,
        breakers,
        calls: cx.calls,
        forks: file
            .steps
            .iter()
            .map(|s| s.value.kind())
            .find(|k| matches!(*k, "split" | "aggregate")),
        stateful: cx.stateful,
        warnings: cx.warnings,
        in_place,
        order_by,
        step_list: cx.step_list,
    })
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

impl Compiler<'_> {
    /// Refuses a sink that writes into the folder the flow's own trigger scans.
    fn check_sink_folder(&mut self, sink: &SinkInfo, watched: Option<&Path>, what: &str) {
        let (Some(folder), Some(watched)) = (&sink.folder, watched) else {
            return;
        };
        let target = sluice_flow::paths::normalize(Path::new(folder.value.as_str()));
        if target.starts_with(watched) {
            self.error(
                Span::of(folder),
                format!(
                    "{what} writes into `{}`, which is the flow's own watched folder or inside it",
                    folder.value
                ),
                "write somewhere outside the trigger's folder, or the flow would read its own output",
            );
        }
    }
}
