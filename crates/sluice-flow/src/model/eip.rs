//! Configuration of the enterprise-integration-pattern steps: `split`, `aggregate`,
//! `dedupe`, `throttle`, and the per-sink circuit breaker.

use crate::{Dur, Text};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::fmt;

/// What a failing child of a `split` does to its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnChildError {
    /// The child is dead-lettered on its own; its siblings and the parent carry on.
    #[default]
    DeadLetter,
    /// The parent fails as a whole (and is dead-lettered with the child's error).
    FailParent,
}

/// `split: <jmespath>` or `split: {on: <jmespath>, on_child_error: …}`.
#[derive(Debug)]
pub struct SplitConfig {
    /// The expression yielding the array to split.
    pub on: Spanned<Text>,
    /// What a failing child does to its parent.
    pub on_child_error: OnChildError,
}

/// The long form of `split`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SplitMap {
    /// JMESPath expression yielding the array to split.
    #[schemars(with = "Text")]
    on: Spanned<Text>,
    /// What a failing child does to its parent.
    #[serde(default)]
    on_child_error: OnChildError,
}

impl<'de> Deserialize<'de> for SplitConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SplitVisitor;
        impl<'de> Visitor<'de> for SplitVisitor {
            type Value = SplitConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JMESPath expression, or a map with `on` and `on_child_error`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SplitConfig, E> {
                // The shorthand carries no position of its own; diagnostics use the step's.
                Ok(SplitConfig {
                    on: super::trigger::unspanned(Text::from(v)),
                    on_child_error: OnChildError::default(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SplitConfig, A::Error> {
                let full = SplitMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SplitConfig {
                    on: full.on,
                    on_child_error: full.on_child_error,
                })
            }
        }
        deserializer.deserialize_any(SplitVisitor)
    }
}

impl JsonSchema for SplitConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SplitConfig".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let long = generator.subschema_for::<SplitMap>();
        schemars::json_schema!({
            "description": "A JMESPath expression yielding the array to split, or the long form with `on_child_error`.",
            "oneOf": [{ "type": "string" }, long],
        })
    }
}

/// What an `aggregate` does with its open groups when the flow stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnShutdown {
    /// Leave them: their members are not acknowledged and their sources redeliver them.
    #[default]
    Abandon,
    /// Complete them as they are and deliver the partial aggregates.
    Complete,
}

/// `aggregate:` — correlation, completion conditions and output shape.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Without a completion condition a group never completes; the compiler refuses that.
#[schemars(extend("anyOf" = [
    { "required": ["size"] },
    { "required": ["timeout"] },
    { "required": ["interval"] },
    { "required": ["when"] },
    { "required": ["end_of_batch"], "properties": { "end_of_batch": { "const": true } } }
]))]
pub struct AggregateConfig {
    /// JMESPath correlation key; messages with equal keys share a group (default: one group).
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
    /// Complete a group when it has this many members.
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub size: Option<Spanned<usize>>,
    /// Complete a group when no member joined it for this long.
    pub timeout: Option<Dur>,
    /// Complete a group this long after it was opened.
    pub interval: Option<Dur>,
    /// JMESPath predicate over the array of member payloads; truthy completes the group.
    #[schemars(with = "Option<Text>")]
    pub when: Option<Spanned<Text>>,
    /// Complete a group when every batch (file) its members came from has been read and
    /// every message of it has reached this step or ended before it.
    #[serde(default)]
    pub end_of_batch: bool,
    /// What happens to open groups when the flow stops.
    #[serde(default)]
    pub on_shutdown: OnShutdown,
    /// JMESPath over the array of member payloads; default: the array itself.
    #[schemars(with = "Option<Text>")]
    pub output: Option<Spanned<Text>>,
    /// Open groups at most (default 10000); opening one more completes the oldest.
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub max_groups: Option<Spanned<usize>>,
}

/// `dedupe:` — idempotent receiver.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// JMESPath key; default: a hash of the whole payload.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
    /// How long a key is remembered.
    pub ttl: Option<Dur>,
    /// A redb file that keeps the keys across restarts; default: in memory.
    #[schemars(with = "Option<Text>")]
    pub path: Option<Spanned<Text>>,
    /// Keys remembered at most (in memory); the oldest are forgotten first.
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub max_keys: Option<Spanned<usize>>,
}

/// What a throttle does with a message over its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// Wait until the message may pass.
    #[default]
    Delay,
    /// Fail the message with a `throttle` error (not retried; dead-lettered).
    Reject,
}

/// `throttle:` — a token-bucket rate limit (optionally per key) and a concurrency limit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// The compiler refuses a throttle without a limit, and a `key` without a `rate`.
#[schemars(extend(
    "anyOf" = [{ "required": ["rate"] }, { "required": ["concurrency"] }],
    "dependentRequired" = { "key": ["rate"] }
))]
pub struct ThrottleConfig {
    /// Messages per unit of time: `50/s`, `600/m`, `1000/h`.
    #[schemars(with = "Option<Text>")]
    pub rate: Option<Spanned<Text>>,
    /// Bucket size: messages that may pass at once after a quiet period (default 1).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub burst: Option<Spanned<u32>>,
    /// JMESPath key: one bucket per key value.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
    /// Behaviour over the rate.
    #[serde(default)]
    pub on_rate: OnLimit,
    /// Messages past this step and not yet finished (sinks included), at most.
    #[schemars(with = "Option<usize>", range(min = 1))]
    pub concurrency: Option<Spanned<usize>>,
    /// Behaviour over the concurrency limit.
    #[serde(default)]
    pub on_concurrency: OnLimit,
}

/// `errors.circuit_breaker:` — one breaker per sink of the flow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Failed writes within `window` that open the circuit.
    #[serde(default = "default_failures")]
    #[schemars(with = "u32", range(min = 1))]
    pub failures: Spanned<u32>,
    /// The sliding window in which failures are counted.
    #[serde(default = "default_window")]
    pub window: Dur,
    /// How long the circuit stays open before it lets probes through.
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    /// Probe writes let through while half-open; all must succeed to close the circuit.
    #[serde(default = "default_probes")]
    #[schemars(with = "u32", range(min = 1))]
    pub probes: Spanned<u32>,
    /// A sink that takes the deliveries while the circuit is open (default: the message fails
    /// at once and goes to the dead letter).
    #[schemars(with = "Option<Text>")]
    pub fallback: Option<Spanned<Text>>,
}

fn default_failures() -> Spanned<u32> {
    super::trigger::unspanned(5)
}
fn default_window() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
fn default_open_for() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn default_probes() -> Spanned<u32> {
    super::trigger::unspanned(1)
}
