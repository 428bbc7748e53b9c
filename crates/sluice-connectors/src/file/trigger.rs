//! The file trigger: hybrid discovery (notifications + periodic rescan), the stability
//! gate, claim by atomic rename into `.inflight/`, recovery at start-up, and the move to
//! `.done/`, `.rejected/` or `.error/` once every message of the file is acknowledged.

use super::emit::start;
use super::finish::Disposition;
use super::scan::{Poke, list_names, scan, watch_folder};
use super::stability::Stability;
use super::temp::clean_once;
use async_trait::async_trait;
use sluice_engine::{BuildContext, Inlet, Trigger};
use sluice_flow::{Diagnostic, FileTriggerConfig};
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Rescans triggered by notifications are at least this far apart, so that a burst of
/// 10,000 creations costs a few scans, not 10,000.
const MIN_SCAN_GAP: Duration = Duration::from_millis(50);

/// Watches a folder and turns each stable file into one or more messages.
pub struct FileTrigger {
    folder: PathBuf,
    glob: globset::GlobMatcher,
    config: FileTriggerConfig,
}

impl FileTrigger {
    /// Checks the configuration; the folder is created when the trigger runs.
    pub fn new(config: &FileTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let folder = config.path.value.as_str();
        if folder.trim().is_empty() {
            return Err(cx
                .diagnostic(&config.path, "the trigger `path` is empty")
                .with_help("give the folder to watch, e.g. `inbox/orders`"));
        }
        let glob = globset::GlobBuilder::new(config.glob.value.as_str())
            .literal_separator(true)
            .build()
            .map_err(|e| {
                cx.diagnostic(&config.glob, format!("invalid glob: {}", e.kind()))
                    .with_help("a file-name pattern such as `*.json` or `order-*.csv`")
            })?
            .compile_matcher();
        if config.csv.delimiter.value.len() != 1 {
            return Err(cx
                .diagnostic(
                    &config.csv.delimiter,
                    "the csv delimiter must be one ASCII character",
                )
                .with_help("for example `,`, `;` or a tab"));
        }
        // `max_in_flight: 0` is refused while the flow is parsed, at its own key.
        Ok(FileTrigger {
            folder: PathBuf::from(folder),
            glob,
            config: config.clone(),
        })
    }
}

/// State shared by the scanner and the claims it spawned.
pub(super) struct Shared {
    pub(super) flow: String,
    pub(super) folder: PathBuf,
    pub(super) inflight: PathBuf,
    pub(super) config: FileTriggerConfig,
    pub(super) in_flight: Mutex<HashSet<String>>,
    pub(super) poke: mpsc::UnboundedSender<Poke>,
}

#[async_trait]
impl Trigger for FileTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let inflight = self.folder.join(".inflight");
        let mut delay = Duration::from_millis(200);
        while let Err(e) = std::fs::create_dir_all(&inflight) {
            tracing::error!(flow = %inlet.flow(), folder = %self.folder.display(), "cannot create the watched folder: {e}; retrying");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        let (poke_tx, mut poke_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            flow: inlet.flow().to_owned(),
            folder: self.folder.clone(),
            inflight: inflight.clone(),
            config: self.config.clone(),
            in_flight: Mutex::new(HashSet::new()),
            poke: poke_tx.clone(),
        });
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight));

        // Sidecars half-written when an earlier run was killed: sluice's own temporary names.
        for outcome in Disposition::FOLDERS {
            clean_once(&self.folder.join(outcome), &shared.flow);
        }

        // Whatever a previous run left in `.inflight/` is processed again, first.
        let mut leftovers: Vec<String> = list_names(&inflight);
        leftovers.sort();
        if !leftovers.is_empty() {
            tracing::info!(flow = %shared.flow, count = leftovers.len(), "recovering files left in .inflight/");
        }
        for name in leftovers {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            };
            start(&shared, &inlet, name, permit, &stop);
        }

        let _watcher = watch_folder(&self.folder, poke_tx.clone());
        let mut gate = Stability::new(
            self.config.min_age.0,
            self.config.check_interval.0,
            self.config.stable_checks,
        );
        let mut ready: VecDeque<String> = VecDeque::new();
        let mut last_scan = Instant::now() - MIN_SCAN_GAP;
        let mut scan_due = true;
        loop {
            if scan_due {
                let since = last_scan.elapsed();
                if since < MIN_SCAN_GAP {
                    tokio::time::sleep(MIN_SCAN_GAP - since).await;
                }
                last_scan = Instant::now();
                gate = self.scan(&shared, gate, &mut ready).await;
            }
            self.claim_ready(&shared, &inlet, &slots, &mut gate, &mut ready, &stop);
            let wait = if gate.has_pending() {
                self.config.check_interval.0
            } else {
                self.config.rescan_interval.0
            };
            scan_due = tokio::select! {
                _ = stop.cancelled() => break,
                poke = poke_rx.recv() => {
                    // A slot came free: claim from what is known to be ready, no rescan
                    // needed. A folder change: rescan.
                    let mut folder_changed = matches!(poke, Some(Poke::Folder));
                    while let Ok(more) = poke_rx.try_recv() {
                        folder_changed |= more == Poke::Folder;
                    }
                    folder_changed || ready.is_empty() && gate.has_pending()
                }
                _ = tokio::time::sleep(wait) => true,
            };
        }
    }
}

impl FileTrigger {
    /// Lists the folder and passes every settling file through the gate; files that become
    /// ready join the queue. The gate moves into the blocking task and back.
    async fn scan(
        &self,
        shared: &Arc<Shared>,
        gate: Stability,
        ready: &mut VecDeque<String>,
    ) -> Stability {
        let folder = self.folder.clone();
        let glob = self.glob.clone();
        let fallback = Stability::new(
            self.config.min_age.0,
            self.config.check_interval.0,
            self.config.stable_checks,
        );
        let scanned = tokio::task::spawn_blocking(move || {
            let mut gate = gate;
            let result = scan(&folder, &glob, &mut gate);
            (gate, result)
        })
        .await;
        match scanned {
            Ok((gate, Ok(newly_ready))) => {
                ready.extend(newly_ready);
                gate
            }
            Ok((gate, Err(e))) => {
                tracing::warn!(flow = %shared.flow, folder = %self.folder.display(), "cannot scan the watched folder: {e}");
                gate
            }
            Err(_) => fallback,
        }
    }

    /// Claims ready files while slots are free.
    fn claim_ready(
        &self,
        shared: &Arc<Shared>,
        inlet: &Inlet,
        slots: &Arc<Semaphore>,
        gate: &mut Stability,
        ready: &mut VecDeque<String>,
        stop: &CancellationToken,
    ) {
        let mut postponed = Vec::new();
        while let Some(name) = ready.pop_front() {
            if stop.is_cancelled() {
                ready.push_front(name);
                break;
            }
            if lock(&shared.in_flight).contains(&name) {
                // A file of the same name is still being processed; take this one after it.
                postponed.push(name);
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                ready.push_front(name);
                break;
            };
            let from = self.folder.join(&name);
            let to = shared.inflight.join(&name);
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    gate.forget(&name);
                    start(shared, inlet, name, permit, stop);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => gate.forget(&name),
                Err(e) => {
                    tracing::warn!(flow = %shared.flow, file = %from.display(), "cannot claim the file: {e}");
                    gate.forget(&name);
                }
            }
        }
        ready.extend(postponed);
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
