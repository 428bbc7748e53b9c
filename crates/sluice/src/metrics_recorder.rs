//! The process's Prometheus recorder, and the upkeep that keeps its memory flat.
//!
//! metrics-exporter-prometheus keeps every histogram sample in a lock-free bucket until
//! something drains the buckets into the histograms' fixed counters. Rendering `/metrics` does
//! that, and so does `PrometheusHandle::run_upkeep`; `install_recorder` starts no task that
//! calls it (only the exporter's own HTTP listener does). Without a scrape the samples piled up
//! for ever (about 60 bytes per message). So the recorder is installed only when the admin
//! server can serve it, and an upkeep task drains it on a short interval.

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the samples recorded since the last upkeep are folded into the histograms: the
/// memory they hold in between is bounded by one interval's worth of messages.
pub const UPKEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Buckets (seconds) make latency metrics real Prometheus histograms, from a 10 µs step to a
/// 10 s delivery; with them a histogram is a fixed set of counters, whatever it has seen.
const BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The recorder with sluice's buckets, not yet installed.
fn build() -> anyhow::Result<PrometheusRecorder> {
    Ok(PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .context("invalid histogram buckets")?
        .build_recorder())
}

/// Installs the recorder as the process's global one (once) and describes sluice's metrics.
/// Call [`upkeep`] on the returned handle inside the runtime.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = build()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("cannot install the metrics recorder")?;
    sluice_engine::describe_metrics();
    Ok(handle)
}

/// Drains recorded samples every [`UPKEEP_INTERVAL`] until `stop`, whether or not anyone
/// scrapes `/metrics`.
pub async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
