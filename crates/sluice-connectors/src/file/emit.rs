//! Emitting the records of a claimed file (read by `drain.rs`) as messages, each with an
//! acker that counts its outcome towards the file's claim (`claim.rs`).

use super::claim::{Claim, Tally};
use super::decode::{DecodeError, Malformed, Record};
use super::ids::next_v7;
use super::sidecar::FailedRecord;
use super::trigger::{Shared, lock};
use super::xml_stream::Records;
use async_trait::async_trait;
use sluice_engine::{Acker, Envelope, ErrorKind, FlowError, Inlet, Message, Meta, Outcome};
use sluice_engine::{BATCH_ID, BATCH_SIZE, Batch};
use sluice_flow::FileFormat;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// What reading a claimed file gave: its size and records, or why it is refused unread;
/// an I/O error leaves the file where it is.
pub(super) type Read = Result<Result<(u64, Records), Unread>, std::io::Error>;

/// Why a claimed file is set aside unread (to `.error/`, with its sidecar).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unread {
    /// Larger than the trigger's `max_size`: not read into memory at all.
    #[error(
        "the file is {size} bytes, over the trigger's max_size of {max} bytes; it was not read (raise `max_size` to accept it)"
    )]
    TooLarge {
        /// Its size.
        size: u64,
        /// The trigger's `max_size`.
        max: u64,
    },
    /// Its content cannot be read as the trigger's `format` at all.
    #[error(transparent)]
    Undecodable(#[from] DecodeError),
}

/// A file name in flight and the trigger slot it holds, until the file is finished or
/// abandoned (shutdown, unreadable): either way the name is free again. An abandoned file
/// stays in `.inflight/` and is recovered at the next start.
pub(super) struct Busy {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    _slot: OwnedSemaphorePermit,
}

impl Busy {
    /// Marks a claimed file in flight.
    pub(super) fn new(shared: &Arc<Shared>, name: String, slot: OwnedSemaphorePermit) -> Self {
        lock(&shared.in_flight).insert(name.clone());
        Busy {
            shared: shared.clone(),
            name,
            _slot: slot,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Under the queue's lock, so that the drain either sees the name free or finds the
        // file it postponed put back (`drain.rs`).
        let mut queue = lock(&self.shared.queue);
        lock(&self.shared.in_flight).remove(&self.name);
        if queue.released(&self.name) {
            drop(queue);
            self.shared.kick();
        }
    }
}

/// Sends the messages of a claimed file that was read, and leaves the rest to the acks.
pub(super) async fn emit(busy: Busy, read: Read, inlet: &Inlet, stop: &CancellationToken) {
    let shared = busy.shared.clone();
    let name = busy.name.clone();
    let path = shared.inflight.join(&name);
    let format = shared.config.format;
    let per_line = matches!(format, FileFormat::Ndjson | FileFormat::Csv);
    let claim = |total, multi| {
        Arc::new(Claim {
            busy,
            path: path.clone(),
            multi,
            total,
            remaining: AtomicUsize::new(total),
            tally: Mutex::new(Tally::default()),
            stop: stop.clone(),
        })
    };
    let (size, records) = match read {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(reason)) => {
            let error =
                FlowError::permanent(ErrorKind::Trigger, reason.to_string()).at_step("trigger");
            return claim(0, per_line).fail_unread(inlet.envelope(&error));
        }
        Err(e) => {
            // Vanished or unreadable: leave it for the next start rather than guess.
            tracing::warn!(flow = %shared.flow, file = %path.display(), "cannot read the claimed file: {e}");
            return;
        }
    };
    let claim = claim(records.len(), records.per_record(per_line));
    if records.is_empty() {
        return claim.complete();
    }
    let original = shared.folder.join(&name).display().to_string();
    // The file is one batch: the engine notices when every message of it has settled
    // (`aggregate … end_of_batch`). A new batch per claim: a redelivered file is a new batch.
    let batch = Batch::new(records.len());
    let single = records.len() == 1;
    let (batch_id, batch_size) = (batch.id.to_string(), batch.size.to_string());
    for record in records.into_records() {
        if stop.is_cancelled() {
            return;
        }
        let file = FileOrigin {
            name: &name,
            path: &original,
            size,
            batch_id: &batch_id,
            batch_size: &batch_size,
        };
        let (line, source_line) = (record.line, record.source_line);
        let message = file.message(&shared.flow, record);
        let ack = Box::new(FileAck {
            claim: claim.clone(),
            line,
            source_line,
        });
        let envelope = Envelope::new(message, ack).in_batch(batch);
        // A file of one record runs here, to its end, when the flow allows it
        // (`Inlet::process_here`): no hand-off to a worker. The records of a larger file go
        // to the workers, so that they run `concurrency` at once.
        let handed = if single {
            inlet.process_here(envelope).await
        } else {
            inlet.send(envelope).await
        };
        if handed.is_err() {
            return;
        }
    }
}

/// Where a record came from: the metadata every message of a file carries (the local folder's
/// and a remote one's alike).
pub(crate) struct FileOrigin<'a> {
    pub(crate) name: &'a str,
    /// The file's original path (in the watched folder, or on the server).
    pub(crate) path: &'a str,
    pub(crate) size: u64,
    pub(crate) batch_id: &'a str,
    pub(crate) batch_size: &'a str,
}

impl FileOrigin<'_> {
    /// The message of one record, with its `file.*` and batch metadata.
    pub(crate) fn message(&self, flow: &str, record: Record) -> Message {
        let mut meta = Meta::new();
        // Made here rather than by the engine, which draws a random id per message.
        meta.insert("message_id".to_owned(), next_v7().to_string());
        meta.insert("file.name".to_owned(), self.name.to_owned());
        meta.insert("file.path".to_owned(), self.path.to_owned());
        meta.insert("file.size".to_owned(), self.size.to_string());
        if let Some(line) = record.line {
            meta.insert("file.line".to_owned(), line.to_string());
        }
        if let Some(line) = record.source_line {
            meta.insert("file.source_line".to_owned(), line.to_string());
        }
        // Shown to expressions; the engine reads the envelope's typed batch.
        meta.insert(BATCH_ID.to_owned(), self.batch_id.to_owned());
        meta.insert(BATCH_SIZE.to_owned(), self.batch_size.to_owned());
        match record.content {
            Ok(payload) => Message::new(flow, payload, meta),
            // A malformed line or row fails alone, as a `trigger` error whose dead letter
            // keeps the record exactly as it is in the file.
            Err(Malformed { raw, reason }) => Message::undecodable(flow, &raw, reason, meta),
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
                    envelope: failure.envelope,
                    kind: failure.error.kind,
                    dead_lettered: failure.dead_lettered,
                }),
            }
        }
        if self.claim.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The move is queued for the drain task, not awaited: the worker takes its next
            // message meanwhile. The file's slot stays taken until the move is done, and a
            // draining shutdown waits for every slot (`trigger.rs`).
            self.claim.clone().complete();
        }
    }
}
