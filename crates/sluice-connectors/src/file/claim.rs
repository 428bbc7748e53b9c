//! One claimed file: its records become messages, their outcomes are counted, and once the
//! last one has settled the file goes to the place that says what happened to it. That move is
//! retried in-process until it succeeds (a full disk gets space back), so a file whose
//! messages were all handled is never processed a second time by a later restart.

use super::decode::{Malformed, Record, decode};
use super::finish::{Disposition, place, target};
use super::trigger::{Poke, Shared, lock};
use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_engine::{Acker, Envelope, ErrorKind, Inlet, Message, Meta, Outcome};
use sluice_flow::{FileFormat, OnSuccess};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// At most this many failed records are listed in a sidecar's `failed_records` (the first
/// ones by line); `records.failed` always has the full count.
const MAX_LISTED: usize = 10_000;

/// The longest wait between two tries to move a finished file.
const MAX_SETTLE_BACKOFF: Duration = Duration::from_secs(5);

/// Marks a claimed file in flight and processes it in a task of its own.
pub(super) fn start(
    shared: &Arc<Shared>,
    inlet: &Inlet,
    name: String,
    slot: OwnedSemaphorePermit,
    stop: &CancellationToken,
) {
    lock(&shared.in_flight).insert(name.clone());
    let busy = Busy {
        shared: shared.clone(),
        name,
        _slot: slot,
    };
    tokio::spawn(process(busy, inlet.clone(), stop.clone()));
}

/// A file name in flight and the trigger slot it holds, until the file is finished or
/// abandoned (shutdown, unreadable): either way the name is free again. An abandoned file
/// stays in `.inflight/` and is recovered at the next start.
struct Busy {
    shared: Arc<Shared>,
    name: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.shared.in_flight).remove(&self.name);
        let _ = self.shared.poke.send(Poke::Slot);
    }
}

/// How one failed record ended.
struct FailedRecord {
    line: Option<usize>,
    source_line: Option<usize>,
    envelope: Value,
    kind: ErrorKind,
    dead_lettered: bool,
}

#[derive(Default)]
struct Tally {
    delivered: usize,
    filtered: usize,
    failed: Vec<FailedRecord>,
}

/// One claimed file: counts its outstanding messages and moves it when the last is acked.
struct Claim {
    busy: Busy,
    path: PathBuf,
    multi: bool,
    total: usize,
    remaining: AtomicUsize,
    tally: Mutex<Tally>,
    stop: CancellationToken,
}

/// The log line that says what happened to a finished file, written once it is in place.
enum Summary {
    Quiet,
    Done(String),
    Failed(String),
}

/// Reads a claimed file, sends its messages, and leaves the rest to the acks.
async fn process(busy: Busy, inlet: Inlet, stop: CancellationToken) {
    let shared = busy.shared.clone();
    let name = busy.name.clone();
    let path = shared.inflight.join(&name);
    let max_size = shared.config.max_size.0;
    let format = shared.config.format;
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
    let claim = |total| {
        Arc::new(Claim {
            busy,
            path: path.clone(),
            multi: matches!(format, FileFormat::Ndjson | FileFormat::Csv),
            total,
            remaining: AtomicUsize::new(total),
            tally: Mutex::new(Tally::default()),
            stop: stop.clone(),
        })
    };
    let (size, records) = match read {
        Ok(Ok(Ok(decoded))) => decoded,
        Ok(Ok(Err(reason))) => return claim(0).fail_unread(reason).await,
        Ok(Err(e)) => {
            // Vanished or unreadable: leave it for the next start rather than guess.
            tracing::warn!(flow = %shared.flow, file = %path.display(), "cannot read the claimed file: {e}");
            return;
        }
        Err(_) => return,
    };
    let claim = claim(records.len());
    if records.is_empty() {
        return claim.complete().await;
    }
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
        if let Some(line) = record.source_line {
            meta.insert("file.source_line".to_owned(), line.to_string());
        }
        meta.insert(sluice_engine::hold::BATCH_ID.to_owned(), batch_id.clone());
        meta.insert(
            sluice_engine::hold::BATCH_SIZE.to_owned(),
            batch_size.clone(),
        );
        let message = match record.content {
            Ok(payload) => Message::new(&shared.flow, payload, meta),
            // A malformed line or row fails alone, as a `trigger` error whose dead letter
            // keeps the record exactly as it is in the file.
            Err(Malformed { raw, reason }) => {
                Message::undecodable(&shared.flow, &raw, reason, meta)
            }
        };
        let ack = Box::new(FileAck {
            claim: claim.clone(),
            line: record.line,
            source_line: record.source_line,
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
    source_line: Option<usize>,
}

#[async_trait]
impl Acker for FileAck {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        {
            let mut tally = lock(&self.claim.tally);
            match outcome {
                Outcome::Delivered(_) | Outcome::Completed(_) => tally.delivered += 1,
                Outcome::Filtered => tally.filtered += 1,
                Outcome::Failed(failure) => tally.failed.push(FailedRecord {
                    line: self.line,
                    source_line: self.source_line,
                    envelope: serde_json::to_value(&failure.envelope).unwrap_or(Value::Null),
                    kind: failure.error.kind,
                    dead_lettered: failure.dead_lettered,
                }),
            }
        }
        if self.claim.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Awaited, so that a draining shutdown waits for the move; a move that has to
            // wait for disk space goes on in a task of its own.
            self.claim.clone().complete().await;
        }
    }
}

impl Claim {
    fn flow(&self) -> &str {
        &self.busy.shared.flow
    }

    /// The file could not be read at all: `.error/`, with the reason.
    async fn fail_unread(self: Arc<Self>, reason: String) {
        let sidecar = json!({
            "flow": self.flow(),
            "flow_version": null,
            "step": "trigger",
            "kind": ErrorKind::Trigger,
            "message": reason,
            "violations": [],
            "attempts": 1,
            "time": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "file": self.busy.name,
            "dead_lettered": false,
        });
        let summary = Summary::Failed(format!("file not processed: {reason}; see its .error.json"));
        self.settle(Disposition::Error, Some(sidecar), summary)
            .await;
    }

    /// Every message has settled: decide where the file goes and what its sidecar says.
    async fn complete(self: Arc<Self>) {
        let mut tally = std::mem::take(&mut *lock(&self.tally));
        let failed = tally.failed.len();
        let total = self.total;
        let succeeded = total.saturating_sub(failed);
        let counts = format!("{} delivered, {} filtered", tally.delivered, tally.filtered);
        if failed == 0 {
            let disposition = match self.busy.shared.config.on_success {
                OnSuccess::Move => Disposition::Done,
                OnSuccess::Delete => Disposition::Delete,
            };
            let summary = if self.multi {
                Summary::Done(format!(
                    "file done: all {total} records succeeded ({counts})"
                ))
            } else {
                Summary::Quiet
            };
            return self.settle(disposition, None, summary).await;
        }
        tally.failed.sort_by_key(|f| f.line);
        let dead_lettered = tally.failed.iter().filter(|f| f.dead_lettered).count();
        let (disposition, summary) = if self.multi && succeeded > 0 {
            (
                Disposition::Partial,
                format!(
                    "file partly processed: {failed} of {total} records failed ({dead_lettered} of them dead-lettered), {succeeded} succeeded ({counts}); the failed records are listed in its .error.json; do not drop the file again, its other records were delivered"
                ),
            )
        } else {
            let disposition = if tally.failed.iter().all(|f| f.kind == ErrorKind::Contract) {
                Disposition::Rejected
            } else {
                Disposition::Error
            };
            let what = if self.multi {
                format!("all {total} records failed ({dead_lettered} of them dead-lettered)")
            } else {
                let first = &tally.failed[0];
                format!(
                    "its message failed with a {} error{}",
                    first.kind,
                    if first.dead_lettered {
                        " (dead-lettered)"
                    } else {
                        ""
                    }
                )
            };
            (
                disposition,
                format!("file not processed: {what}; see its .error.json"),
            )
        };
        let sidecar = self.sidecar(&tally.failed, dead_lettered);
        self.settle(disposition, Some(sidecar), Summary::Failed(summary))
            .await;
    }

    /// The first failure's envelope and the file's name; for `ndjson` and `csv` also the
    /// counts and every failed record with its line.
    fn sidecar(&self, failed: &[FailedRecord], dead_lettered: usize) -> Value {
        let mut sidecar = failed[0].envelope.clone();
        let Value::Object(map) = &mut sidecar else {
            return sidecar;
        };
        map.insert("file".to_owned(), json!(self.busy.name));
        if !self.multi {
            map.insert("dead_lettered".to_owned(), json!(failed[0].dead_lettered));
            return sidecar;
        }
        map.insert(
            "records".to_owned(),
            json!({
                "total": self.total,
                "succeeded": self.total.saturating_sub(failed.len()),
                "failed": failed.len(),
                "dead_lettered": dead_lettered,
            }),
        );
        let listed: Vec<Value> = failed
            .iter()
            .take(MAX_LISTED)
            .map(|f| {
                let mut record = f.envelope.clone();
                if let Value::Object(r) = &mut record {
                    r.insert("line".to_owned(), json!(f.line));
                    if let Some(line) = f.source_line {
                        r.insert("source_line".to_owned(), json!(line));
                    }
                    r.insert("dead_lettered".to_owned(), json!(f.dead_lettered));
                }
                record
            })
            .collect();
        map.insert("failed_records".to_owned(), Value::Array(listed));
        sidecar
    }

    /// Moves the file to its place; when that fails, tries again in a task of its own (see
    /// [`Claim::retry`]). The first try is awaited by the acknowledgement, so a shutdown that
    /// drains the flow also waits for the file to be moved.
    async fn settle(
        self: Arc<Self>,
        disposition: Disposition,
        sidecar: Option<Value>,
        summary: Summary,
    ) {
        let sidecar = sidecar.map(Arc::new);
        let (chosen, result) = self.try_place(disposition, &sidecar, None).await;
        match result {
            Ok(()) => self.report(chosen, 0, summary),
            Err(e) => {
                tokio::spawn(self.retry(disposition, sidecar, chosen, e, summary));
            }
        }
    }

    /// Tries the move again with a growing pause (up to 5 s) until it succeeds or the trigger
    /// stops; only then does the summary go to the log. The file's name and slot stay taken
    /// meanwhile, so a full disk also keeps new claims from piling up.
    async fn retry(
        self: Arc<Self>,
        disposition: Disposition,
        sidecar: Option<Arc<Value>>,
        mut chosen: Option<Option<PathBuf>>,
        mut error: std::io::Error,
        summary: Summary,
    ) {
        let mut failures = 0u32;
        let mut pause = Duration::from_millis(100);
        loop {
            failures += 1;
            if failures == 1 || failures.is_multiple_of(60) {
                tracing::error!(flow = %self.flow(), file = %self.path.display(), attempts = failures, "cannot move the finished file out of .inflight/: {error}; its messages are done, and sluice tries again until the move succeeds (free disk space, or fix the folder's permissions)");
            }
            tokio::select! {
                _ = self.stop.cancelled() => {
                    tracing::warn!(flow = %self.flow(), file = %self.path.display(), "stopping before the finished file could be moved: it stays in .inflight/ and is processed again at the next start");
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_SETTLE_BACKOFF);
            let (to, result) = self.try_place(disposition, &sidecar, chosen.clone()).await;
            chosen = to;
            match result {
                Ok(()) => return self.report(chosen, failures, summary),
                Err(e) => error = e,
            }
        }
    }

    /// One try: picks the target (once; `known` keeps the one picked before, so that a
    /// sidecar written by an earlier try is not left orphaned) and moves the file there.
    async fn try_place(
        &self,
        disposition: Disposition,
        sidecar: &Option<Arc<Value>>,
        known: Option<Option<PathBuf>>,
    ) -> (Option<Option<PathBuf>>, std::io::Result<()>) {
        let (claimed, name) = (self.path.clone(), self.busy.name.clone());
        let (inbox, sidecar) = (self.busy.shared.folder.clone(), sidecar.clone());
        let fallback = known.clone();
        let attempt = tokio::task::spawn_blocking(move || {
            let to = match known {
                Some(to) => to,
                None => match target(&inbox, &name, disposition) {
                    Ok(to) => to,
                    Err(e) => return (None, Err(e)),
                },
            };
            let placed = place(&claimed, to.as_deref(), sidecar.as_deref());
            (Some(to), placed)
        })
        .await;
        match attempt {
            Ok(done) => done,
            Err(e) => (fallback, Err(std::io::Error::other(e))),
        }
    }

    /// The log line that says where the file went and why.
    fn report(&self, chosen: Option<Option<PathBuf>>, failures: u32, summary: Summary) {
        let to = chosen
            .flatten()
            .map(|t| t.display().to_string())
            .unwrap_or_else(|| "(deleted)".to_owned());
        if failures > 0 {
            tracing::info!(flow = %self.flow(), file = %self.busy.name, to = %to, "moved the finished file after {failures} failed attempts");
        }
        match summary {
            Summary::Quiet => {
                tracing::debug!(flow = %self.flow(), file = %self.busy.name, to = %to, "file done")
            }
            Summary::Done(line) => {
                tracing::info!(flow = %self.flow(), file = %self.busy.name, to = %to, "{line}")
            }
            Summary::Failed(line) => {
                tracing::warn!(flow = %self.flow(), file = %self.busy.name, to = %to, "{line}")
            }
        }
    }
}
