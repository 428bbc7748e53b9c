//! The file trigger: hybrid discovery (notifications + periodic rescan), the stability
//! gate, claim by atomic rename into `.inflight/`, recovery at start-up, and the move to
//! `.done/`, `.rejected/` or `.error/` once every message of the file is acknowledged.

use super::decode::{Record, decode};
use super::finish::{Disposition, finish};
use super::is_ignored_name;
use super::stability::Stability;
use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_engine::{
    Acker, BuildContext, Envelope, ErrorKind, Inlet, Message, Meta, Outcome, Trigger,
};
use sluice_flow::{Diagnostic, FileTriggerConfig, OnSuccess};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
        if config.max_in_flight == 0 {
            return Err(cx
                .flow
                .diagnostic(
                    sluice_flow::Span::of(&config.path),
                    "`max_in_flight` must be at least 1",
                )
                .with_help("use 1 or more"));
        }
        Ok(FileTrigger {
            folder: PathBuf::from(folder),
            glob,
            config: config.clone(),
        })
    }
}

/// State shared by the scanner and the claims it spawned.
struct Shared {
    flow: String,
    folder: PathBuf,
    inflight: PathBuf,
    config: FileTriggerConfig,
    in_flight: Mutex<HashSet<String>>,
    poke: mpsc::UnboundedSender<Poke>,
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

/// Why the scanner wakes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Poke {
    /// Something appeared or changed in the folder.
    Folder,
    /// A claim finished, so a slot is free.
    Slot,
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

/// Lists `folder`, forgets files that are gone, looks at every file still settling, and
/// returns the names that just became ready (regular files matching the glob, not temporary).
fn scan(
    folder: &Path,
    glob: &globset::GlobMatcher,
    gate: &mut Stability,
) -> std::io::Result<Vec<String>> {
    let now = Instant::now();
    let mut present = HashSet::new();
    let mut newly_ready = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ignored_name(&name) || !glob.is_match(&name) {
            continue;
        }
        // `file_type` comes from the directory listing itself on Linux: no `stat` call.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if !gate.is_ready(&name) {
            let Ok(meta) = entry.metadata() else { continue };
            if gate.observe(&name, meta.len(), meta.modified().ok(), now) {
                newly_ready.push(name.clone());
            }
        }
        present.insert(name);
    }
    gate.retain(|name| present.contains(name));
    newly_ready.sort();
    Ok(newly_ready)
}

fn list_names(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn watch_folder(
    folder: &Path,
    poke: mpsc::UnboundedSender<Poke>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    use notify::event::{EventKind, ModifyKind, RenameMode};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only appearing or changing files matter; files leaving (our own claims) do not.
        let relevant = event.is_ok_and(|e| match e.kind {
            EventKind::Create(_) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
            EventKind::Modify(_) => true,
            EventKind::Any | EventKind::Other => true,
            EventKind::Access(_) | EventKind::Remove(_) => false,
        });
        if relevant {
            let _ = poke.send(Poke::Folder);
        }
    })
    .map_err(|e| tracing::warn!("file notifications unavailable, relying on rescans: {e}"))
    .ok()?;
    watcher
        .watch(folder, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(folder = %folder.display(), "file notifications unavailable, relying on rescans: {e}"))
        .ok()?;
    Some(watcher)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One claimed file: counts its outstanding messages and moves it when the last is acked.
struct Claim {
    shared: Arc<Shared>,
    name: String,
    path: PathBuf,
    multi: bool,
    remaining: AtomicUsize,
    failures: Mutex<Vec<(Option<usize>, Value, ErrorKind)>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Finished or abandoned (shutdown): either way the name is free again. An abandoned
        // file stays in `.inflight/` and is recovered at the next start.
        lock(&self.shared.in_flight).remove(&self.name);
        let _ = self.shared.poke.send(Poke::Slot);
    }
}

impl Claim {
    fn finish(&self, disposition: Disposition, sidecar: Option<Value>) {
        match finish(
            &self.shared.folder,
            &self.path,
            &self.name,
            disposition,
            sidecar.as_ref(),
        ) {
            Ok(target) => {
                if disposition != Disposition::Done && disposition != Disposition::Delete {
                    tracing::warn!(flow = %self.shared.flow, file = %self.name, to = %target.map(|t| t.display().to_string()).unwrap_or_default(), "file not processed; see its .error.json");
                }
            }
            Err(e) => {
                tracing::error!(flow = %self.shared.flow, file = %self.path.display(), "cannot move the finished file: {e}; it stays in .inflight/ and will be processed again at the next start")
            }
        }
    }

    fn fail_unread(&self, message: String) {
        tracing::warn!(flow = %self.shared.flow, file = %self.name, "{message}");
        let sidecar = json!({
            "flow": self.shared.flow,
            "flow_version": null,
            "step": "trigger",
            "kind": ErrorKind::Trigger,
            "message": message,
            "violations": [],
            "attempts": 1,
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "file": self.name,
        });
        self.finish(Disposition::Error, Some(sidecar));
    }

    fn complete(&self) {
        let failures = std::mem::take(&mut *lock(&self.failures));
        let Some((_, first, _)) = failures.first() else {
            let disposition = match self.shared.config.on_success {
                OnSuccess::Move => Disposition::Done,
                OnSuccess::Delete => Disposition::Delete,
            };
            return self.finish(disposition, None);
        };
        let disposition = if failures.iter().all(|f| f.2 == ErrorKind::Contract) {
            Disposition::Rejected
        } else {
            Disposition::Error
        };
        let mut sidecar = first.clone();
        if let Value::Object(map) = &mut sidecar {
            map.insert("file".to_owned(), Value::String(self.name.clone()));
            if self.multi {
                let records: Vec<Value> = failures
                    .iter()
                    .map(|(line, envelope, _)| {
                        let mut record = envelope.clone();
                        if let Value::Object(r) = &mut record {
                            r.insert("line".to_owned(), json!(line));
                        }
                        record
                    })
                    .collect();
                map.insert("failed_records".to_owned(), Value::Array(records));
            }
        }
        self.finish(disposition, Some(sidecar));
    }
}

/// Marks a claimed file in flight and processes it in a task of its own.
fn start(
    shared: &Arc<Shared>,
    inlet: &Inlet,
    name: String,
    slot: OwnedSemaphorePermit,
    stop: &CancellationToken,
) {
    lock(&shared.in_flight).insert(name.clone());
    tokio::spawn(process(
        shared.clone(),
        inlet.clone(),
        name,
        slot,
        stop.clone(),
    ));
}

/// Reads a claimed file, sends its messages, and leaves the rest to the acks.
async fn process(
    shared: Arc<Shared>,
    inlet: Inlet,
    name: String,
    slot: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let path = shared.inflight.join(&name);
    let max_size = shared.config.max_size.0;
    let format = shared.config.format;
    let claim = |multi: bool| {
        Arc::new(Claim {
            shared: shared.clone(),
            name: name.clone(),
            path: path.clone(),
            multi,
            remaining: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
            _slot: slot,
        })
    };
    let read_path = path.clone();
    let csv = shared.config.csv.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<Result<(u64, Vec<Record>), String>, std::io::Error> {
        let size = std::fs::metadata(&read_path)?.len();
        if size > max_size {
            return Ok(Err(format!(
                "the file is {size} bytes, over the trigger's max_size of {max_size} bytes; it was not read (raise `max_size` to accept it)"
            )));
        }
        let bytes = std::fs::read(&read_path)?;
        Ok(decode(&bytes, format, &csv).map(|records| (size, records)))
    })
    .await;
    let multi = matches!(
        format,
        sluice_flow::FileFormat::Ndjson | sluice_flow::FileFormat::Csv
    );
    let claim = claim(multi);
    let (size, records) = match read {
        Ok(Ok(Ok(decoded))) => decoded,
        Ok(Ok(Err(reason))) => {
            let claim = claim.clone();
            let _ = tokio::task::spawn_blocking(move || claim.fail_unread(reason)).await;
            return;
        }
        Ok(Err(e)) => {
            // Vanished or unreadable: leave it for the next start rather than guess.
            tracing::warn!(flow = %shared.flow, file = %path.display(), "cannot read the claimed file: {e}");
            return;
        }
        Err(_) => return,
    };
    if records.is_empty() {
        let claim = claim.clone();
        let _ = tokio::task::spawn_blocking(move || claim.complete()).await;
        return;
    }
    claim.remaining.store(records.len(), Ordering::SeqCst);
    let original = shared.folder.join(&name).display().to_string();
    // The file is one batch: the engine notices when every message of it has settled
    // (`aggregate … end_of_batch`). A fresh id per claim: a redelivered file is a new batch.
    let batch_id = uuid::Uuid::now_v7().to_string();
    let batch_size = records.len().to_string();
    for record in records {
        if stop.is_cancelled() {
            return;
        }
        let mut meta = Meta::new();
        meta.insert("file.name".to_owned(), name.clone());
        meta.insert("file.path".to_owned(), original.clone());
        meta.insert("file.size".to_owned(), size.to_string());
        if let Some(line) = record.line {
            meta.insert("file.line".to_owned(), line.to_string());
        }
        meta.insert(sluice_engine::hold::BATCH_ID.to_owned(), batch_id.clone());
        meta.insert(
            sluice_engine::hold::BATCH_SIZE.to_owned(),
            batch_size.clone(),
        );
        let message = Message::new(&shared.flow, record.payload, meta);
        let ack = Box::new(FileAck {
            claim: claim.clone(),
            line: record.line,
        });
        let envelope = Envelope {
            message,
            ack,
            reply: false,
        };
        if inlet.send(envelope).await.is_err() {
            return;
        }
    }
}

struct FileAck {
    claim: Arc<Claim>,
    line: Option<usize>,
}

#[async_trait]
impl Acker for FileAck {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        if let Outcome::Failed(failure) = outcome {
            let envelope = serde_json::to_value(&failure.envelope).unwrap_or(Value::Null);
            lock(&self.claim.failures).push((self.line, envelope, failure.error.kind));
        }
        if self.claim.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let claim = self.claim.clone();
            let _ = tokio::task::spawn_blocking(move || claim.complete()).await;
        }
    }
}
