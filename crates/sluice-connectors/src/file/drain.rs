//! The drain: a blocking task does the trigger's file work in a row, for as long as there is
//! any: it moves finished files out of `.inflight/` (first, since that frees their slots),
//! and takes the ready files one after the other (waits for a free slot, claims the file by
//! renaming it into `.inflight/`, reads it and hands its messages on), instead of a task and
//! a `spawn_blocking` for every read and every move. When the flow does only local work
//! (`CompiledFlow::in_place`: no network step or sink) and a file holds one record, the
//! drain runs its message right there, to its end, and one drain per core runs; otherwise it
//! queues the messages and the flow's bounded queue paces it: it claims a file only once the
//! queue took the last one's messages.

use super::claim::{Claim, Summary};
use super::emit::{Busy, Read, Unread, emit};
use super::finish::Disposition;
use super::mover::Move;
use super::trigger::{Shared, lock};
use super::xml_stream::Records;
use serde_json::Value;
use std::collections::VecDeque;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Room for the end of the file past the size the scan saw, so that one `read` takes the
/// whole file and the next finds its end.
const READ_SLACK: usize = 64;

/// A file for the drain.
pub(super) enum Next {
    /// Ready in the watched folder, with the size the stability gate saw.
    Ready(String, u64),
    /// Left in `.inflight/` by an earlier run: already claimed.
    Recovered(String),
}

impl Next {
    fn name(&self) -> &str {
        match self {
            Next::Ready(name, _) | Next::Recovered(name) => name,
        }
    }
}

/// A claimed file whose messages have all settled, waiting to be moved to where it belongs.
pub(super) struct Finish {
    pub(super) claim: Arc<Claim>,
    pub(super) disposition: Disposition,
    pub(super) sidecar: Option<Arc<Value>>,
    pub(super) summary: Summary,
}

/// The drain's work, shared by the scanner (which adds the ready files), the acks (which add
/// the finished ones) and the drain (which takes both).
#[derive(Default)]
pub(super) struct Queue {
    files: VecDeque<Next>,
    finished: Vec<Finish>,
    /// Files whose name is still in flight (an earlier file of the same name is being
    /// processed): taken once that one is finished.
    postponed: Vec<Next>,
    /// Names claimed since the scanner last asked: the gate forgets them, so that a new file
    /// of the same name is gated afresh.
    claimed: Vec<String>,
    /// How many drain tasks are running.
    running: usize,
}

impl Queue {
    /// The names claimed since the last call (for the gate to forget).
    pub(super) fn take_claimed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.claimed)
    }

    /// A file of this name is finished: files of the same name that waited for it go back
    /// to the front. True when the drain has something new to take.
    pub(super) fn released(&mut self, name: &str) -> bool {
        let Some(at) = self.postponed.iter().position(|n| n.name() == name) else {
            return false;
        };
        let next = self.postponed.remove(at);
        self.files.push_front(next);
        true
    }
}

/// Drain tasks at most: one per core, since a drain runs its files' messages in place
/// (when the flow allows it) and so does all of their work; more would only contend.
fn drains() -> usize {
    static DRAINS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DRAINS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

/// What the drain task does next.
enum Work {
    Move(Vec<Finish>),
    Take(Next),
}

impl Shared {
    /// Adds ready files and starts a drain unless enough are running.
    pub(super) fn push(self: &Arc<Self>, files: impl IntoIterator<Item = Next>) {
        let start = {
            let mut queue = lock(&self.queue);
            queue.files.extend(files);
            self.should_start(&mut queue)
        };
        self.start_if(start);
    }

    /// Queues a finished file for its move; it is moved even after the trigger stopped (the
    /// trigger waits for it then).
    pub(super) fn finish(self: &Arc<Self>, finished: Finish) {
        let start = {
            let mut queue = lock(&self.queue);
            queue.finished.push(finished);
            self.should_start(&mut queue)
        };
        // A drain waiting for a slot moves it.
        self.moves_waiting.notify_one();
        self.start_if(start);
    }

    /// Starts a drain if there is work and fewer than [`drains`] are running.
    pub(super) fn kick(self: &Arc<Self>) {
        let start = self.should_start(&mut lock(&self.queue));
        self.start_if(start);
    }

    fn should_start(&self, queue: &mut Queue) -> bool {
        let work =
            !queue.finished.is_empty() || !queue.files.is_empty() && !self.stop.is_cancelled();
        if queue.running >= drains() || !work {
            return false;
        }
        queue.running += 1;
        true
    }

    fn start_if(self: &Arc<Self>, start: bool) {
        if start {
            let shared = self.clone();
            self.runtime.spawn_blocking(move || shared.drain());
        }
    }

    /// The drain task: works until there is nothing left to do.
    fn drain(self: Arc<Self>) {
        loop {
            let work = {
                let mut queue = lock(&self.queue);
                if !queue.finished.is_empty() {
                    Work::Move(std::mem::take(&mut queue.finished))
                } else {
                    match queue.files.pop_front() {
                        Some(next) if !self.stop.is_cancelled() => Work::Take(next),
                        _ => {
                            queue.running -= 1;
                            return;
                        }
                    }
                }
            };
            match work {
                Work::Move(finished) => {
                    for finished in finished {
                        self.place(finished);
                    }
                }
                Work::Take(next) => self.take(next),
            }
        }
    }

    /// Claims, reads and emits one file, once a slot is free.
    fn take(self: &Arc<Self>, next: Next) {
        if lock(&self.in_flight).contains(next.name()) {
            // Taken when the file of the same name is finished (`Queue::released`); checked
            // again under the queue's lock, in case it just was.
            let mut queue = lock(&self.queue);
            if lock(&self.in_flight).contains(next.name()) {
                queue.postponed.push(next);
            } else {
                queue.files.push_front(next);
            }
            return;
        }
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Wait for a slot, or for a finished file to move (which frees one).
                lock(&self.queue).files.push_front(next);
                self.runtime.block_on(async {
                    tokio::select! {
                        _ = self.stop.cancelled() => {}
                        _ = self.moves_waiting.notified() => {}
                        slot = self.slots.clone().acquire_owned() => drop(slot),
                    }
                });
                return;
            }
        };
        // Gone once the trigger stops: nothing more is claimed then.
        let Some(inlet) = lock(&self.inlet).clone() else {
            return;
        };
        let Some((busy, size_hint)) = self.claim(next, slot) else {
            return;
        };
        let path = self.inflight.join(&busy.name);
        let read = read(&path, size_hint, self);
        // The messages run here when the flow does only local work (`emit.rs`).
        sluice_engine::in_place::block_on(&self.runtime, emit(busy, read, &inlet, &self.stop));
    }

    /// Claims a ready file by renaming it into `.inflight/` (a recovered one already is).
    fn claim(
        self: &Arc<Self>,
        next: Next,
        slot: OwnedSemaphorePermit,
    ) -> Option<(Busy, Option<u64>)> {
        let (name, size_hint) = match next {
            Next::Recovered(name) => (name, None),
            Next::Ready(name, size) => {
                let from = self.folder.join(&name);
                let claimed = std::fs::rename(&from, self.inflight.join(&name));
                lock(&self.queue).claimed.push(name.clone());
                match claimed {
                    Ok(()) => (name, Some(size)),
                    // Taken by someone else, or deleted: nothing to do.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                    Err(e) => {
                        tracing::warn!(flow = %self.flow, file = %from.display(), "cannot claim the file: {e}");
                        return None;
                    }
                }
            }
        };
        Some((Busy::new(self, name, slot), size_hint))
    }

    /// Moves a finished file; a move that fails is tried again in a task of its own.
    fn place(&self, finished: Finish) {
        let Finish {
            claim,
            disposition,
            sidecar,
            summary,
        } = finished;
        let job = Move {
            claimed: claim.path.clone(),
            inbox: self.folder.clone(),
            name: claim.busy.name.clone(),
            disposition,
            sidecar: sidecar.clone(),
            known: None,
        };
        match self.mover.one(job) {
            (chosen, Ok(())) => claim.report(chosen, 0, summary),
            (chosen, Err(e)) => {
                self.runtime
                    .spawn(claim.retry(disposition, sidecar, chosen, e, summary));
            }
        }
    }
}

/// Reads a claimed file without a `stat` when the scan saw its size: at most `max_size` + 1
/// bytes (a file that grew past it since is refused all the same), into a buffer of that
/// size. A file too large, or of unknown size, is looked at first and not read when too large.
fn read(path: &Path, size_hint: Option<u64>, shared: &Shared) -> Read {
    let max_size = shared.config.max_size.0;
    let too_large = |size: u64| Unread::TooLarge {
        size,
        max: max_size,
    };
    let file = std::fs::File::open(path)?;
    let size = match size_hint {
        Some(size) if size <= max_size => size,
        _ => {
            let size = file.metadata()?.len();
            if size > max_size {
                return Ok(Err(too_large(size)));
            }
            size
        }
    };
    if shared.xml.record.is_some() && shared.config.format == sluice_flow::FileFormat::Xml {
        // Streamed: never read into memory (`xml_stream.rs`).
        return Ok(match super::xml_stream::count(&file, &shared.xml) {
            Ok(count) => Ok((
                size,
                Records::Xml {
                    path: path.to_owned(),
                    count,
                    xml: shared.xml.clone(),
                },
            )),
            Err(e) => Err(Unread::from(e)),
        });
    }
    let capacity = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .saturating_add(READ_SLACK);
    let mut bytes = Vec::with_capacity(capacity);
    (&file)
        .take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_size {
        return Ok(Err(too_large(file.metadata()?.len())));
    }
    Ok(super::decode::decode_file(
        &bytes,
        shared.config.format,
        &shared.config.csv,
        &shared.xml,
    )
    .map(|records| (bytes.len() as u64, Records::Decoded(records)))
    .map_err(Unread::from))
}
