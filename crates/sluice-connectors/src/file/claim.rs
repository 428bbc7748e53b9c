//! One claimed file: its records' outcomes are counted, and once the last one has settled
//! the file goes to the place that says what happened to it, with its sidecar. That move is
//! retried in-process until it succeeds (a full disk gets space back), so a file whose
//! messages were all handled is never processed a second time by a later restart.

use super::drain::Finish;
use super::emit::Busy;
use super::finish::Disposition;
use super::mover::Move;
use super::sidecar::{FailedRecord, Sidecar};
use super::trigger::lock;
use serde_json::Value;
use sluice_engine::{ErrorEnvelope, ErrorKind};
use sluice_flow::OnSuccess;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest wait between two tries to move a finished file.
const MAX_SETTLE_BACKOFF: Duration = Duration::from_secs(5);

/// How the messages of one file ended, counted as they settle.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) delivered: usize,
    pub(crate) filtered: usize,
    pub(crate) failed: Vec<FailedRecord>,
}

/// One claimed file: counts its outstanding messages and moves it when the last is acked.
pub(super) struct Claim {
    pub(super) busy: Busy,
    pub(super) path: PathBuf,
    pub(super) multi: bool,
    pub(super) total: usize,
    pub(super) remaining: AtomicUsize,
    pub(super) tally: Mutex<Tally>,
    pub(super) stop: CancellationToken,
}

/// The log line that says what happened to a finished file, written once it is in place.
pub(crate) enum Summary {
    Quiet,
    Done(String),
    Failed(String),
}

impl Summary {
    /// Writes the line, once the file is in place (`to`: where it went).
    pub(crate) fn log(self, flow: &str, file: &str, to: &str) {
        match self {
            Summary::Quiet => {
                tracing::debug!(flow = %flow, file = %file, to = %to, "file done")
            }
            Summary::Done(line) => {
                tracing::info!(flow = %flow, file = %file, to = %to, "{line}")
            }
            Summary::Failed(line) => {
                tracing::warn!(flow = %flow, file = %file, to = %to, "{line}")
            }
        }
    }
}

/// Where a finished file goes, its sidecar, and the line that says so: decided once every
/// message of the file has settled, the same way for every trigger that takes files (the
/// local folder, SFTP).
pub(crate) struct Verdict {
    /// Its end.
    pub(crate) disposition: Disposition,
    /// The `<name>.error.json` written beside it, if it failed.
    pub(crate) sidecar: Option<Value>,
    /// The log line, written once it is in place.
    pub(crate) summary: Summary,
}

impl Verdict {
    /// The file could not be read at all: `.error/`, with the reason.
    pub(crate) fn unread(name: &str, error: &ErrorEnvelope) -> Verdict {
        Verdict {
            disposition: Disposition::Error,
            sidecar: Some(Sidecar::unread(name, error).to_value()),
            summary: Summary::Failed(format!(
                "file not processed: {}; see its .error.json (message id {})",
                error.message, error.message_id
            )),
        }
    }

    /// Every message of a file of `total` (records, when `multi`) has settled as `tally`
    /// says.
    pub(crate) fn of(
        name: &str,
        mut tally: Tally,
        total: usize,
        multi: bool,
        on_success: OnSuccess,
    ) -> Verdict {
        let failed = tally.failed.len();
        let succeeded = total.saturating_sub(failed);
        let counts = format!("{} delivered, {} filtered", tally.delivered, tally.filtered);
        if failed == 0 {
            let disposition = match on_success {
                OnSuccess::Move => Disposition::Done,
                OnSuccess::Delete => Disposition::Delete,
            };
            let summary = if multi {
                Summary::Done(format!(
                    "file done: all {total} records succeeded ({counts})"
                ))
            } else {
                Summary::Quiet
            };
            return Verdict {
                disposition,
                sidecar: None,
                summary,
            };
        }
        tally.failed.sort_by_key(|f| f.line);
        let dead_lettered = tally.failed.iter().filter(|f| f.dead_lettered).count();
        let (disposition, summary) = if multi && succeeded > 0 {
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
            let what = if multi {
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
        let sidecar =
            Sidecar::failed(name, &tally.failed, total, multi).map(|sidecar| sidecar.to_value());
        Verdict {
            disposition,
            sidecar,
            summary: Summary::Failed(summary),
        }
    }
}

impl Claim {
    fn flow(&self) -> &str {
        &self.busy.shared.flow
    }

    /// The file could not be read at all: `.error/`, with the reason.
    pub(super) fn fail_unread(self: Arc<Self>, error: ErrorEnvelope) {
        let Verdict {
            disposition,
            sidecar,
            summary,
        } = Verdict::unread(&self.busy.name, &error);
        self.settle(disposition, sidecar, summary);
    }

    /// Every message has settled: decide where the file goes and what its sidecar says.
    pub(super) fn complete(self: Arc<Self>) {
        let tally = std::mem::take(&mut *lock(&self.tally));
        let Verdict {
            disposition,
            sidecar,
            summary,
        } = Verdict::of(
            &self.busy.name,
            tally,
            self.total,
            self.multi,
            self.busy.shared.config.on_success,
        );
        self.settle(disposition, sidecar, summary);
    }

    /// Queues the move of the file to its place for the drain task (`drain.rs`), which tries
    /// it once and, when that fails, goes on trying in a task of its own (see
    /// [`Claim::retry`]). The file's slot stays taken until it is moved, and the trigger
    /// waits for its slots at shutdown, so a draining shutdown also waits for the move.
    fn settle(self: Arc<Self>, disposition: Disposition, sidecar: Option<Value>, summary: Summary) {
        let shared = self.busy.shared.clone();
        shared.finish(Finish {
            claim: self,
            disposition,
            sidecar: sidecar.map(Arc::new),
            summary,
        });
    }

    /// Tries the move again with a growing pause (up to 5 s) until it succeeds or the trigger
    /// stops; only then does the summary go to the log. The file's name and slot stay taken
    /// meanwhile, so a full disk also keeps new claims from piling up.
    pub(super) async fn retry(
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
        let shared = &self.busy.shared;
        let job = Move {
            claimed: self.path.clone(),
            inbox: shared.folder.clone(),
            name: self.busy.name.clone(),
            disposition,
            sidecar: sidecar.clone(),
            known,
        };
        shared.mover.place(&shared.runtime, job).await
    }

    /// The log line that says where the file went and why.
    pub(super) fn report(&self, chosen: Option<Option<PathBuf>>, failures: u32, summary: Summary) {
        let to = chosen
            .flatten()
            .map(|t| t.display().to_string())
            .unwrap_or_else(|| "(deleted)".to_owned());
        if failures > 0 {
            tracing::info!(flow = %self.flow(), file = %self.busy.name, to = %to, "moved the finished file after {failures} failed attempts");
        }
        summary.log(self.flow(), &self.busy.name, &to);
    }
}
