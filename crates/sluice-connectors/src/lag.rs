//! Consumer lag where the broker can tell (JetStream, Redis streams, RabbitMQ): a task per
//! consuming trigger asks the broker every [`LAG_INTERVAL`], beside the message path, and
//! sets `sluice_consumer_lag{flow}` (messages at the source not yet delivered to sluice) and
//! `sluice_consumer_pending{flow}` (delivered, not yet acknowledged).

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the broker is asked.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// What one poll found: the lag and the pending count, each when the broker says.
pub struct Lag {
    /// Not yet delivered to this consumer (group).
    pub lag: Option<u64>,
    /// Delivered and not yet acknowledged.
    pub pending: Option<u64>,
}

/// Polls `poll` every [`LAG_INTERVAL`] until `stop` or the returned guard drops (the
/// trigger's connection ended). A failed poll sets nothing (the next one tries again).
pub fn spawn<F, Fut>(flow: &str, stop: &CancellationToken, mut poll: F) -> DropGuard
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Option<Lag>> + Send,
{
    let token = stop.child_token();
    let done = token.clone();
    let flow = flow.to_owned();
    tokio::spawn(async move {
        let lag_gauge = metrics::gauge!("sluice_consumer_lag", "flow" => flow.clone());
        let pending_gauge = metrics::gauge!("sluice_consumer_pending", "flow" => flow);
        loop {
            let found = tokio::select! {
                _ = done.cancelled() => return,
                found = poll() => found,
            };
            if let Some(found) = found {
                if let Some(lag) = found.lag {
                    lag_gauge.set(lag as f64);
                }
                if let Some(pending) = found.pending {
                    pending_gauge.set(pending as f64);
                }
            }
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(LAG_INTERVAL) => {}
            }
        }
    });
    token.drop_guard()
}
