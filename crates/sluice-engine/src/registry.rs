//! The set of running flows: start, hot reload, stop. One flow file → one running flow.
//!
//! A reload builds the new version completely (parse, compile, contracts, scripts, `tests:`)
//! before it replaces the running one; on any error the running version stays and the error
//! is logged with its `file:line:col` and kept for the admin API.
//!
//! Locking: the registry's state sits behind a plain mutex that is only ever held for a few
//! map operations, never across an `await`. Building, testing and draining a flow happen
//! outside it, so a status read never waits for a reload, and reloads of different files run
//! side by side. Reloads of one file are serialized by a lock of that file's own.

mod build;
mod checks;
mod status;

pub use build::{build_flow, flow_files, is_flow_file};

pub use checks::{TriggerKey, call_cycle, duplicate_name};
pub use status::{FlowStatus, broker_url, without_credentials};

use crate::compile::{Folders, normalize};
use crate::connector::{Connectors, Health, Inlet, Outcome};
use crate::flow::{CompiledFlow, run_workers};
use crate::stats::FlowStats;
use arc_swap::ArcSwap;
use build::build_loaded;
use checks::conflicts;
use futures_util::future::join_all;
use sluice_flow::{Diagnostic, load_flow_file};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// The tasks of one running trigger and its workers.
struct Tasks {
    stop: CancellationToken,
    trigger: JoinHandle<()>,
    workers: JoinHandle<()>,
}

struct RunningFlow {
    path: PathBuf,
    current: Arc<ArcSwap<CompiledFlow>>,
    key: TriggerKey,
    /// `None` while this version drains so that its successor can start (its entry stays, so
    /// the flow keeps showing and its name stays taken).
    tasks: Option<Tasks>,
    health: Health,
    claim: Option<String>,
}

/// A built version waiting to run.
struct Candidate {
    compiled: CompiledFlow,
    key: TriggerKey,
    claim: Option<String>,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, RunningFlow>,
    errors: HashMap<PathBuf, Vec<Diagnostic>>,
    /// Files that did not load at start-up and have not loaded since: `/readyz` answers 503
    /// while any remains, so a broken deploy is never marked ready.
    unloaded_at_start: HashSet<PathBuf>,
    stats: HashMap<String, Arc<FlowStats>>,
    /// Set by `shutdown`: a reload finishing later starts nothing.
    closed: bool,
    /// Why the flows folder cannot be watched (it is gone), if it cannot.
    folder_problem: Option<String>,
}

/// The running flows of one `sluice run`.
pub struct Registry {
    options: RegistryOptions,
    connectors: Arc<dyn Connectors>,
    state: Mutex<State>,
    /// One lock per flow file, held for a whole reload of that file.
    reloads: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(options: RegistryOptions, connectors: Arc<dyn Connectors>) -> Arc<Self> {
        Arc::new(Registry {
            options,
            connectors,
            state: Mutex::new(State::default()),
            reloads: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's options.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reload_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        reloads.entry(path.to_owned()).or_default().clone()
    }

    /// Loads every flow file of the flows folder; invalid ones are logged and skipped (and
    /// keep `/readyz` at 503 until they load or are removed).
    pub async fn start_all(&self) -> std::io::Result<()> {
        for path in flow_files(&self.options.flows)? {
            self.apply(&path).await;
        }
        // A flow whose `tests:` `call` a flow loaded after it failed; try those again while
        // that makes progress.
        loop {
            let failed: Vec<PathBuf> = self.lock().errors.keys().cloned().collect();
            if failed.is_empty() {
                break;
            }
            for path in &failed {
                self.apply(path).await;
            }
            if self.lock().errors.len() >= failed.len() {
                break;
            }
        }
        let mut state = self.lock();
        let failed: Vec<PathBuf> = state.errors.keys().cloned().collect();
        state.unloaded_at_start.extend(failed);
        Ok(())
    }

    /// Status of every running flow and every flow file that failed to load. Never waits
    /// for a reload in progress.
    pub async fn status(&self) -> Vec<FlowStatus> {
        self.status_now()
    }

    fn status_now(&self) -> Vec<FlowStatus> {
        let state = self.lock();
        let errors_of = |path: &Path| {
            state.errors.get(path).map(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        };
        let counters_of = |name: &str| {
            state
                .stats
                .get(name)
                .map(|s| s.snapshot())
                .unwrap_or_default()
        };
        let mut out: Vec<FlowStatus> = state
            .running
            .iter()
            .map(|(name, flow)| {
                let current = flow.current.load();
                let unhealthy = flow
                    .health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .map(|reason| status::scrub(reason, &current.trigger_config));
                FlowStatus {
                    name: name.clone(),
                    path: flow.path.clone(),
                    version: Some(current.version.clone()),
                    state: status::state_of(&current.trigger_config, unhealthy.as_deref()),
                    ready: unhealthy.is_none(),
                    description: current.description.clone(),
                    trigger: Some(current.trigger_config.describe()),
                    url: broker_url(&current.trigger_config),
                    unhealthy,
                    last_error: errors_of(&flow.path),
                    counters: counters_of(name),
                }
            })
            .collect();
        for path in state.errors.keys() {
            if state.running.values().any(|f| &f.path == path) {
                continue;
            }
            let name = sluice_flow::flow_name_from_path(path);
            out.push(FlowStatus {
                counters: counters_of(&name),
                name,
                path: path.clone(),
                version: None,
                state: "invalid",
                ready: !state.unloaded_at_start.contains(path),
                description: None,
                trigger: None,
                url: None,
                unhealthy: None,
                last_error: errors_of(path),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.path.cmp(&b.path)));
        out
    }

    /// Records (or clears) a problem with a watched folder. Only the flows folder counts: it
    /// must exist, while the schemas and scripts folders are optional.
    pub fn set_folder_problem(&self, folder: &Path, problem: Option<String>) {
        if normalize(folder) == normalize(&self.options.flows) {
            self.lock().folder_problem = problem;
        }
    }

    /// What keeps the runtime from being ready besides its flows (a flows folder that is
    /// gone), if anything.
    pub async fn problem(&self) -> Option<String> {
        self.lock().folder_problem.clone()
    }

    /// The file dead-letter folders of the running flows, by flow name.
    pub async fn dead_letter_folders(&self) -> Vec<(String, PathBuf)> {
        let state = self.lock();
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
            let state = self.lock();
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
        let reload = self.reload_lock(path);
        let _one_reload_per_file = reload.lock().await;
        if !path.exists() {
            self.remove_file(path).await;
            return;
        }
        let owner = self.owner_of(path);
        let built = match load_flow_file(path) {
            Ok(loaded) => {
                let key = TriggerKey::of(&loaded);
                build_loaded(
                    &loaded,
                    &self.options.folders,
                    self.connectors.as_ref(),
                    true,
                )
                .await
                .map(|compiled| (compiled, key))
            }
            Err(d) => Err(vec![d]),
        };
        let (compiled, key) = match built {
            Ok(built) => built,
            Err(diagnostics) => return self.failed(path, owner.as_deref(), diagnostics),
        };
        if let Some(d) = call_cycle(&compiled) {
            return self.failed(path, owner.as_deref(), vec![d]);
        }
        let claim = self.connectors.claim(&compiled.trigger_config);
        let candidate = Candidate {
            compiled,
            key,
            claim,
        };
        let name = candidate.compiled.name.clone();
        let version = candidate.compiled.version.clone();
        // What has to stop before the new version may start: a trigger that claims from a
        // shared source never runs twice at once.
        let mut to_drain: Vec<(String, Tasks)> = Vec::new();
        let candidate = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if let Err(d) = conflicts(&state, path, &name, candidate.claim.as_deref()) {
                drop(state);
                return self.failed(path, owner.as_deref(), vec![d]);
            }
            // The file now defines another name: the flow it used to define stops.
            if let Some(old) = owner.as_ref().filter(|old| **old != name)
                && let Some(flow) = state.running.remove(old)
            {
                crate::directory::unregister(old, &flow.current);
                if let Some(tasks) = flow.tasks {
                    to_drain.push((old.clone(), tasks));
                }
            }
            match self.replace(&mut state, candidate, &mut to_drain) {
                Some(candidate) => candidate,
                None => return,
            }
        };
        for (old, tasks) in to_drain {
            drain(&old, tasks, self.options.drain_timeout).await;
            if old != name {
                tracing::info!(flow = %old, file = %path.display(), "flow stopped (renamed to {name})");
            }
        }
        let mut state = self.lock();
        if state.closed {
            return;
        }
        // Another file may have taken the name or the source while the old version drained.
        if let Err(d) = conflicts(&state, path, &name, candidate.claim.as_deref()) {
            // The drained version's entry goes too: nothing of this file runs any more.
            if state
                .running
                .get(&name)
                .is_some_and(|f| f.path == path && f.tasks.is_none())
                && let Some(flow) = state.running.remove(&name)
            {
                crate::directory::unregister(&name, &flow.current);
            }
            drop(state);
            return self.failed(path, None, vec![d]);
        }
        let restarted = state.running.contains_key(&name);
        let trigger = candidate.compiled.trigger_config.describe();
        self.install(&mut state, path, candidate);
        drop(state);
        if restarted {
            tracing::info!(flow = %name, version = %version, "flow reloaded (trigger restarted)");
        } else {
            tracing::info!(flow = %name, version = %version, trigger = %trigger, "flow ready");
        }
    }

    /// Puts a new version in place of the running one where that needs no wait: the same
    /// trigger keeps running with the new steps, or a request-driven trigger is replaced
    /// while the old one drains in the background. Otherwise the old version's tasks go to
    /// `to_drain` and the candidate comes back, to be installed once they have finished.
    fn replace(
        &self,
        state: &mut State,
        candidate: Candidate,
        to_drain: &mut Vec<(String, Tasks)>,
    ) -> Option<Candidate> {
        let name = candidate.compiled.name.clone();
        let version = candidate.compiled.version.clone();
        let path = candidate.compiled.path.clone();
        let Some(running) = state.running.get_mut(&name) else {
            return Some(candidate);
        };
        let old = running.current.load();
        let same_shape = running.tasks.is_some()
            && running.key.same_as(&candidate.key)
            && old.concurrency == candidate.compiled.concurrency
            && old.queue == candidate.compiled.queue;
        if same_shape {
            old.retire(&candidate.compiled);
            drop(old);
            running.current.store(Arc::new(candidate.compiled));
            running.key = candidate.key;
            running.path = path.clone();
            self.loaded(state, &path);
            tracing::info!(flow = %name, version = %version, "flow reloaded");
            return None;
        }
        drop(old);
        let overlap = candidate
            .compiled
            .trigger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|t| t.can_overlap());
        if overlap {
            // Request-driven triggers: the new one takes over before the old one drains,
            // so no request finds the route missing.
            if let Some(old) = self.install(state, &path, candidate).and_then(|f| f.tasks) {
                let timeout = self.options.drain_timeout;
                let old_name = name.clone();
                tokio::spawn(async move { drain(&old_name, old, timeout).await });
            }
            tracing::info!(flow = %name, version = %version, "flow reloaded (trigger restarted)");
            return None;
        }
        // Triggers that claim from a shared source: the old one drains first (outside the
        // lock); its entry stays meanwhile.
        if let Some(tasks) = running.tasks.take() {
            tasks.stop.cancel();
            to_drain.push((name, tasks));
        }
        Some(candidate)
    }

    /// Starts a candidate and records it as the flow of `path`; returns the entry it replaced.
    fn install(&self, state: &mut State, path: &Path, candidate: Candidate) -> Option<RunningFlow> {
        let name = candidate.compiled.name.clone();
        let running = self.start(state, candidate);
        self.loaded(state, path);
        state.running.insert(name, running)
    }

    /// Records that `path` loaded: its errors are gone.
    fn loaded(&self, state: &mut State, path: &Path) {
        state.errors.remove(path);
        state.unloaded_at_start.remove(path);
        metrics::counter!("sluice_reloads_total", "result" => "ok").increment(1);
    }

    /// Records and logs a failed load; a running version of the file stays.
    fn failed(&self, path: &Path, owner: Option<&str>, diagnostics: Vec<Diagnostic>) {
        for d in &diagnostics {
            match owner {
                Some(name) => {
                    tracing::error!(flow = %name, "reload failed, the running version stays: {d}")
                }
                None => {
                    tracing::error!(file = %path.display(), "reload failed, flow not started: {d}")
                }
            }
        }
        self.lock().errors.insert(path.to_owned(), diagnostics);
        metrics::counter!("sluice_reloads_total", "result" => "error").increment(1);
    }

    fn owner_of(&self, path: &Path) -> Option<String> {
        self.lock()
            .running
            .iter()
            .find(|(_, f)| f.path == path)
            .map(|(name, _)| name.clone())
    }

    /// Stops the flow of a file that is gone.
    async fn remove_file(&self, path: &Path) {
        let stopping = {
            let mut state = self.lock();
            state.errors.remove(path);
            state.unloaded_at_start.remove(path);
            let owner = state
                .running
                .iter()
                .find(|(_, f)| f.path == path)
                .map(|(name, _)| name.clone());
            owner.and_then(|name| state.running.remove(&name).map(|flow| (name, flow)))
        };
        if let Some((name, flow)) = stopping {
            crate::directory::unregister(&name, &flow.current);
            if let Some(tasks) = flow.tasks {
                drain(&name, tasks, self.options.drain_timeout).await;
            }
            tracing::info!(flow = %name, file = %path.display(), "flow stopped (file removed)");
        }
    }

    fn start(&self, state: &mut State, candidate: Candidate) -> RunningFlow {
        let Candidate {
            compiled,
            key,
            claim,
        } = candidate;
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
        // A broker trigger is not ready until it consumes (it marks itself healthy then): a
        // broker that cannot be reached shows as `connecting`, never as `running`.
        let health: Health = Arc::new(std::sync::Mutex::new(
            broker_url(&compiled.trigger_config).map(|url| format!("connecting to {url}")),
        ));
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
            key,
            tasks: Some(Tasks {
                stop,
                trigger,
                workers,
            }),
            health,
            claim,
        }
    }

    /// Stops every flow: triggers first, then in-flight messages finish (bounded).
    pub async fn shutdown(&self) {
        let flows = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.running)
        };
        let draining: Vec<(String, Tasks)> = flows
            .into_iter()
            .filter_map(|(name, flow)| flow.tasks.map(|tasks| (name, tasks)))
            .collect();
        for (_, tasks) in &draining {
            tasks.stop.cancel();
        }
        let timeout = self.options.drain_timeout;
        join_all(
            draining
                .into_iter()
                .map(|(name, tasks)| async move { drain(&name, tasks, timeout).await }),
        )
        .await;
    }

    /// Reloads what a set of changed paths affects: flow files themselves, and every flow
    /// that depends on a changed schema or script (plus flows that failed to load, since a
    /// new schema or script may be what they were missing). Files reload side by side: one
    /// flow draining does not hold up another.
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
            let state = self.lock();
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
        join_all(flow_files.iter().map(|path| self.apply(path))).await;
    }
}

async fn drain(name: &str, tasks: Tasks, timeout: Duration) {
    tasks.stop.cancel();
    let Tasks {
        trigger, workers, ..
    } = tasks;
    let finished = tokio::time::timeout(timeout, async {
        let _ = trigger.await;
        let _ = workers.await;
    })
    .await;
    if finished.is_err() {
        tracing::warn!(flow = %name, "in-flight messages did not finish within {}; their sources will be redelivered", humantime::format_duration(timeout));
    }
}
