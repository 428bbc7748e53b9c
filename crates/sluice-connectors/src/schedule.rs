//! The `schedule` trigger: a message per tick (`every:` or `cron:`); a tick that comes while
//! the previous message is still in flight is skipped and counted, never queued.

use async_trait::async_trait;
use serde_json::Value;
use sluice_engine::{Acker, BuildContext, Envelope, Inlet, Message, Meta, Outcome, Trigger};
use sluice_flow::{Diagnostic, ScheduleTriggerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

enum Clock {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

/// Sends a message on every tick.
pub struct ScheduleTrigger {
    clock: Clock,
    payload: Value,
}

impl ScheduleTrigger {
    /// Checks that exactly one of `every` and `cron` is given and that it parses.
    pub fn new(config: &ScheduleTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let clock = match (&config.every, &config.cron) {
            (Some(every), None) => {
                if every.value.0 < Duration::from_millis(10) {
                    return Err(cx
                        .diagnostic(every, "`every` must be at least 10ms")
                        .with_help("e.g. `every: 30s`"));
                }
                Clock::Every(every.value.0)
            }
            (None, Some(cron)) => {
                let parser = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build();
                let parsed = parser.parse(cron.value.as_str()).map_err(|e| {
                    cx.diagnostic(cron, format!("invalid cron expression: {e}"))
                        .with_help("e.g. `0 */5 * * * *` (seconds, minutes, hours, day of month, month, day of week)")
                })?;
                Clock::Cron(Box::new(parsed))
            }
            _ => {
                return Err(cx
                    .flow
                    .diagnostic(None, "a schedule needs exactly one of `every` and `cron`")
                    .with_help("e.g. `schedule: { every: 30s }`"));
            }
        };
        Ok(ScheduleTrigger {
            clock,
            payload: config
                .payload
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
        })
    }

    fn next_wait(&self) -> Option<Duration> {
        match &self.clock {
            Clock::Every(every) => Some(*every),
            Clock::Cron(cron) => {
                let now = chrono::Utc::now();
                let next = cron.find_next_occurrence(&now, false).ok()?;
                (next - now).to_std().ok()
            }
        }
    }
}

struct TickAck(Arc<AtomicBool>);

#[async_trait]
impl Acker for TickAck {
    async fn ack(self: Box<Self>, _outcome: Outcome) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for TickAck {
    fn drop(&mut self) {
        // Acknowledged or abandoned: either way the next tick may run.
        self.0.store(false, Ordering::SeqCst);
    }
}

#[async_trait]
impl Trigger for ScheduleTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let busy = Arc::new(AtomicBool::new(false));
        let skipped = metrics::counter!("sluice_schedule_ticks_skipped_total", "flow" => inlet.flow().to_owned());
        loop {
            let Some(wait) = self.next_wait() else {
                inlet.set_unhealthy("the cron expression has no future occurrence");
                stop.cancelled().await;
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if busy.swap(true, Ordering::SeqCst) {
                skipped.increment(1);
                tracing::warn!(flow = %inlet.flow(), "schedule tick skipped: the previous run is still busy");
                continue;
            }
            let mut meta = Meta::new();
            meta.insert(
                "schedule.tick".to_owned(),
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            );
            let envelope = Envelope::new(
                Message::new(inlet.flow(), self.payload.clone(), meta),
                Box::new(TickAck(busy.clone())),
            );
            if inlet.send(envelope).await.is_err() {
                return;
            }
        }
    }
}

impl crate::TriggerComponent for ScheduleTriggerConfig {
    const KEY: &'static str = "schedule";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        Ok(Box::new(ScheduleTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        match (&self.every, &self.cron) {
            (Some(every), _) => format!(
                "schedule every {}",
                humantime::format_duration(every.value.0)
            ),
            (None, Some(cron)) => format!("schedule cron {}", cron.value),
            (None, None) => "schedule".to_owned(),
        }
    }
}
