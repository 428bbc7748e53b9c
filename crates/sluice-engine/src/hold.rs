//! A message's hold on its worker slot and on its batch.
//!
//! A message occupies one of its flow's `concurrency` slots while it runs. A message that
//! waits in an `aggregate` group must give its slot back, or a full set of waiting messages
//! would stop the flow; and the message that ends a batch (the last record of a file) must be
//! noticed so that `aggregate … end_of_batch` can complete its groups. Both happen when the
//! message *settles*: when it ends, or parks in an aggregate group. Split children share
//! their parent's hold, so the parent settles when its last child does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::OwnedSemaphorePermit;

/// Metadata showing flows the batch a message belongs to (set by the file trigger: one per
/// file). For expressions only: the engine reads the typed [`Batch`] of the envelope.
pub const BATCH_ID: &str = "batch.id";
/// Metadata showing flows the number of messages in the batch.
pub const BATCH_SIZE: &str = "batch.size";

/// The batch a message belongs to (one per claimed file): the engine notices when all of
/// its messages have settled (`aggregate … end_of_batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Batch {
    /// Unique within the process: a redelivered file is a new batch.
    pub id: u64,
    /// The number of messages in it.
    pub size: usize,
}

impl Batch {
    /// A new batch of `size` messages, with the next id of the process (a counter: the id
    /// only has to tell running batches apart).
    pub fn new(size: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Batch {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            size,
        }
    }
}

/// Shared by a message and its split children; dropping the last clone settles it.
pub type Hold = Arc<HoldInner>;

/// A worker slot. The worker keeps it until the message is acknowledged, so that no more
/// than `concurrency` messages sit between "sinks confirmed" and "source acknowledged"; a
/// message that parks in an aggregate group gives it back early.
pub struct Slot(Mutex<Option<OwnedSemaphorePermit>>);

impl Slot {
    /// A slot holding `permit`.
    pub fn new(permit: OwnedSemaphorePermit) -> Arc<Slot> {
        Arc::new(Slot(Mutex::new(Some(permit))))
    }

    fn release(&self) {
        drop(self.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// Work to do once a message has settled (the next message of its `order_by` key starts).
pub type OnSettle = Box<dyn FnOnce() + Send>;

/// What a [`Hold`] keeps: the worker slot, the batch membership and what to do when the
/// message settles.
pub struct HoldInner {
    slot: Option<Arc<Slot>>,
    batch: Option<(Arc<BatchTracker>, u64)>,
    parked: AtomicBool,
    on_settle: Mutex<Option<OnSettle>>,
}

impl HoldInner {
    /// A hold on a worker slot and, when the message belongs to a batch, on that batch.
    pub fn new(slot: Option<Arc<Slot>>, tracker: &Arc<BatchTracker>, batch: Option<Batch>) -> Hold {
        let batch = batch.map(|batch| {
            tracker.expect(batch);
            (tracker.clone(), batch.id)
        });
        Arc::new(HoldInner {
            slot,
            batch,
            parked: AtomicBool::new(false),
            on_settle: Mutex::new(None),
        })
    }

    /// The same hold, which runs `on_settle` when the message settles.
    pub(crate) fn on_settle(self: Hold, on_settle: OnSettle) -> Hold {
        *self.on_settle.lock().unwrap_or_else(|p| p.into_inner()) = Some(on_settle);
        self
    }

    /// The message (or one of its split children) parks in an aggregate group: when it
    /// settles, the worker slot is given back at once instead of after the acknowledgement.
    pub fn park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// The batch tracker of the message's flow and the batch's id, when the message
    /// belongs to a batch.
    pub fn batch(&self) -> Option<(&Arc<BatchTracker>, u64)> {
        self.batch.as_ref().map(|(t, id)| (t, *id))
    }
}

impl Drop for HoldInner {
    fn drop(&mut self) {
        if self.parked.load(Ordering::SeqCst)
            && let Some(slot) = &self.slot
        {
            slot.release();
        }
        if let Some((tracker, id)) = &self.batch {
            tracker.settle(*id);
        }
        let on_settle = self.on_settle.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(on_settle) = on_settle.take() {
            on_settle();
        }
    }
}

/// Told when every message of a batch has settled.
pub trait BatchListener: Send + Sync {
    /// The batch `id` ended.
    fn batch_ended(&self, id: u64);
}

/// Counts settled messages per batch for one running flow.
#[derive(Default)]
pub struct BatchTracker {
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    /// Batch id → (messages settled, batch size).
    batches: HashMap<u64, (usize, usize)>,
    listeners: Vec<Weak<dyn BatchListener>>,
}

impl BatchTracker {
    /// A tracker with no batches.
    pub fn new() -> Arc<Self> {
        Arc::new(BatchTracker::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect(&self, batch: Batch) {
        self.state()
            .batches
            .entry(batch.id)
            .or_insert((0, batch.size));
    }

    /// Registers a listener (once; held weakly).
    pub fn listen(&self, listener: Weak<dyn BatchListener>) {
        let mut state = self.state();
        state.listeners.retain(|l| l.strong_count() > 0);
        if !state.listeners.iter().any(|l| l.ptr_eq(&listener)) {
            state.listeners.push(listener);
        }
    }

    fn settle(&self, id: u64) {
        let listeners = {
            let mut state = self.state();
            let Some(entry) = state.batches.get_mut(&id) else {
                return;
            };
            entry.0 += 1;
            if entry.0 < entry.1 {
                return;
            }
            state.batches.remove(&id);
            state.listeners.clone()
        };
        // Called without the lock: a listener may settle further holds.
        for listener in listeners.iter().filter_map(Weak::upgrade) {
            listener.batch_ended(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl BatchListener for Count {
        fn batch_ended(&self, _id: u64) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_batch_ends_when_its_last_message_settles() {
        let tracker = BatchTracker::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let weak: Weak<dyn BatchListener> =
            Arc::downgrade(&(count.clone() as Arc<dyn BatchListener>));
        tracker.listen(weak);
        let batch = Some(Batch::new(2));
        let a = HoldInner::new(None, &tracker, batch);
        let b = HoldInner::new(None, &tracker, batch);
        let child = a.clone();
        drop(a);
        drop(b);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "a child still holds");
        drop(child);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
