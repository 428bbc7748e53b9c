//! Retrying transient failures with exponential backoff, shared by sinks and `enrich`.

use crate::error::FlowError;
use sluice_flow::RetryConfig;
use std::time::Duration;

/// Runs `attempt` until it succeeds, fails permanently, or `retry.attempts` are used up.
/// The wait doubles from `retry.backoff` up to `retry.max_backoff`; an error's
/// `retry_after` (an HTTP `Retry-After`) lengthens the next wait, within `max_backoff`.
/// Returns the result or the last error with the number of attempts made.
pub async fn with_retry<T, F, Fut>(
    retry: &RetryConfig,
    flow: &str,
    what: &str,
    mut attempt: F,
) -> Result<T, (FlowError, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, FlowError>>,
{
    let attempts = retry.attempts.max(1);
    let max_wait = retry.max_backoff.0.max(Duration::from_millis(1));
    let mut wait = retry.backoff.0.min(max_wait);
    let mut made = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if e.retryable && made < attempts => {
                metrics::counter!(
                    "sluice_sink_retries_total",
                    "flow" => flow.to_owned(),
                    "sink" => what.to_owned()
                )
                .increment(1);
                if let Some(after) = e.retry_after {
                    wait = wait.max(after).min(max_wait);
                }
                tracing::warn!(flow = %flow, sink = %what, attempt = made, "{} failed, retrying in {}: {}", what, humantime::format_duration(wait), e.message);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max_wait);
                made += 1;
            }
            Err(mut e) => {
                e.attempts = made;
                return Err((e, made));
            }
        }
    }
}
