//! Moving finished files out of `.inflight/`: the drain task (`drain.rs`) makes the first
//! try of each; the retries after a failure (a full disk) go through one blocking task that
//! takes them one after the other. Each folder is created once; a file without a sidecar
//! takes the first free name with one atomic rename (`RENAME_NOREPLACE`), without looking at
//! the folder first.

use super::finish::{Disposition, place, rename_new, target_in};
use super::trigger::lock;
use serde_json::Value;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Where a finished file went (`Some(None)`: deleted), once a target was chosen, and whether
/// the move succeeded. A chosen target is kept for the next try, so that a sidecar it wrote
/// is not orphaned.
pub(super) type Placed = (Option<Option<PathBuf>>, io::Result<()>);

/// One move.
pub(super) struct Move {
    pub(super) claimed: PathBuf,
    pub(super) inbox: PathBuf,
    pub(super) name: String,
    pub(super) disposition: Disposition,
    pub(super) sidecar: Option<Arc<Value>>,
    /// The target an earlier try chose.
    pub(super) known: Option<Option<PathBuf>>,
}

#[derive(Default)]
struct Waiting {
    moves: Vec<(Move, oneshot::Sender<Placed>)>,
    running: bool,
}

/// The moves of one trigger.
#[derive(Default)]
pub(super) struct Mover {
    waiting: Mutex<Waiting>,
    /// Folders known to exist (only the mover's task uses it).
    made: Mutex<HashSet<PathBuf>>,
}

impl Mover {
    /// Moves a file; returns once it is done (or failed).
    pub(super) async fn place(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        job: Move,
    ) -> Placed {
        let fallback = job.known.clone();
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut waiting = lock(&self.waiting);
            waiting.moves.push((job, tx));
            !std::mem::replace(&mut waiting.running, true)
        };
        if start {
            let mover = self.clone();
            runtime.spawn_blocking(move || mover.run());
        }
        rx.await.unwrap_or_else(|_| {
            (
                fallback,
                Err(io::Error::other("the task moving finished files ended")),
            )
        })
    }

    /// Takes the waiting moves until there are none.
    fn run(&self) {
        loop {
            let moves = {
                let mut waiting = lock(&self.waiting);
                if waiting.moves.is_empty() {
                    waiting.running = false;
                    return;
                }
                std::mem::take(&mut waiting.moves)
            };
            for (job, reply) in moves {
                let _ = reply.send(self.one(job));
            }
        }
    }

    /// One move, in the calling (blocking) thread.
    pub(super) fn one(&self, job: Move) -> Placed {
        if job.disposition == Disposition::Delete {
            return (Some(None), std::fs::remove_file(&job.claimed));
        }
        let folder = job.inbox.join(job.disposition.folder());
        if let Err(e) = self.make(&folder) {
            return (job.known, Err(e));
        }
        let placed = match (&job.sidecar, job.known) {
            // Nothing is written beside it, so no name needs to be kept for a later try.
            (None, None) => {
                let mut moved = rename_new(&job.claimed, &folder, &job.name);
                if moved
                    .as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
                {
                    // The folder was removed since it was made (or the file is gone).
                    lock(&self.made).remove(&folder);
                    moved = self
                        .make(&folder)
                        .and_then(|()| rename_new(&job.claimed, &folder, &job.name));
                }
                match moved {
                    Ok(to) => (Some(Some(to)), Ok(())),
                    Err(e) => (None, Err(e)),
                }
            }
            (sidecar, known) => {
                let to = match known {
                    Some(to) => to,
                    None => Some(target_in(&folder, &job.name)),
                };
                let placed = place(&job.claimed, to.as_deref(), sidecar.as_deref());
                (Some(to), placed)
            }
        };
        if placed.1.is_err() {
            // The folder may be gone (removed by hand): the next try makes it again.
            lock(&self.made).remove(&folder);
        }
        placed
    }

    fn make(&self, folder: &Path) -> io::Result<()> {
        if lock(&self.made).contains(folder) {
            return Ok(());
        }
        std::fs::create_dir_all(folder)?;
        lock(&self.made).insert(folder.to_path_buf());
        Ok(())
    }
}
