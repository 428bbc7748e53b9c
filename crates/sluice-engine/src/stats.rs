//! Per-flow counters: Prometheus metrics for scraping, plus plain atomics for the admin API.
//! They belong to the flow name, so they survive hot reloads.

use crate::connector::Outcome;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one flow.
pub struct FlowStats {
    flow: String,
    received: AtomicU64,
    completed: AtomicU64,
    filtered: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    prom_received: metrics::Counter,
    prom_completed: metrics::Counter,
    prom_filtered: metrics::Counter,
    prom_dead_lettered: metrics::Counter,
    prom_in_flight: metrics::Gauge,
    prom_duration: metrics::Histogram,
}

/// A snapshot of a flow's counters, as the admin API shows them.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Messages that entered the steps.
    pub received: u64,
    /// Delivered, or finished without a delivery.
    pub completed: u64,
    /// Dropped by a filter.
    pub filtered: u64,
    /// Failed.
    pub failed: u64,
    /// Taken by the dead-letter sink.
    pub dead_lettered: u64,
}

impl FlowStats {
    /// Counters for a flow name.
    pub fn new(flow: &str) -> Self {
        let label = flow.to_owned();
        FlowStats {
            flow: label.clone(),
            received: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            prom_received: metrics::counter!("sluice_messages_received_total", "flow" => label.clone()),
            prom_completed: metrics::counter!("sluice_messages_completed_total", "flow" => label.clone()),
            prom_filtered: metrics::counter!("sluice_messages_filtered_total", "flow" => label.clone()),
            prom_dead_lettered: metrics::counter!("sluice_messages_dead_lettered_total", "flow" => label.clone()),
            prom_in_flight: metrics::gauge!("sluice_messages_in_flight", "flow" => label.clone()),
            prom_duration: metrics::histogram!("sluice_message_duration_seconds", "flow" => label),
        }
    }

    /// A message entered the steps.
    pub fn started(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.prom_received.increment(1);
        self.prom_in_flight.increment(1.0);
    }

    /// A message was abandoned (its aggregate group was dropped at shutdown): it is no
    /// longer in flight, and its source will redeliver it.
    pub fn abandoned(&self) {
        self.prom_in_flight.decrement(1.0);
    }

    /// A message was acknowledged with `outcome`, `elapsed` after it started.
    pub fn finished(&self, outcome: &Outcome, elapsed: Duration) {
        self.prom_in_flight.decrement(1.0);
        self.prom_duration.record(elapsed.as_secs_f64());
        match outcome {
            Outcome::Delivered(_) | Outcome::Completed(_) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
                self.prom_completed.increment(1);
            }
            Outcome::Filtered => {
                self.filtered.fetch_add(1, Ordering::Relaxed);
                self.prom_filtered.increment(1);
            }
            Outcome::Failed(failure) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(
                    "sluice_messages_failed_total",
                    "flow" => self.flow.clone(),
                    "kind" => failure.error.kind.as_str()
                )
                .increment(1);
                if failure.dead_lettered {
                    self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    self.prom_dead_lettered.increment(1);
                }
            }
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Counters {
        Counters {
            received: self.received.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// Describes every metric once, so `/metrics` carries `# HELP` lines.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "sluice_messages_received_total",
        "Messages that entered a flow's steps."
    );
    describe_counter!(
        "sluice_messages_completed_total",
        "Messages delivered, or finished without a delivery."
    );
    describe_counter!(
        "sluice_messages_filtered_total",
        "Messages dropped by a filter."
    );
    describe_counter!(
        "sluice_messages_failed_total",
        "Failed messages, by error kind."
    );
    describe_counter!(
        "sluice_messages_dead_lettered_total",
        "Messages taken by the dead-letter sink."
    );
    describe_counter!(
        "sluice_sink_retries_total",
        "Sink writes that were retried."
    );
    describe_gauge!("sluice_messages_in_flight", "Messages being processed.");
    describe_histogram!(
        "sluice_step_duration_seconds",
        Unit::Seconds,
        "Time spent in one step."
    );
    describe_histogram!(
        "sluice_message_duration_seconds",
        Unit::Seconds,
        "Time from a message entering the steps to its acknowledgement."
    );
    describe_histogram!(
        "sluice_sink_write_duration_seconds",
        Unit::Seconds,
        "Time one sink write took, retries included."
    );
    describe_gauge!(
        "sluice_ready",
        "1 while /readyz answers 200 (every flow ready), else 0."
    );
    describe_gauge!(
        "sluice_trigger_connected",
        "1 while a flow's trigger works (consuming, listening), else 0."
    );
    describe_gauge!(
        "sluice_flow_info",
        "1 for the running version of each flow (label `version`), 0 for replaced ones."
    );
    describe_gauge!(
        "sluice_dead_letters",
        "Entries waiting in a flow's file dead-letter folder."
    );
    describe_counter!(
        "sluice_tap_lost_total",
        "Live-tap samples dropped because a reader was behind."
    );
    describe_counter!("sluice_reloads_total", "Hot reloads, by result.");
    describe_counter!(
        "sluice_http_requests_total",
        "Answered HTTP requests, by flow and status."
    );
    describe_counter!(
        "sluice_schedule_ticks_skipped_total",
        "Schedule ticks skipped because the previous run was still busy."
    );
}
