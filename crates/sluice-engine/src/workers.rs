//! The workers of one flow: take messages from its queue and run them, each on the flow
//! version that was current when it started, then acknowledge their sources.

use crate::connector::Envelope;
use crate::flow::CompiledFlow;
use crate::hold::{BatchTracker, HoldInner, Slot};
use crate::stats::FlowStats;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};

/// Takes messages from the flow's queue and runs up to `concurrency` of them at once, each
/// on the flow version that was current when it started. Returns when the queue is closed,
/// every message taken has settled, the flow's stateful steps were told to stop, and every
/// message task has ended (acknowledged, or abandoned for redelivery).
pub async fn run_workers(
    mut rx: mpsc::Receiver<Envelope>,
    current: Arc<ArcSwap<CompiledFlow>>,
    concurrency: usize,
    stats: Arc<FlowStats>,
) {
    let limit = Arc::new(Semaphore::new(concurrency));
    let batches = BatchTracker::new();
    let tasks = tokio_util::task::TaskTracker::new();
    // The span run_workers runs in (the flow's): library lines logged while a message runs
    // (a broker client's, an HTTP client's) name the flow they belong to. One span, cloned.
    let span = tracing::Span::current();
    while let Some(Envelope {
        message,
        ack,
        reply,
        batch,
    }) = rx.recv().await
    {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let caller = ack.caller();
        let flow = current.load_full();
        let slot = Slot::new(permit);
        let hold = HoldInner::new(Some(slot.clone()), &batches, batch);
        let stats = stats.clone();
        let task = async move {
            // The slot goes back after the acknowledgement (or earlier, if the message parks).
            let _slot = slot;
            let started = std::time::Instant::now();
            stats.started();
            match flow.process_for(message, reply, Some(hold), caller).await {
                Some(outcome) => {
                    stats.finished(&outcome, started.elapsed());
                    ack.ack(outcome).await
                }
                // Abandoned: dropping the acker unacknowledged makes the source redeliver.
                None => {
                    stats.abandoned();
                    drop(ack)
                }
            }
        };
        tasks.spawn(tracing::Instrument::instrument(task, span.clone()));
    }
    // Every permit back means every message taken was acknowledged or parked.
    let _ = limit.acquire_many(concurrency as u32).await;
    // Parked messages end when their aggregate groups are completed or abandoned.
    current.load().stop_stateful();
    tasks.close();
    tasks.wait().await;
}
