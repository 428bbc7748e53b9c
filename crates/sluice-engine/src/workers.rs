//! The workers of one flow: take messages from its queue and run them, each on the flow
//! version that was current when it started, then acknowledge their sources. A trigger that
//! reads on a blocking thread may instead run a message there, in place (`in_place.rs`):
//! the same path, under the same slots, without the hand-off to a worker task.

use crate::connector::Envelope;
use crate::flow::CompiledFlow;
use crate::hold::{BatchTracker, HoldInner, Slot};
use crate::stats::FlowStats;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// What the workers of one running flow share with its inlet: the running version, the
/// `concurrency` slots, the batches in flight, the counters, and the flow's span.
pub struct Workers {
    pub(crate) current: Arc<ArcSwap<CompiledFlow>>,
    limit: Arc<Semaphore>,
    concurrency: usize,
    batches: Arc<BatchTracker>,
    stats: Arc<FlowStats>,
    /// The flow's span: library lines logged while a message runs (a broker client's, an
    /// HTTP client's) name the flow they belong to. One span, cloned.
    span: tracing::Span,
}

impl Workers {
    /// The workers of the flow whose running version `current` holds.
    pub(crate) fn new(
        current: Arc<ArcSwap<CompiledFlow>>,
        concurrency: usize,
        stats: Arc<FlowStats>,
        span: tracing::Span,
    ) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        Arc::new(Workers {
            current,
            limit: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            batches: BatchTracker::new(),
            stats,
            span,
        })
    }

    /// Runs one message to its acknowledgement under `permit` (its slot).
    async fn run(&self, envelope: Envelope, permit: OwnedSemaphorePermit) {
        let Envelope {
            message,
            ack,
            reply,
            batch,
        } = envelope;
        let caller = ack.caller();
        let flow = self.current.load_full();
        // The slot goes back after the acknowledgement (or earlier, if the message parks).
        let slot = Slot::new(permit);
        let hold = HoldInner::new(Some(slot.clone()), &self.batches, batch);
        let _slot = slot;
        let started = std::time::Instant::now();
        self.stats.started();
        match flow.process_for(message, reply, Some(hold), caller).await {
            Some(outcome) => {
                self.stats.finished(&outcome, started.elapsed());
                ack.ack(outcome).await
            }
            // Abandoned: dropping the acker unacknowledged makes the source redeliver.
            None => {
                self.stats.abandoned();
                drop(ack)
            }
        }
    }

    /// Runs one message here, in the caller's task, once a slot is free: for
    /// [`crate::Inlet::process_here`]. Shutdown waits for it like for a worker's message.
    pub(crate) async fn run_here(&self, envelope: Envelope) {
        let Ok(permit) = self.limit.clone().acquire_owned().await else {
            return;
        };
        let span = self.span.clone();
        tracing::Instrument::instrument(self.run(envelope, permit), span).await
    }
}

/// Takes messages from the flow's queue and runs up to `concurrency` of them at once (with
/// those run in place), each on the flow version that was current when it started. Returns
/// when the queue is closed, every message taken has settled, the flow's stateful steps were
/// told to stop, and every message task has ended (acknowledged, or abandoned for
/// redelivery).
pub async fn run_workers(mut rx: mpsc::Receiver<Envelope>, workers: Arc<Workers>) {
    let tasks = tokio_util::task::TaskTracker::new();
    while let Some(envelope) = rx.recv().await {
        let Ok(permit) = workers.limit.clone().acquire_owned().await else {
            break;
        };
        let task = {
            let workers = workers.clone();
            async move { workers.run(envelope, permit).await }
        };
        tasks.spawn(tracing::Instrument::instrument(task, workers.span.clone()));
    }
    // Every permit back means every message taken was acknowledged or parked.
    let _ = workers.limit.acquire_many(workers.concurrency as u32).await;
    // Parked messages end when their aggregate groups are completed or abandoned.
    workers.current.load().stop_stateful();
    tasks.close();
    tasks.wait().await;
}
