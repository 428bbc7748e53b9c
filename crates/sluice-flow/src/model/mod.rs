//! The serde model of a flow file (see `docs/flow-format.md`).
//!
//! Every struct denies unknown fields, so a typo is a load error with a position rather than
//! a silently ignored setting.

mod brokers;
mod eip;
mod http;
mod sink;
mod step;
mod trigger;

pub use brokers::*;
pub use eip::*;
pub use http::*;
pub use sink::*;
pub use step::*;
pub use trigger::*;

use crate::{Dur, Text};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::time::Duration;

/// One flow file: a trigger, steps and sinks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    /// Unique across all flows; defaults to the file stem. Letters, digits, `-`, `_` and `.`.
    #[schemars(with = "Option<Text>", regex(pattern = r"^[A-Za-z0-9_.-]+$|\$\{env:"))]
    pub name: Option<Spanned<Text>>,
    /// Free text for people and the admin API.
    pub description: Option<Text>,
    /// Messages processed at once; defaults to the number of cores.
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub concurrency: Option<Spanned<usize>>,
    /// Capacity of the bounded queue between the trigger and the steps (default: 4 ×
    /// `concurrency`).
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub queue: Option<Spanned<usize>>,
    /// Where messages come from.
    #[schemars(with = "TriggerConfig")]
    pub trigger: Spanned<TriggerConfig>,
    /// JSON Schema contracts checked on the way in and out.
    #[serde(default)]
    pub contract: ContractConfig,
    /// The steps, in order.
    #[serde(default)]
    #[schemars(with = "Vec<FlowStep>")]
    pub steps: Vec<Spanned<FlowStep>>,
    /// Named sinks that `to` and `route` deliver to.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SinkConfig>")]
    pub sinks: BTreeMap<String, Spanned<SinkConfig>>,
    /// Retry and dead-letter policy.
    #[serde(default)]
    pub errors: ErrorsConfig,
    /// Limits of the Rhai sandbox for this flow's scripts.
    #[serde(default)]
    pub script_limits: ScriptLimits,
    /// Example messages and their expected outcome, run before the flow goes live.
    #[serde(default)]
    #[schemars(with = "Vec<TestCase>")]
    pub tests: Vec<Spanned<TestCase>>,
}

/// Contracts on the payload entering the steps and leaving for each sink.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractConfig {
    /// Checked before the first step.
    #[schemars(with = "Option<Text>")]
    pub input: Option<Spanned<Text>>,
    /// Checked before every sink write.
    #[schemars(with = "Option<Text>")]
    pub output: Option<Spanned<Text>>,
}

/// What happens when a message fails.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// Retry policy for transient errors.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Where a message goes after its last attempt (original payload plus error envelope).
    #[schemars(with = "Option<SinkConfig>")]
    pub dead_letter: Option<Spanned<SinkConfig>>,
    /// Whether a request-reply trigger's errors that were answered to the caller (an HTTP
    /// 422 or 500) are dead-lettered too. Off by default: the caller has the error and owns
    /// the retry, and a public endpoint must not let any client fill the dead letter.
    #[serde(default)]
    pub dead_letter_answered: bool,
    /// One circuit breaker per sink: fail fast while a sink keeps failing.
    #[schemars(with = "Option<CircuitBreakerConfig>")]
    pub circuit_breaker: Option<Spanned<CircuitBreakerConfig>>,
}

/// Exponential backoff for transient (`sink`, `timeout`) errors.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, the first one included.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1))]
    pub attempts: u32,
    /// Wait before the second attempt; doubles each time.
    #[serde(default = "default_backoff")]
    pub backoff: Dur,
    /// Upper bound of the wait.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Dur {
    Dur(Duration::from_millis(100))
}
fn default_max_backoff() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Sandbox limits for Rhai scripts. `deadline` and `max_operations` apply to one script run;
/// `concurrency` caps the script runs of the flow under way at once (its share of the CPU).
/// The values are checked against [`ScriptLimits::DEADLINE_RANGE`] and friends when the flow
/// compiles, so that a wrong value is an error with its position.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    /// Wall-clock deadline of one script run (default 1 s), from 1ms to 60s.
    #[schemars(with = "Option<Dur>")]
    pub deadline: Option<Spanned<Dur>>,
    /// Maximum number of Rhai operations of one script run (default 1,000,000).
    #[schemars(with = "Option<u64>", range(min = 1, max = 1_000_000_000_000u64))]
    pub max_operations: Option<Spanned<u64>>,
    /// Script runs of this flow at once (default: the number of cores less one, at least 1).
    #[schemars(with = "Option<usize>", range(min = 1, max = 1024))]
    pub concurrency: Option<Spanned<usize>>,
}

impl ScriptLimits {
    /// The accepted deadlines: a deadline of zero would fail every run, and a script that
    /// needs more than a minute per message belongs outside the message path.
    pub const DEADLINE_RANGE: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(60));
    /// The accepted operation limits. Rhai reads 0 as "no limit", so 0 is refused; the
    /// upper bound is far beyond what the longest deadline allows.
    pub const MAX_OPERATIONS_RANGE: (u64, u64) = (1, 1_000_000_000_000);
    /// The accepted values of `concurrency`.
    pub const CONCURRENCY_RANGE: (usize, usize) = (1, 1024);

    /// Limits as if written in a flow file (for tests and embedders).
    pub fn new(deadline: Duration, max_operations: u64) -> Self {
        ScriptLimits {
            deadline: Some(trigger::unspanned(Dur(deadline))),
            max_operations: Some(trigger::unspanned(max_operations)),
            concurrency: None,
        }
    }

    /// The deadline of one script run.
    pub fn deadline(&self) -> Duration {
        self.deadline
            .as_ref()
            .map_or(Duration::from_secs(1), |d| d.value.0)
    }

    /// The operation limit of one script run.
    pub fn max_operations(&self) -> u64 {
        self.max_operations.as_ref().map_or(1_000_000, |m| m.value)
    }

    /// Script runs at once: as written, or the number of cores less one (at least 1), so
    /// that one flow's scripts always leave a core to the listeners and the other flows.
    pub fn concurrency(&self) -> usize {
        self.concurrency.as_ref().map_or_else(
            || {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1))
                    .max(1)
            },
            |c| c.value,
        )
    }
}

/// One example message and its expected outcome.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown by `sluice test`.
    pub name: Text,
    /// The payload given to the first step.
    pub input: serde_json::Value,
    /// Extra message metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// What must come out.
    pub expect: Expectation,
}

/// The expected outcome of a test case.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The sink that must receive the message.
    #[schemars(with = "Option<Text>")]
    pub sink: Option<Spanned<Text>>,
    /// A subset of the payload that sink receives.
    pub payload: Option<serde_json::Value>,
    /// The message must be dropped by a filter.
    pub filtered: Option<bool>,
    /// The message must fail with this error kind.
    #[schemars(with = "Option<Text>")]
    pub error: Option<Spanned<Text>>,
}
