//! Reloading one flow file: build the new version, check it against the others, then swap
//! it in (same trigger), start it beside the draining old one (request-driven triggers), or
//! start it once the old one has drained (triggers that claim from a shared source).

use super::build::build_loaded;
use super::checks::{call_cycle, conflicts};
use super::{Candidate, Registry, RunningFlow, State, Tasks, drain};
use crate::connector::{Health, Inlet};
use crate::flow::run_workers;
use crate::stats::FlowStats;
use crate::workers::Workers;
use arc_swap::ArcSwap;
use sluice_flow::{Diagnostic, load_flow_file};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl Registry {
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
                build_loaded(
                    &loaded,
                    &self.options.folders,
                    self.connectors.as_ref(),
                    true,
                )
                .await
            }
            Err(d) => Err(vec![d]),
        };
        let compiled = match built {
            Ok(built) => built,
            Err(diagnostics) => return self.failed(path, owner.as_deref(), diagnostics),
        };
        if let Some(d) = call_cycle(&compiled) {
            return self.failed(path, owner.as_deref(), vec![d]);
        }
        let key = compiled.trigger_info.restart_key.clone();
        let claim = compiled.trigger_info.claim.clone();
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
            if let Err(d) = conflicts(
                &state,
                &candidate.compiled.source,
                &name,
                candidate.claim.as_deref(),
            ) {
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
        if let Err(d) = conflicts(
            &state,
            &candidate.compiled.source,
            &name,
            candidate.claim.as_deref(),
        ) {
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
        let trigger = candidate.compiled.trigger_info.description.clone();
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
        let mut state = self.lock();
        if state.starting {
            // Logged by `start_all` if it still fails after the flows loaded after it.
            state.errors.insert(path.to_owned(), diagnostics);
            return;
        }
        drop(state);
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
            compiled
                .trigger_info
                .url
                .as_deref()
                .map(|url| format!("connecting to {}", super::without_credentials(url))),
        ));
        let name = compiled.name.clone();
        let current = Arc::new(ArcSwap::from_pointee(compiled));
        let span = tracing::info_span!("flow", flow = %name);
        let workers = Workers::new(current.clone(), concurrency, stats, span.clone());
        let inlet = Inlet::new(&name, tx, health.clone()).for_flow(workers.clone());
        let source = inlet.source_state();
        crate::directory::register(&name, current.clone());
        let workers = tokio::spawn(tracing::Instrument::instrument(
            run_workers(rx, workers),
            span,
        ));
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
            source,
            claim,
        }
    }
}
