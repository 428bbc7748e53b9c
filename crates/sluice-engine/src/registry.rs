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
mod reload;
mod status;

pub use build::{build_flow, flow_files, is_flow_file};

pub use crate::connector::TriggerKey;
pub use checks::duplicate_name;
pub use status::{FlowStatus, without_credentials};

use crate::compile::Folders;
use crate::connector::{Connectors, Health, Outcome};
use crate::flow::CompiledFlow;
use crate::stats::FlowStats;
use arc_swap::ArcSwap;
use futures_util::future::join_all;
use sluice_flow::Diagnostic;
use sluice_flow::paths::normalize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
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
    /// What the trigger reports about its source (`/api/flows`, `source`).
    source: crate::connector::SourceState,
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
    /// While `start_all` loads the flows: a failure is only recorded, and logged once the
    /// retries are done, so a flow whose `tests:` `call` a flow loaded after it (and which
    /// then starts) is never logged as failed.
    starting: bool,
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
        let files = flow_files(&self.options.flows)?;
        self.lock().starting = true;
        for path in files {
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
        state.starting = false;
        let failed: Vec<PathBuf> = state.errors.keys().cloned().collect();
        for path in &failed {
            for d in state.errors.get(path).into_iter().flatten() {
                tracing::error!(file = %path.display(), "reload failed, flow not started: {d}");
            }
            metrics::counter!("sluice_reloads_total", "result" => "error").increment(1);
        }
        state.unloaded_at_start.extend(failed);
        Ok(())
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
        let id = crate::message::Ids::message_id(&*message.meta).to_owned();
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

    /// Replays a dead-lettered message through the running version of flow `name`, with
    /// the metadata given (a fresh `message_id` unless `meta` holds one); a failure is not
    /// dead-lettered again. `None` when no such flow runs.
    pub async fn replay(
        &self,
        name: &str,
        payload: serde_json::Value,
        meta: crate::message::Meta,
    ) -> Option<(String, Outcome)> {
        let (flow, stats) = {
            let state = self.lock();
            let flow = state.running.get(name)?.current.load_full();
            (flow, state.stats.get(name).cloned())
        };
        let message = crate::message::Message::new(name, payload, meta);
        let id = crate::message::Ids::message_id(&*message.meta).to_owned();
        let started = std::time::Instant::now();
        if let Some(stats) = &stats {
            stats.started();
        }
        let outcome = flow.replay(message).await;
        if let Some(stats) = &stats {
            stats.finished(&outcome, started.elapsed());
        }
        Some((id, outcome))
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
