//! The workers of one flow: take messages from its queue and run them, each on the flow
//! version that was current when it started, then acknowledge their sources. A trigger that
//! reads on a blocking thread may instead run a message there, in place (`in_place.rs`):
//! the same path, under the same slots, without the hand-off to a worker task. With
//! `order_by`, a message whose key has an earlier message still running waits in that key's
//! lane and starts when the earlier one settles (ends, or parks in an aggregate group).

use crate::connector::Envelope;
use crate::flow::CompiledFlow;
use crate::hold::{BatchTracker, HoldInner, Slot};
use crate::message::Ids;
use crate::stats::FlowStats;
use arc_swap::ArcSwap;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;

/// A message taken from the queue, with its slot.
type Taken = (Envelope, OwnedSemaphorePermit);

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
    /// `order_by` keys with a message running, and the messages waiting behind it in
    /// arrival order (each holding its slot, so that the queue still paces the trigger).
    lanes: Mutex<HashMap<String, VecDeque<Taken>>>,
    tasks: TaskTracker,
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
            lanes: Mutex::default(),
            tasks: TaskTracker::new(),
        })
    }

    /// The message's `order_by` key, when the running version has one. A key that cannot
    /// be computed (the expression fails on this payload) is logged, and the message runs
    /// without waiting for others.
    fn key(&self, envelope: &mut Envelope) -> Option<String> {
        let flow = self.current.load();
        let expr = flow.order_by.as_ref()?;
        let message = &mut envelope.message;
        let key = message
            .payload
            .jmes()
            .and_then(|data| expr.search(data, &message.meta));
        match key {
            Ok(key) => Some(key.to_string()),
            Err(e) => {
                tracing::warn!(flow = %flow.name, message_id = %message.meta.message_id(),
                    "order_by cannot be computed for this message ({e}); it runs without waiting for others");
                None
            }
        }
    }

    /// Runs a taken message in a task of its own, first in `lane` if it has one.
    fn spawn(self: &Arc<Self>, (envelope, permit): Taken, lane: Option<String>) {
        let workers = self.clone();
        let task = async move { workers.run(envelope, permit, lane).await };
        self.tasks
            .spawn(tracing::Instrument::instrument(task, self.span.clone()));
    }

    /// Starts a taken message: in its key's lane with `order_by`, else in a task of its own.
    fn start(self: &Arc<Self>, mut envelope: Envelope, permit: OwnedSemaphorePermit) {
        match self.key(&mut envelope) {
            Some(key) => self.enter((envelope, permit), key),
            None => self.spawn((envelope, permit), None),
        }
    }

    /// Runs a taken message now if nothing of its key runs, else queues it in the key's lane.
    fn enter(self: &Arc<Self>, taken: Taken, key: String) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        match lanes.get_mut(&key) {
            Some(waiting) => waiting.push_back(taken),
            None => {
                lanes.insert(key.clone(), VecDeque::new());
                drop(lanes);
                self.spawn(taken, Some(key));
            }
        }
    }

    /// The message of `key` that ran has settled: the next one of the key starts.
    fn settled(self: &Arc<Self>, key: String) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let next = lanes.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(taken) => {
                drop(lanes);
                self.spawn(taken, Some(key));
            }
            None => {
                lanes.remove(&key);
            }
        }
    }

    /// Runs one message to its acknowledgement under `permit` (its slot); the next message
    /// of its `lane` starts once it settles.
    async fn run(
        self: &Arc<Self>,
        envelope: Envelope,
        permit: OwnedSemaphorePermit,
        lane: Option<String>,
    ) {
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
        let mut hold = HoldInner::new(Some(slot.clone()), &self.batches, batch);
        if let Some(key) = lane {
            let workers = self.clone();
            hold = hold.on_settle(Box::new(move || workers.settled(key)));
        }
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
    pub(crate) async fn run_here(self: &Arc<Self>, envelope: Envelope) {
        let Ok(permit) = self.limit.clone().acquire_owned().await else {
            return;
        };
        let span = self.span.clone();
        tracing::Instrument::instrument(self.run(envelope, permit, None), span).await
    }

    /// Starts a message without the queue, for [`crate::Inlet::start`]: once a slot is
    /// free, as a worker would start it, except that a flow doing only local work
    /// ([`CompiledFlow::in_place`]) runs it on the blocking pool, to its end, in place. That
    /// is one hand-off for the whole message instead of one to a worker task, one for each
    /// script run and one for each file write. Fails only when the flow is stopping.
    pub(crate) async fn start_now(
        self: &Arc<Self>,
        envelope: Envelope,
    ) -> Result<(), Box<Envelope>> {
        let Ok(permit) = self.limit.clone().acquire_owned().await else {
            return Err(Box::new(envelope));
        };
        if !self.current.load().in_place {
            self.start(envelope, permit);
            return Ok(());
        }
        let workers = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let task = tracing::Instrument::instrument(
            async move { workers.run(envelope, permit, None).await },
            self.span.clone(),
        );
        self.tasks
            .spawn_blocking(move || crate::in_place::block_on(&runtime, task));
        Ok(())
    }
}

/// Takes messages from the flow's queue and runs up to `concurrency` of them at once (with
/// those run in place), each on the flow version that was current when it started. Returns
/// when the queue is closed, every message taken has settled, the flow's stateful steps were
/// told to stop, and every message task has ended (acknowledged, or abandoned for
/// redelivery).
pub async fn run_workers(mut rx: mpsc::Receiver<Envelope>, workers: Arc<Workers>) {
    while let Some(envelope) = rx.recv().await {
        let Ok(permit) = workers.limit.clone().acquire_owned().await else {
            break;
        };
        workers.start(envelope, permit);
    }
    // Every permit back means every message taken (those waiting in lanes too) was
    // acknowledged or parked.
    let _ = workers.limit.acquire_many(workers.concurrency as u32).await;
    // Parked messages end when their aggregate groups are completed or abandoned.
    workers.current.load().stop_stateful();
    workers.tasks.close();
    workers.tasks.wait().await;
}
