//! The set of running flows: start, hot reload, stop. One flow file → one running flow.
//!
//! A reload builds the new version completely (parse, compile, contracts, scripts, `tests:`)
//! before it replaces the running one; on any error the running version stays and the error
//! is logged with its `file:line:col` and kept for the admin API.

use crate::compile::{Folders, compile, normalize};
use crate::connector::{Connectors, Health, Inlet, Outcome};
use crate::flow::{CompiledFlow, run_workers};
use crate::stats::{Counters, FlowStats};
use crate::testing::run_test;
use arc_swap::ArcSwap;
use serde::Serialize;
use sluice_flow::{Diagnostic, TriggerConfig, load_flow_file};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Parses, compiles and (optionally) tests one flow file.
pub async fn build_flow(
    path: &Path,
    folders: &Folders,
    connectors: &dyn Connectors,
    run_tests: bool,
) -> Result<CompiledFlow, Vec<Diagnostic>> {
    let loaded = load_flow_file(path).map_err(|d| vec![d])?;
    let compiled = compile(&loaded, folders, connectors)?;
    if run_tests {
        let mut failures = Vec::new();
        for test in &compiled.tests {
            if let Err(reason) = run_test(&compiled, test).await {
                failures.push(
                    loaded
                        .diagnostic(test.span, format!("test `{}` failed: {reason}", test.name))
                        .with_help("fix the flow or the test case"),
                );
            }
        }
        if !failures.is_empty() {
            return Err(failures);
        }
    }
    Ok(compiled)
}

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

/// Is `path` a flow file (`*.yaml` / `*.yml`, not hidden)?
pub fn is_flow_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        )
}

/// Every flow file in a folder, sorted by name.
pub fn flow_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_flow_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Settings of a running registry.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// The flows folder.
    pub flows: PathBuf,
    /// Where contracts and scripts resolve.
    pub folders: Folders,
    /// How long a stopping flow may take to finish its in-flight messages.
    pub drain_timeout: Duration,
}

struct RunningFlow {
    path: PathBuf,
    current: Arc<ArcSwap<CompiledFlow>>,
    stop: CancellationToken,
    trigger: JoinHandle<()>,
    workers: JoinHandle<()>,
    health: Health,
    claim: Option<String>,
}

/// A flow's state for status reports and the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct FlowStatus {
    /// Name.
    pub name: String,
    /// Flow file.
    pub path: PathBuf,
    /// Running version (content hash); null for a file that never loaded.
    pub version: Option<String>,
    /// `running`, or `invalid` for a file that failed to load and runs nothing.
    pub state: &'static str,
    /// `description:`.
    pub description: Option<String>,
    /// The trigger, e.g. `http POST /orders`.
    pub trigger: Option<String>,
    /// Why the trigger is unhealthy, if it is.
    pub unhealthy: Option<String>,
    /// The last failed reload of its file (`file:line:col: …`), if still current.
    pub last_error: Option<String>,
    /// Message counters.
    pub counters: Counters,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, RunningFlow>,
    errors: HashMap<PathBuf, Vec<Diagnostic>>,
    stats: HashMap<String, Arc<FlowStats>>,
}

/// The running flows of one `sluice run`.
pub struct Registry {
    options: RegistryOptions,
    connectors: Arc<dyn Connectors>,
    state: Mutex<State>,
}

impl Registry {
    /// An empty registry.
    pub fn new(options: RegistryOptions, connectors: Arc<dyn Connectors>) -> Arc<Self> {
        Arc::new(Registry {
            options,
            connectors,
            state: Mutex::new(State::default()),
        })
    }

    /// The registry's options.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// Loads every flow file of the flows folder; invalid ones are logged and skipped.
    pub async fn start_all(&self) -> std::io::Result<()> {
        for path in flow_files(&self.options.flows)? {
            self.apply(&path).await;
        }
        // A flow whose `tests:` `call` a flow loaded after it failed; try those again while
        // that makes progress.
        loop {
            let failed: Vec<PathBuf> = self.state.lock().await.errors.keys().cloned().collect();
            if failed.is_empty() {
                break;
            }
            for path in &failed {
                self.apply(path).await;
            }
            if self.state.lock().await.errors.len() >= failed.len() {
                break;
            }
        }
        Ok(())
    }

    /// Status of every running flow and every flow file that failed to load.
    pub async fn status(&self) -> Vec<FlowStatus> {
        let state = self.state.lock().await;
        let errors_of = |path: &Path| {
            state.errors.get(path).map(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        };
        let mut out: Vec<FlowStatus> = state
            .running
            .iter()
            .map(|(name, flow)| {
                let current = flow.current.load();
                FlowStatus {
                    name: name.clone(),
                    path: flow.path.clone(),
                    version: Some(current.version.clone()),
                    state: "running",
                    description: current.description.clone(),
                    trigger: Some(current.trigger_config.describe()),
                    unhealthy: flow
                        .health
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                    last_error: errors_of(&flow.path),
                    counters: state
                        .stats
                        .get(name)
                        .map(|s| s.snapshot())
                        .unwrap_or_default(),
                }
            })
            .collect();
        for path in state.errors.keys() {
            if state.running.values().any(|f| &f.path == path) {
                continue;
            }
            let name = sluice_flow::flow_name_from_path(path);
            out.push(FlowStatus {
                counters: state
                    .stats
                    .get(&name)
                    .map(|s| s.snapshot())
                    .unwrap_or_default(),
                name,
                path: path.clone(),
                version: None,
                state: "invalid",
                description: None,
                trigger: None,
                unhealthy: None,
                last_error: errors_of(path),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.path.cmp(&b.path)));
        out
    }

    /// The file dead-letter folders of the running flows, by flow name.
    pub async fn dead_letter_folders(&self) -> Vec<(String, PathBuf)> {
        let state = self.state.lock().await;
        state
            .running
            .iter()
            .filter_map(|(name, flow)| {
                flow.current
                    .load()
                    .dead_letter_folder
                    .clone()
                    .map(|folder| (name.clone(), folder))
            })
            .collect()
    }

    /// Runs one message through a running flow for real (sinks write) and returns its
    /// outcome; `None` when no such flow runs.
    pub async fn inject(
        &self,
        name: &str,
        payload: serde_json::Value,
    ) -> Option<(String, Outcome)> {
        let (flow, stats) = {
            let state = self.state.lock().await;
            let flow = state.running.get(name)?.current.load_full();
            (flow, state.stats.get(name).cloned())
        };
        let mut meta = crate::message::Meta::new();
        meta.insert("admin.inject".to_owned(), "true".to_owned());
        let message = crate::message::Message::new(name, payload, meta);
        let id = message.id().to_owned();
        let started = std::time::Instant::now();
        if let Some(stats) = &stats {
            stats.started();
        }
        let outcome = flow.handle(message, true).await;
        if let Some(stats) = &stats {
            stats.finished(&outcome, started.elapsed());
        }
        Some((id, outcome))
    }

    /// (Re)loads one flow file, or stops its flow when the file is gone.
    pub async fn apply(&self, path: &Path) {
        let mut state = self.state.lock().await;
        let owner = state
            .running
            .iter()
            .find(|(_, f)| f.path == path)
            .map(|(name, _)| name.clone());
        if !path.exists() {
            state.errors.remove(path);
            if let Some(name) = owner {
                self.stop(&mut state, &name).await;
                tracing::info!(flow = %name, file = %path.display(), "flow stopped (file removed)");
            }
            return;
        }
        let built = build_flow(path, &self.options.folders, self.connectors.as_ref(), true).await;
        let compiled = match built {
            Ok(compiled) => compiled,
            Err(diagnostics) => {
                for d in &diagnostics {
                    match &owner {
                        Some(name) => {
                            tracing::error!(flow = %name, "reload failed, the running version stays: {d}")
                        }
                        None => {
                            tracing::error!(file = %path.display(), "reload failed, flow not started: {d}")
                        }
                    }
                }
                state.errors.insert(path.to_owned(), diagnostics);
                metrics::counter!("sluice_reloads_total", "result" => "error").increment(1);
                return;
            }
        };
        let name = compiled.name.clone();
        if let Some(d) = call_cycle(&compiled) {
            tracing::error!(file = %path.display(), "reload failed: {d}");
            state.errors.insert(path.to_owned(), vec![d]);
            return;
        }
        let claim = self.connectors.claim(&compiled.trigger_config);
        if let Some(claim) = &claim {
            let clash = state.running.iter().find(|(other, f)| {
                **other != name && f.path != path && f.claim.as_ref() == Some(claim)
            });
            if let Some((other_name, other)) = clash {
                let d = trigger_clash(path, claim, other_name, &other.path);
                tracing::error!(file = %path.display(), "reload failed, flow not started: {d}");
                state.errors.insert(path.to_owned(), vec![d]);
                metrics::counter!("sluice_reloads_total", "result" => "error").increment(1);
                return;
            }
        }
        if let Some(other) = state.running.get(&name).filter(|f| f.path != path)
            && other.path.exists()
        {
            let d = duplicate_name(path, &name, &other.path);
            tracing::error!(file = %path.display(), "reload failed, flow not started: {d}");
            state.errors.insert(path.to_owned(), vec![d]);
            metrics::counter!("sluice_reloads_total", "result" => "error").increment(1);
            return;
        }
        state.errors.remove(path);
        metrics::counter!("sluice_reloads_total", "result" => "ok").increment(1);
        // The file now defines another name: the flow it used to define stops.
        if let Some(old) = owner.filter(|old| *old != name) {
            self.stop(&mut state, &old).await;
            tracing::info!(flow = %old, file = %path.display(), "flow stopped (renamed to {name})");
        }
        let version = compiled.version.clone();
        if let Some(running) = state.running.get(&name) {
            let old = running.current.load();
            let same_shape = same_trigger(&old.trigger_config, &compiled.trigger_config)
                && old.concurrency == compiled.concurrency
                && old.queue == compiled.queue;
            if same_shape {
                old.retire(&compiled);
                running.current.store(Arc::new(compiled));
                tracing::info!(flow = %name, version = %version, "flow reloaded");
                return;
            }
            drop(old);
            let overlap = compiled
                .trigger
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_ref()
                .is_some_and(|t| t.can_overlap());
            if overlap {
                // Request-driven triggers: the new one takes over before the old one drains,
                // so no request finds the route missing.
                let running = self.start(&mut state, compiled, claim);
                if let Some(old) = state.running.insert(name.clone(), running) {
                    let timeout = self.options.drain_timeout;
                    let old_name = name.clone();
                    tokio::spawn(async move { drain(&old_name, old, timeout).await });
                }
            } else {
                // Triggers that claim from a shared source: drain the old one first so that
                // two triggers never claim from the same source at once.
                self.stop(&mut state, &name).await;
                let running = self.start(&mut state, compiled, claim);
                state.running.insert(name.clone(), running);
            }
            tracing::info!(flow = %name, version = %version, "flow reloaded (trigger restarted)");
            return;
        }
        let trigger = compiled.trigger_config.describe();
        let running = self.start(&mut state, compiled, claim);
        state.running.insert(name.clone(), running);
        tracing::info!(flow = %name, version = %version, trigger = %trigger, "flow ready");
    }

    fn start(
        &self,
        state: &mut State,
        compiled: CompiledFlow,
        claim: Option<String>,
    ) -> RunningFlow {
        let trigger = compiled
            .trigger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let stats = state
            .stats
            .entry(compiled.name.clone())
            .or_insert_with(|| Arc::new(FlowStats::new(&compiled.name)))
            .clone();
        let (tx, rx) = mpsc::channel(compiled.queue.max(1));
        let concurrency = compiled.concurrency.max(1);
        let path = compiled.path.clone();
        let health: Health = Arc::default();
        let inlet = Inlet::new(&compiled.name, tx, health.clone());
        let name = compiled.name.clone();
        let current = Arc::new(ArcSwap::from_pointee(compiled));
        crate::directory::register(&name, current.clone());
        let workers = tokio::spawn(run_workers(rx, current.clone(), concurrency, stats));
        let stop = CancellationToken::new();
        let trigger = match trigger {
            // Library lines logged by the trigger's task (a broker client's reconnects, …)
            // carry the flow they belong to.
            Some(trigger) => tokio::spawn(tracing::Instrument::instrument(
                trigger.run(inlet, stop.clone()),
                tracing::info_span!("trigger", flow = %name),
            )),
            None => tokio::spawn(async {}),
        };
        RunningFlow {
            path,
            current,
            stop,
            trigger,
            workers,
            health,
            claim,
        }
    }

    async fn stop(&self, state: &mut State, name: &str) {
        let Some(flow) = state.running.remove(name) else {
            return;
        };
        crate::directory::unregister(name, &flow.current);
        drain(name, flow, self.options.drain_timeout).await;
    }

    /// Stops every flow: triggers first, then in-flight messages finish (bounded).
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        let flows = std::mem::take(&mut state.running);
        for flow in flows.values() {
            flow.stop.cancel();
        }
        for (name, flow) in flows {
            drain(&name, flow, self.options.drain_timeout).await;
        }
    }

    /// Reloads what a set of changed paths affects: flow files themselves, and every flow
    /// that depends on a changed schema or script (plus flows that failed to load, since a
    /// new schema or script may be what they were missing).
    pub async fn apply_changes(&self, changed: &[PathBuf]) {
        let mut flow_files: Vec<PathBuf> = Vec::new();
        let mut others: Vec<PathBuf> = Vec::new();
        let flows_dir = normalize(&self.options.flows);
        for path in changed {
            if normalize(path).parent() == Some(flows_dir.as_path()) && is_flow_file(path) {
                if !flow_files.contains(path) {
                    flow_files.push(path.clone());
                }
            } else {
                others.push(normalize(path));
            }
        }
        if !others.is_empty() {
            let state = self.state.lock().await;
            for flow in state.running.values() {
                let deps = &flow.current.load().dependencies;
                if deps.iter().any(|d| others.contains(&normalize(d)))
                    && !flow_files.contains(&flow.path)
                {
                    flow_files.push(flow.path.clone());
                }
            }
            for path in state.errors.keys() {
                if !flow_files.contains(path) {
                    flow_files.push(path.clone());
                }
            }
        }
        flow_files.sort();
        for path in flow_files {
            self.apply(&path).await;
        }
    }
}

async fn drain(name: &str, flow: RunningFlow, timeout: Duration) {
    flow.stop.cancel();
    let RunningFlow {
        trigger, workers, ..
    } = flow;
    let finished = tokio::time::timeout(timeout, async {
        let _ = trigger.await;
        let _ = workers.await;
    })
    .await;
    if finished.is_err() {
        tracing::warn!(flow = %name, "in-flight messages did not finish within {}; their sources will be redelivered", humantime::format_duration(timeout));
    }
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

/// Two trigger configurations that claim the same source the same way (positions ignored).
fn same_trigger(a: &TriggerConfig, b: &TriggerConfig) -> bool {
    match (a, b) {
        (TriggerConfig::File(a), TriggerConfig::File(b)) => {
            a.path.value == b.path.value
                && a.glob.value == b.glob.value
                && a.format == b.format
                && a.on_success == b.on_success
                && a.max_size == b.max_size
                && a.min_age == b.min_age
                && a.check_interval == b.check_interval
                && a.stable_checks == b.stable_checks
                && a.rescan_interval == b.rescan_interval
                && a.max_in_flight == b.max_in_flight
                && a.csv.delimiter.value == b.csv.delimiter.value
                && a.csv.header == b.csv.header
        }
        (TriggerConfig::Http(a), TriggerConfig::Http(b)) => {
            a.path.value == b.path.value
                && a.method == b.method
                && a.max_body == b.max_body
                && a.timeout == b.timeout
                && a.auth.as_ref().map(|x| &x.value) == b.auth.as_ref().map(|x| &x.value)
        }
        (TriggerConfig::Schedule(a), TriggerConfig::Schedule(b)) => {
            a.every.as_ref().map(|x| x.value) == b.every.as_ref().map(|x| x.value)
                && a.cron.as_ref().map(|x| &x.value) == b.cron.as_ref().map(|x| &x.value)
                && a.payload == b.payload
        }
        // Other triggers restart on any change; their sources redeliver what was in flight.
        _ => a == b,
    }
}
