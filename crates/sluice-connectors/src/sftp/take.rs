//! One file of the SFTP trigger: claimed by a server-side rename into `.inflight/` (of two
//! processes renaming the same file, one succeeds), read in a stream of bounded size,
//! decoded as the file trigger decodes (`file::decode`), emitted as messages whose acks are
//! counted; once the last one has settled, the file goes where `file::claim::Verdict`
//! says (`place.rs`).

use super::place::place;
use super::trigger::{Shared, lock};
use crate::file::claim::{Tally, Verdict};
use crate::file::decode::{Record, XmlReading, decode_file};
use crate::file::emit::Unread;
use crate::file::sidecar::FailedRecord;
use async_trait::async_trait;
use sluice_engine::Batch;
use sluice_engine::{Acker, Envelope, ErrorKind, FlowError, Inlet, Outcome};
use sluice_flow::FileFormat;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;

/// The longest pause between two tries to read a claimed file over a broken connection.
const MAX_READ_BACKOFF: Duration = Duration::from_secs(5);

/// A file this process holds in `.inflight/`, and its slot, until it is moved or abandoned.
/// While held, its lease is kept (`lease.rs`); an abandoned file's lease runs out, and it is
/// taken again.
pub(super) struct Held {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    _slot: OwnedSemaphorePermit,
}

impl Held {
    fn new(shared: &Arc<Shared>, name: String, slot: OwnedSemaphorePermit) -> Held {
        lock(&shared.held).insert(name.clone(), 0);
        Held {
            shared: shared.clone(),
            name,
            _slot: slot,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.shared.held).remove(&self.name);
        self.shared.freed.notify_one();
    }
}

/// Claims, reads and emits one ready file.
pub(super) async fn take(
    shared: Arc<Shared>,
    inlet: Inlet,
    name: String,
    size: u64,
    slot: OwnedSemaphorePermit,
) {
    let remote = &shared.link.remote;
    let from = remote.path(&name);
    let to = remote.path_in(".inflight", &name);
    let claimed = {
        let (from, to) = (from.clone(), to.clone());
        shared
            .link
            .run("rename", &from.clone(), |s| async move {
                s.sftp.rename(from, to).await
            })
            .await
    };
    match claimed {
        Ok(()) => {}
        // Taken by another process, or deleted.
        Err(e) if e.not_found() => return,
        Err(e) => {
            // A file of that name in `.inflight/` (held by another process, or left by one
            // that stopped, until its lease runs out) is no news; anything else is.
            let to_owned = to.clone();
            let busy = shared
                .link
                .run(
                    "stat",
                    &to,
                    |s| async move { s.sftp.try_exists(to_owned).await },
                )
                .await
                .unwrap_or(false);
            if busy {
                tracing::debug!(flow = %shared.flow, file = %from, "a file of this name is in .inflight/; taken once that one is gone");
            } else {
                tracing::warn!(flow = %shared.flow, file = %from, "cannot claim the file: {e}; trying again at the next listing");
            }
            // The slot is free again: the scanner may hand out the next file.
            shared.freed.notify_one();
            return;
        }
    }
    let held = Held::new(&shared, name, slot);
    let Some(read) = read(&shared, &to, size).await else {
        return;
    };
    emit(held, read, &inlet).await;
}

/// Reads a claimed file (`None`: gone, or the trigger stops before it could be read; it
/// stays for its lease to run out). A broken connection is retried.
async fn read(
    shared: &Arc<Shared>,
    path: &str,
    size: u64,
) -> Option<Result<(u64, Vec<Record>), Unread>> {
    let max_size = shared.config.max_size.0;
    if size > max_size {
        return Some(Err(Unread::TooLarge {
            size,
            max: max_size,
        }));
    }
    let mut pause = Duration::from_millis(100);
    let bytes = loop {
        let path_owned = path.to_owned();
        let got = shared
            .link
            .run("read", path, |s| async move {
                let file = s.sftp.open(path_owned).await?;
                let capacity = usize::try_from(size).unwrap_or(0).saturating_add(1);
                let mut bytes = Vec::with_capacity(capacity);
                // Streamed in the client's chunks; never more than `max_size` + 1 bytes.
                file.take(max_size.saturating_add(1))
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(russh_sftp::client::error::Error::from)?;
                Ok(bytes)
            })
            .await;
        match got {
            Ok(bytes) => break bytes,
            Err(e) if e.not_found() => {
                tracing::warn!(flow = %shared.flow, file = %path, "the claimed file is gone (its lease ran out and another process took it?): {e}");
                return None;
            }
            Err(e) => {
                tracing::warn!(flow = %shared.flow, file = %path, "cannot read the claimed file: {e}; trying again");
                tokio::select! {
                    _ = shared.stop.cancelled() => return None,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_READ_BACKOFF);
            }
        }
    };
    if bytes.len() as u64 > max_size {
        return Some(Err(Unread::TooLarge {
            size: bytes.len() as u64,
            max: max_size,
        }));
    }
    let (format, csv) = (shared.config.format, shared.config.csv.clone());
    // Checked at load (`XmlReading::checked`); a remote file is decoded from memory, so its
    // records are split there too.
    let xml = XmlReading::new(&shared.config.xml).unwrap_or_default();
    let decoded = tokio::task::spawn_blocking(move || {
        decode_file(&bytes, format, &csv, &xml).map(|records| (bytes.len() as u64, records))
    })
    .await
    .ok()?;
    Some(decoded.map_err(Unread::from))
}

/// One claimed and read file: counts its outstanding messages and places it when the last
/// one has settled.
struct Claim {
    /// Taken out by the last ack (an ack may run before `emit` has let go of its clone).
    held: Mutex<Option<Held>>,
    total: usize,
    multi: bool,
    remaining: AtomicUsize,
    tally: Mutex<Tally>,
}

impl Claim {
    fn complete(&self) {
        let Some(held) = lock(&self.held).take() else {
            return;
        };
        let tally = std::mem::take(&mut *lock(&self.tally));
        let verdict = Verdict::of(
            &held.name,
            tally,
            self.total,
            self.multi,
            held.shared.config.on_success,
        );
        tokio::spawn(place(held, verdict));
    }
}

/// Sends the messages of a read file, and leaves the rest to the acks.
async fn emit(held: Held, read: Result<(u64, Vec<Record>), Unread>, inlet: &Inlet) {
    let shared = held.shared.clone();
    let name = held.name.clone();
    let multi = matches!(shared.config.format, FileFormat::Ndjson | FileFormat::Csv);
    let (size, records) = match read {
        Ok(decoded) => decoded,
        Err(reason) => {
            let error =
                FlowError::permanent(ErrorKind::Trigger, reason.to_string()).at_step("trigger");
            let verdict = Verdict::unread(&name, &inlet.envelope(&error));
            return place(held, verdict).await;
        }
    };
    if records.is_empty() {
        let verdict = Verdict::of(&name, Tally::default(), 0, multi, shared.config.on_success);
        return place(held, verdict).await;
    }
    let claim = Arc::new(Claim {
        held: Mutex::new(Some(held)),
        total: records.len(),
        multi,
        remaining: AtomicUsize::new(records.len()),
        tally: Mutex::new(Tally::default()),
    });
    let original = shared.link.remote.path(&name);
    let batch = Batch::new(records.len());
    let (batch_id, batch_size) = (batch.id.to_string(), batch.size.to_string());
    for record in records {
        if shared.stop.is_cancelled() {
            return;
        }
        let file = crate::file::emit::FileOrigin {
            name: &name,
            path: &original,
            size,
            batch_id: &batch_id,
            batch_size: &batch_size,
        };
        let (line, source_line) = (record.line, record.source_line);
        let message = file.message(&shared.flow, record);
        let ack = Box::new(SftpAck {
            claim: claim.clone(),
            line,
            source_line,
        });
        if inlet
            .send(Envelope::new(message, ack).in_batch(batch))
            .await
            .is_err()
        {
            return;
        }
    }
}

struct SftpAck {
    claim: Arc<Claim>,
    line: Option<usize>,
    source_line: Option<usize>,
}

#[async_trait]
impl Acker for SftpAck {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        {
            let mut tally = lock(&self.claim.tally);
            match outcome {
                Outcome::Delivered(_) | Outcome::Completed(_) => tally.delivered += 1,
                Outcome::Filtered => tally.filtered += 1,
                Outcome::Failed(failure) => tally.failed.push(FailedRecord {
                    line: self.line,
                    source_line: self.source_line,
                    envelope: failure.envelope,
                    kind: failure.error.kind,
                    dead_lettered: failure.dead_lettered,
                }),
            }
        }
        if self.claim.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.claim.complete();
        }
    }
}
