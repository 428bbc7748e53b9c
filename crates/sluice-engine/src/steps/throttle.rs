//! `throttle:` — a token-bucket rate limit (optionally one bucket per key) and a limit on
//! messages in flight, each of which either delays the message or rejects it.
//!
//! The concurrency permit is held until the message is finished — sinks included — so a slow
//! sink never sees more than the limit. (A message that parks in an `aggregate` group after
//! the throttle gives its permit back: it no longer works.)

use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use sluice_flow::OnLimit;
use sluice_flow::{Span, Spanned, ThrottleConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Buckets kept at most with a `key`; idle (full) buckets are forgotten first.
const MAX_BUCKETS: usize = 10_000;

/// A rate: so many messages per period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Messages per second.
    pub per_second: f64,
}

impl Rate {
    /// Parses `50/s`, `600/m`, `1000/h`, `2.5/s`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text.trim().split_once('/').ok_or_else(|| {
            format!("`{text}` is not a rate; write it like `50/s`, `600/m` or `1000/h`")
        })?;
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a number", count.trim()))?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            other => return Err(format!("unknown rate unit `{other}`; use s, m or h")),
        };
        if !(count > 0.0 && count.is_finite()) {
            return Err("the rate must be more than 0".to_owned());
        }
        Ok(Rate {
            per_second: count / seconds,
        })
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits of one throttle, shared across versions with the same definition.
pub struct Limits {
    rate: Option<(Rate, f64, OnLimit)>,
    buckets: Mutex<HashMap<String, Bucket>>,
    concurrency: Option<(Arc<Semaphore>, OnLimit)>,
    in_flight: Arc<AtomicUsize>,
}

impl Limits {
    /// Limits with a rate (and burst) and a concurrency limit, each optional.
    pub fn new(rate: Option<(Rate, u32, OnLimit)>, concurrency: Option<(usize, OnLimit)>) -> Self {
        Limits {
            rate: rate.map(|(r, burst, on)| (r, f64::from(burst.max(1)), on)),
            buckets: Mutex::new(HashMap::new()),
            concurrency: concurrency.map(|(n, on)| (Arc::new(Semaphore::new(n.max(1))), on)),
            in_flight: Arc::default(),
        }
    }

    /// Takes a token for `key`: `Ok(wait)` is how long to wait before passing (the token is
    /// reserved, so concurrent messages queue up at exactly the rate); `Err` when over the
    /// rate with `reject`.
    fn reserve(&self, key: &str) -> Result<Duration, FlowError> {
        let Some((rate, burst, on)) = self.rate else {
            return Ok(Duration::ZERO);
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_second < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(Duration::ZERO);
        }
        if on == OnLimit::Reject {
            return Err(FlowError::permanent(
                ErrorKind::Throttle,
                format!("over the rate limit of {}/s", rate.per_second),
            ));
        }
        let wait = (1.0 - bucket.tokens) / rate.per_second;
        bucket.tokens -= 1.0;
        Ok(Duration::from_secs_f64(wait))
    }
}

/// Counts a message in flight past the throttle and holds its concurrency permit; both go
/// with the guard when the message is finished.
struct InFlight {
    count: Arc<AtomicUsize>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The compiled `throttle` step.
pub struct Throttle {
    key: Option<Expr>,
    limits: Arc<Limits>,
    flow: String,
}

impl Throttle {
    /// A throttle over (possibly shared) limits.
    pub fn new(flow: &str, key: Option<Expr>, limits: Arc<Limits>) -> Self {
        Throttle {
            key,
            limits,
            flow: flow.to_owned(),
        }
    }
}

impl Step for Throttle {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Wait(Box::pin(self.wait(exec)))
    }
}

impl Throttle {
    async fn wait(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let key = match &self.key {
            None => String::new(),
            Some(expr) => {
                let data = exec.jmes()?;
                let v = expr
                    .search(data, &exec.meta)
                    .map_err(|e| FlowError::new(ErrorKind::Transform, format!("key: {e}")))?;
                match &*v {
                    jmespath::Variable::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                }
            }
        };
        if exec.dry {
            return Ok(Control::Continue);
        }
        let permit = match &self.limits.concurrency {
            None => None,
            Some((sem, OnLimit::Delay)) => sem.clone().acquire_owned().await.ok(),
            Some((sem, OnLimit::Reject)) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    return Err(FlowError::permanent(
                        ErrorKind::Throttle,
                        "over the concurrency limit",
                    ));
                }
            },
        };
        let wait = self.limits.reserve(&key)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let n = self.limits.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::trace!(flow = %self.flow, in_flight = n, "throttle passed");
        exec.guards.push(Box::new(InFlight {
            count: self.limits.in_flight.clone(),
            _permit: permit,
        }));
        Ok(Control::Continue)
    }
}

/// Compiles `throttle:`; its limits are shared by the versions of this step with the same
/// definition, so a reload does not reset a rate.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    config: &Spanned<ThrottleConfig>,
    path: &str,
) -> Option<Box<dyn Step>> {
    let c = &config.value;
    let before = cx.diagnostics.len();
    let key = cx.optional_expr(&c.key).ok().flatten();
    if c.rate.is_none() && c.concurrency.is_none() {
        cx.error(
            Span::of(config),
            "this throttle limits nothing",
            "give `rate` (e.g. `rate: 50/s`), `concurrency` (e.g. `concurrency: 4`), or both",
        );
    }
    if c.key.is_some() && c.rate.is_none() {
        cx.error(
            Span::of(config),
            "`key` needs a `rate`: it picks one token bucket per key",
            "add `rate:`, or remove `key:`",
        );
    }
    let rate = match &c.rate {
        None => None,
        Some(text) => match Rate::parse(text.value.as_str()) {
            Ok(rate) => Some(rate),
            Err(e) => {
                cx.error(
                    Span::of(text),
                    e,
                    "a rate is `<count>/<s|m|h>`, e.g. `50/s`",
                );
                None
            }
        },
    };
    if let Some(burst) = &c.burst
        && burst.value == 0
    {
        cx.error(
            Span::of(burst),
            "`burst` must be at least 1",
            "the default is 1",
        );
    }
    if let Some(n) = &c.concurrency
        && n.value == 0
    {
        cx.error(
            Span::of(n),
            "`concurrency` must be at least 1",
            "for example `concurrency: 4`",
        );
    }
    if cx.diagnostics.len() != before {
        return None;
    }
    let burst = c.burst.as_ref().map_or(1, |b| b.value);
    let concurrency = c.concurrency.as_ref().map(|n| n.value);
    let definition = format!(
        "{:?}",
        (
            rate.map(|r| r.per_second.to_bits()),
            burst,
            c.on_rate,
            concurrency,
            c.on_concurrency
        )
    );
    let state_key = format!("throttle/{}/{path}/{definition}", cx.flow.name);
    let limits = crate::state::shared(&state_key, || {
        Arc::new(Limits::new(
            rate.map(|r| (r, burst, c.on_rate)),
            concurrency.map(|n| (n, c.on_concurrency)),
        ))
    });
    Some(Box::new(Throttle::new(&cx.flow.name, key, limits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("50/s").unwrap().per_second, 50.0);
        assert_eq!(Rate::parse("120/m").unwrap().per_second, 2.0);
        assert!(Rate::parse("50").is_err());
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("5/d").is_err());
    }

    #[test]
    fn the_bucket_reserves_tokens_at_the_rate() {
        let limits = Limits::new(Some((Rate { per_second: 10.0 }, 2, OnLimit::Delay)), None);
        assert_eq!(limits.reserve("k").unwrap(), Duration::ZERO);
        assert_eq!(limits.reserve("k").unwrap(), Duration::ZERO);
        let third = limits.reserve("k").unwrap();
        let fourth = limits.reserve("k").unwrap();
        assert!(third > Duration::from_millis(80) && third <= Duration::from_millis(100));
        assert!(fourth > Duration::from_millis(180) && fourth <= Duration::from_millis(200));
        assert_eq!(
            limits.reserve("other").unwrap(),
            Duration::ZERO,
            "one bucket per key"
        );
        let strict = Limits::new(Some((Rate { per_second: 1.0 }, 1, OnLimit::Reject)), None);
        assert!(strict.reserve("").is_ok());
        assert_eq!(strict.reserve("").unwrap_err().kind, ErrorKind::Throttle);
    }
}
