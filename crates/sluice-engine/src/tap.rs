//! The live tap: copies of the messages passing a flow (or one step), for `sluice tap`.
//!
//! Costs nothing while nobody taps: the engine checks one atomic counter ([`active`]) after
//! each step, and only when it is non-zero takes the subscriber list. Each subscriber has a
//! bounded queue; when it is full (a slow reader) the sample is dropped and counted, so a
//! tap never slows a flow down.

use crate::error::FlowError;
use crate::message::{Ids, Meta};
use crate::steps::Exec;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Subscribers at the moment; the engine's only check on the message path.
static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);
static TAPS: Mutex<Vec<Arc<Subscription>>> = Mutex::new(Vec::new());

/// Whether anyone taps any flow.
#[inline]
pub fn active() -> bool {
    SUBSCRIBERS.load(Ordering::Relaxed) != 0
}

/// What a subscriber wants to see.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The flow.
    pub flow: String,
    /// Only this step (its label: its `name:`, or its position and kind), or every step.
    pub step: Option<String>,
    /// One message in `sample` (chosen by message id, so all of a message's steps or none).
    pub sample: u64,
}

/// One sample: a message as it left a step (or as it entered the steps: step `input`).
#[derive(Clone, Debug)]
pub struct TapEvent {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The flow.
    pub flow: String,
    /// The message id.
    pub message_id: String,
    /// The step's label, or `input`.
    pub step: String,
    /// The payload after the step (null when it has no JSON form).
    pub payload: Value,
    /// The metadata.
    pub meta: Arc<Meta>,
    /// The step's error, when it failed: kind and message.
    pub error: Option<(String, String)>,
}

struct Subscription {
    filter: Filter,
    sender: tokio::sync::mpsc::Sender<TapEvent>,
    lost: AtomicU64,
}

/// A subscription; dropping it ends it.
pub struct Tap {
    subscription: Arc<Subscription>,
    /// The samples, in order.
    pub events: tokio::sync::mpsc::Receiver<TapEvent>,
}

impl Tap {
    /// Samples dropped so far because the reader was behind.
    pub fn lost(&self) -> u64 {
        self.subscription.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut taps = TAPS.lock().unwrap_or_else(|p| p.into_inner());
        let before = taps.len();
        taps.retain(|s| !Arc::ptr_eq(s, &self.subscription));
        if taps.len() < before {
            SUBSCRIBERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Starts a subscription with a queue of `capacity` samples.
pub fn subscribe(filter: Filter, capacity: usize) -> Tap {
    let (sender, events) = tokio::sync::mpsc::channel(capacity.max(1));
    let subscription = Arc::new(Subscription {
        filter,
        sender,
        lost: AtomicU64::new(0),
    });
    let mut taps = TAPS.lock().unwrap_or_else(|p| p.into_inner());
    taps.push(subscription.clone());
    SUBSCRIBERS.fetch_add(1, Ordering::Relaxed);
    Tap {
        subscription,
        events,
    }
}

/// Subscriptions now (the admin server caps them).
pub fn subscribers() -> usize {
    SUBSCRIBERS.load(Ordering::Relaxed)
}

fn sampled(message_id: &str, sample: u64) -> bool {
    use std::hash::{Hash, Hasher};
    if sample <= 1 {
        return true;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message_id.hash(&mut hasher);
    hasher.finish().is_multiple_of(sample)
}

/// Offers the message in `exec`, as it left step `step`, to the subscribers that want it.
/// Called only when [`active`].
#[cold]
pub(crate) fn offer(step: &str, exec: &Exec, error: Option<&FlowError>) {
    let flow = exec.meta.get("flow").map_or("", String::as_str);
    let message_id = exec.meta.message_id();
    let wanted: Vec<Arc<Subscription>> = {
        let taps = TAPS.lock().unwrap_or_else(|p| p.into_inner());
        taps.iter()
            .filter(|s| {
                s.filter.flow == flow
                    && s.filter.step.as_deref().is_none_or(|w| w == step)
                    && sampled(message_id, s.filter.sample)
            })
            .cloned()
            .collect()
    };
    if wanted.is_empty() {
        return;
    }
    let mut copy = exec.payload.snapshot();
    let payload = copy.json().cloned().unwrap_or(Value::Null);
    let event = TapEvent {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        flow: flow.to_owned(),
        message_id: message_id.to_owned(),
        step: step.to_owned(),
        payload,
        meta: exec.meta.clone(),
        error: error.map(|e| (e.kind.to_string(), e.message.clone())),
    };
    for subscription in wanted {
        if subscription.sender.try_send(event.clone()).is_err() {
            subscription.lost.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("sluice_tap_lost_total", "flow" => flow.to_owned()).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn exec(flow: &str, n: u64) -> Exec {
        let message = Message::new(flow, serde_json::json!({ "n": n }), Meta::new());
        Exec::new(message.payload, message.meta)
    }

    #[test]
    fn a_reader_that_does_not_read_loses_samples_and_never_blocks() {
        let mut tap = subscribe(
            Filter {
                flow: "tap-unit-slow".to_owned(),
                step: None,
                sample: 1,
            },
            4,
        );
        assert!(active());
        let started = std::time::Instant::now();
        for n in 0..100 {
            offer("steps[0] (set)", &exec("tap-unit-slow", n), None);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(tap.lost(), 96);
        let first = tap.events.try_recv().expect("the first samples are kept");
        assert_eq!(first.payload, serde_json::json!({ "n": 0 }));
        assert_eq!(first.flow, "tap-unit-slow");
        // Another flow's messages and other steps are not offered.
        let mut only = subscribe(
            Filter {
                flow: "tap-unit-step".to_owned(),
                step: Some("price".to_owned()),
                sample: 1,
            },
            8,
        );
        offer("other", &exec("tap-unit-step", 1), None);
        offer("price", &exec("tap-unit-slow", 2), None);
        offer("price", &exec("tap-unit-step", 3), None);
        let got = only.events.try_recv().expect("one sample");
        assert_eq!(got.payload, serde_json::json!({ "n": 3 }));
        assert!(only.events.try_recv().is_err());
        drop(tap);
        drop(only);
    }

    #[test]
    fn sampling_keeps_all_steps_of_a_message_or_none() {
        let ids: Vec<String> = (0..1000).map(|i| format!("m-{i}")).collect();
        let kept = ids.iter().filter(|id| sampled(id, 10)).count();
        assert!((50..=150).contains(&kept), "about one in ten: {kept}");
        for id in &ids {
            assert_eq!(sampled(id, 10), sampled(id, 10));
        }
        assert!(ids.iter().all(|id| sampled(id, 1)));
    }
}
