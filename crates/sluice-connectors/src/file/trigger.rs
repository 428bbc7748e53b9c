//! The file trigger: hybrid discovery (notifications + periodic rescan), the stability
//! gate, claim by atomic rename into `.inflight/` (`drain.rs`), recovery at start-up, and
//! the move to `.done/`, `.rejected/` or `.error/` once every message of the file is
//! acknowledged (`claim.rs`, `mover.rs`).

use super::decode::XmlReading;
use super::drain::{Next, Queue};
use super::finish::Disposition;
use super::mover::Mover;
use super::scan::{list_names, scan, watch_folder};
use super::stability::Stability;
use super::temp::clean_once;
use async_trait::async_trait;
use sluice_engine::{BuildContext, Inlet, Trigger};
use sluice_flow::{Diagnostic, FileTriggerConfig};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Rescans triggered by notifications are at least this far apart, so that a burst of
/// 10,000 creations costs a few scans, not 10,000.
const MIN_SCAN_GAP: Duration = Duration::from_millis(50);

/// Watches a folder and turns each stable file into one or more messages.
pub struct FileTrigger {
    folder: PathBuf,
    glob: globset::GlobMatcher,
    config: FileTriggerConfig,
    xml: Arc<XmlReading>,
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
        let glob = name_glob(&config.glob, cx)?;
        check_csv(&config.csv, cx)?;
        let xml = XmlReading::checked(&config.xml, config.format, cx)?;
        // `max_in_flight: 0` is refused while the flow is parsed, at its own key.
        Ok(FileTrigger {
            folder: PathBuf::from(folder),
            glob,
            config: config.clone(),
            xml: Arc::new(xml),
        })
    }
}

/// A trigger's `glob`, matched against file names (not paths); shared with `sftp`.
pub(crate) fn name_glob(
    glob: &sluice_flow::Spanned<sluice_flow::Text>,
    cx: &BuildContext<'_>,
) -> Result<globset::GlobMatcher, Diagnostic> {
    Ok(globset::GlobBuilder::new(glob.value.as_str())
        .literal_separator(true)
        .build()
        .map_err(|e| {
            cx.diagnostic(glob, format!("invalid glob: {}", e.kind()))
                .with_help("a file-name pattern such as `*.json` or `order-*.csv`")
        })?
        .compile_matcher())
}

/// A trigger's `csv` options, checked; shared with `sftp`.
pub(crate) fn check_csv(
    csv: &sluice_flow::CsvOptions,
    cx: &BuildContext<'_>,
) -> Result<(), Diagnostic> {
    if csv.delimiter.value.len() != 1 {
        return Err(cx
            .diagnostic(
                &csv.delimiter,
                "the csv delimiter must be one ASCII character",
            )
            .with_help("for example `,`, `;` or a tab"));
    }
    Ok(())
}

/// State shared by the scanner, the drain task and the files in flight.
pub(super) struct Shared {
    pub(super) flow: String,
    pub(super) folder: PathBuf,
    pub(super) inflight: PathBuf,
    pub(super) config: FileTriggerConfig,
    /// How `format: xml` is read.
    pub(super) xml: Arc<XmlReading>,
    pub(super) in_flight: Mutex<HashSet<String>>,
    /// The drain task's work (`drain.rs`).
    pub(super) queue: Mutex<Queue>,
    /// Told when a finished file is queued, so that a drain waiting for a slot moves it.
    pub(super) moves_waiting: Notify,
    /// One per file claimed and not yet moved (`max_in_flight`).
    pub(super) slots: Arc<Semaphore>,
    /// The flow's queue; let go of when the trigger stops, since the flow's stateful steps
    /// end their held messages only once the queue is closed.
    pub(super) inlet: Mutex<Option<Inlet>>,
    pub(super) stop: CancellationToken,
    pub(super) mover: Arc<Mover>,
    pub(super) runtime: tokio::runtime::Handle,
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
            xml: self.xml.clone(),
            in_flight: Mutex::new(HashSet::new()),
            queue: Mutex::new(Queue::default()),
            moves_waiting: Notify::new(),
            slots: Arc::new(Semaphore::new(self.config.max_in_flight)),
            inlet: Mutex::new(Some(inlet)),
            stop: stop.clone(),
            mover: Arc::new(Mover::default()),
            runtime: tokio::runtime::Handle::current(),
        });

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
        shared.push(leftovers.into_iter().map(Next::Recovered));

        let _watcher = watch_folder(&self.folder, poke_tx.clone());
        let mut gate = Stability::new(
            self.config.min_age.0,
            self.config.check_interval.0,
            self.config.stable_checks,
        );
        let mut last_scan = Instant::now() - MIN_SCAN_GAP;
        let mut scan_due = true;
        loop {
            if scan_due {
                let since = last_scan.elapsed();
                if since < MIN_SCAN_GAP {
                    tokio::time::sleep(MIN_SCAN_GAP - since).await;
                }
                last_scan = Instant::now();
                let claimed = lock(&shared.queue).take_claimed();
                for name in &claimed {
                    gate.forget(name);
                }
                let newly_ready;
                (gate, newly_ready) = self.scan(&shared, gate).await;
                shared.push(
                    newly_ready
                        .into_iter()
                        .map(|(name, size)| Next::Ready(name, size)),
                );
            }
            let wait = if gate.has_pending() {
                self.config.check_interval.0
            } else {
                self.config.rescan_interval.0
            };
            scan_due = tokio::select! {
                _ = stop.cancelled() => break,
                _ = poke_rx.recv() => {
                    while poke_rx.try_recv().is_ok() {}
                    true
                }
                _ = tokio::time::sleep(wait) => true,
            };
        }
        // Nothing new is claimed. The files in flight end (their moves are queued as their
        // messages settle, or they are abandoned and stay in `.inflight/`) before the trigger
        // does, so that a draining shutdown leaves each file in exactly one place. The queue
        // is let go of first: messages held by an aggregate settle only once it is closed.
        lock(&shared.inlet).take();
        let all = u32::try_from(self.config.max_in_flight).unwrap_or(u32::MAX);
        let _ = shared.slots.acquire_many(all).await;
    }
}

impl FileTrigger {
    /// Lists the folder and passes every settling file through the gate; returns the files
    /// that became ready. The gate moves into the blocking task and back.
    async fn scan(&self, shared: &Arc<Shared>, gate: Stability) -> (Stability, Vec<(String, u64)>) {
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
            Ok((gate, Ok(newly_ready))) => (gate, newly_ready),
            Ok((gate, Err(e))) => {
                tracing::warn!(flow = %shared.flow, folder = %self.folder.display(), "cannot scan the watched folder: {e}");
                (gate, Vec::new())
            }
            Err(_) => (fallback, Vec::new()),
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
