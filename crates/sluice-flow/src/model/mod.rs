//! The serde model of a flow file (see `docs/flow-format.md`).
//!
//! Every struct denies unknown fields, so a typo is a load error with a position rather than
//! a silently ignored setting.

mod brokers;
mod eip;
mod http;
mod kafka;
mod mysql;
mod sftp;
mod sink;
mod step;
mod tls;
mod trigger;
mod xml;

pub use brokers::*;
pub use eip::*;
pub use http::*;
pub use kafka::*;
pub use mysql::*;
pub use sftp::*;
pub use sink::*;
pub use step::*;
pub use tls::*;
pub use trigger::*;
pub use xml::*;

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
    /// Who answers for this flow (a team, a person, an address): shown by `sluice graph`
    /// and `/api/flows`.
    pub owner: Option<Text>,
    /// Labels to group and find flows by (`billing`, `pii`): shown by `sluice graph` and
    /// `/api/flows`.
    #[serde(default)]
    pub tags: Vec<Text>,
    /// Messages processed at once; defaults to the number of cores.
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub concurrency: Option<Spanned<usize>>,
    /// Capacity of the bounded queue between the trigger and the steps (default: 4 ×
    /// `concurrency`), for triggers that read ahead of the steps: the records of `ndjson`
    /// and `csv` files, Kafka records, schedule ticks, channels. An HTTP request or a message
    /// of the other brokers waits for one of the `concurrency` slots instead (the broker's
    /// prefetch is its buffer).
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub queue: Option<Spanned<usize>>,
    /// Per-key ordering: a JMESPath expression over the payload (and `meta()`); messages
    /// with the same key run one at a time, in arrival order, while different keys run in
    /// parallel (up to `concurrency`).
    #[schemars(with = "Option<Text>")]
    pub order_by: Option<Spanned<Text>>,
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
    /// What answers in place of each `enrich` step, `call` step (by the step's `name:` or
    /// position, e.g. `steps[1]`) or sink (by its name). A test never reaches the outside
    /// world: an `enrich` step without a mock fails the test, saying so.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, MockConfig>")]
    pub mocks: BTreeMap<String, Spanned<MockConfig>>,
    /// What must come out.
    pub expect: Expectation,
}

/// A mock's answer: a body and status, a delay, or an error.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// The JSON body of the answer (`enrich`: merged at `into`; `call`: the called flow's
    /// result). Sinks take no body.
    pub body: Option<serde_json::Value>,
    /// The HTTP status of an `enrich` answer (default 200); one that is not 2xx fails the
    /// step as that answer from the real endpoint would.
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<u16>,
    /// How long the answer takes; as long as the step's `timeout` or longer, it is a
    /// `timeout` error.
    pub delay: Option<crate::Dur>,
    /// Fail with this error kind instead (`sink`, `timeout`, …).
    #[schemars(with = "Option<Text>")]
    pub error: Option<Spanned<Text>>,
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
    /// The message must fail: an error kind (`contract`), or `{kind, pointer, message}`
    /// (`pointer`: a contract violation at that JSON pointer; `message`: a part of the
    /// error message).
    #[schemars(with = "Option<ErrorExpectation>")]
    pub error: Option<Spanned<ErrorExpectation>>,
    /// The HTTP status of the answer (set by `reply`, default 200).
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<u16>,
    /// Headers the answer must carry (set by `reply`); names compare case-insensitively.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Every delivery, in order (multicast targets and split children included): exactly
    /// these, each a sink and an optional subset of its payload.
    #[schemars(with = "Option<Vec<DeliveryExpectation>>")]
    pub deliveries: Option<Vec<Spanned<DeliveryExpectation>>>,
    /// What was sent to a mocked `enrich` or `call` step, or written to a sink: one
    /// expectation or a list.
    #[schemars(with = "Option<OneOrMany<SentExpectation>>")]
    pub sent: Option<OneOrMany<SentExpectation>>,
}

/// An expected delivery.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryExpectation {
    /// The sink.
    #[schemars(with = "Text")]
    pub sink: Spanned<Text>,
    /// A subset of the payload it receives.
    pub payload: Option<serde_json::Value>,
}

/// What a test expects was sent to a mock or a sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentExpectation {
    /// The sink's name, or the `enrich` or `call` step's name or position (`steps[1]`).
    #[schemars(with = "Text")]
    pub sink: Spanned<Text>,
    /// A subset that (one of) the payloads sent there matches.
    pub payload: Option<serde_json::Value>,
    /// How many times it was sent there exactly (default: at least once). `0`: never.
    pub count: Option<usize>,
}

/// The error a test expects: its kind, or the kind with a JSON pointer and a part of the
/// message.
#[derive(Debug)]
pub enum ErrorExpectation {
    /// `error: contract`.
    Kind(Text),
    /// `error: { kind: contract, pointer: /lines/0/qty }`.
    Detail(ErrorDetail),
}

/// `error: { kind, pointer, message }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// The error kind.
    pub kind: Text,
    /// A contract violation at this JSON pointer (e.g. `/lines/0/qty`).
    pub pointer: Option<Text>,
    /// A part of the error message.
    pub message: Option<Text>,
}

impl ErrorExpectation {
    /// The expected kind.
    pub fn kind(&self) -> &str {
        match self {
            ErrorExpectation::Kind(kind) => kind.as_str(),
            ErrorExpectation::Detail(detail) => detail.kind.as_str(),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorExpectation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ErrorExpectation;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an error kind, or a map with `kind`, `pointer` and `message`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ErrorExpectation, E> {
                Ok(ErrorExpectation::Kind(Text(v.to_owned())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ErrorExpectation, A::Error> {
                ErrorDetail::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ErrorExpectation::Detail)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for ErrorExpectation {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorExpectation".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let detail = generator.subschema_for::<ErrorDetail>();
        schemars::json_schema!({
            "description": "An error kind, or `{kind, pointer, message}`.",
            "anyOf": [{ "type": "string" }, detail],
        })
    }
}

/// One value or a list of them.
#[derive(Debug)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map or a list of maps")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<OneOrMany<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany<T>, A::Error> {
                let mut all = Vec::new();
                while let Some(one) = seq.next_element()? {
                    all.push(one);
                }
                Ok(OneOrMany(all))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = generator.subschema_for::<T>();
        schemars::json_schema!({
            "anyOf": [one, { "type": "array", "items": one }],
        })
    }
}
