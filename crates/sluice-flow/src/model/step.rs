use super::{AggregateConfig, DedupeConfig, SplitConfig, ThrottleConfig};
use crate::Text;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// One step: a single-key map whose key names the kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    /// Check the payload against a contract.
    #[schemars(with = "Text")]
    Validate(Spanned<Text>),
    /// Replace the payload with a JMESPath result.
    #[schemars(with = "Text")]
    Transform(Spanned<Text>),
    /// Merge JMESPath results into the payload.
    #[schemars(with = "BTreeMap<String, Text>")]
    Set(BTreeMap<String, Spanned<Text>>),
    /// Run a Rhai script (inline or a `.rhai` path).
    #[schemars(with = "Text")]
    Script(Spanned<Text>),
    /// Drop the message when the predicate is not truthy.
    #[schemars(with = "Text")]
    Filter(Spanned<Text>),
    /// Content-based router; first matching arm wins.
    #[schemars(with = "Vec<RouteArm>")]
    Route(Vec<Spanned<RouteArm>>),
    /// Deliver to one sink or several.
    #[schemars(with = "Targets")]
    To(Spanned<Targets>),
    /// Write a templated line to the log.
    #[schemars(with = "Text")]
    Log(Spanned<Text>),
    /// One child message per element of an array (see [`SplitConfig`]).
    #[schemars(with = "SplitConfig")]
    Split(Spanned<SplitConfig>),
    /// Collect messages into groups and emit one message per completed group.
    #[schemars(with = "AggregateConfig")]
    Aggregate(Spanned<AggregateConfig>),
    /// Drop messages whose key was seen before (idempotent receiver).
    #[schemars(with = "DedupeConfig")]
    Dedupe(Spanned<DedupeConfig>),
    /// Copy the payload to a sink without waiting for it and without failing the message.
    #[schemars(with = "Text")]
    Wiretap(Spanned<Text>),
    /// Rate and concurrency limits.
    #[schemars(with = "ThrottleConfig")]
    Throttle(Spanned<ThrottleConfig>),
    /// Run another flow synchronously and continue with its result.
    #[schemars(with = "Text")]
    Call(Spanned<Text>),
    /// Steps whose error is handled by the `catch` step that follows.
    #[schemars(with = "Vec<StepConfig>")]
    Try(Vec<Spanned<StepConfig>>),
    /// Steps run when the steps of the preceding `try` failed.
    #[schemars(with = "Vec<StepConfig>")]
    Catch(Vec<Spanned<StepConfig>>),
    /// Set the status and headers of a request-reply answer.
    Reply(crate::ReplyConfig),
    /// Call an HTTP endpoint and merge the answer into the payload.
    Enrich(Box<crate::EnrichConfig>),
    /// End the message here: the steps after it do not run.
    Stop(Option<StopOutcome>),
}

/// How a `stop` step ends the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// As if the steps had run to the end: deliveries recorded so far are written, an
    /// `http` caller gets the payload (and what `reply` set) as its answer.
    #[default]
    Completed,
    /// As if a `filter` dropped it: nothing is delivered, the message is counted as
    /// filtered and acknowledged (an `http` caller gets 204).
    Filtered,
}

impl StepConfig {
    /// The step kind as written in the flow file.
    pub fn kind(&self) -> &'static str {
        match self {
            StepConfig::Validate(_) => "validate",
            StepConfig::Transform(_) => "transform",
            StepConfig::Set(_) => "set",
            StepConfig::Script(_) => "script",
            StepConfig::Filter(_) => "filter",
            StepConfig::Route(_) => "route",
            StepConfig::To(_) => "to",
            StepConfig::Log(_) => "log",
            StepConfig::Split(_) => "split",
            StepConfig::Aggregate(_) => "aggregate",
            StepConfig::Dedupe(_) => "dedupe",
            StepConfig::Wiretap(_) => "wiretap",
            StepConfig::Throttle(_) => "throttle",
            StepConfig::Call(_) => "call",
            StepConfig::Try(_) => "try",
            StepConfig::Catch(_) => "catch",
            StepConfig::Reply(_) => "reply",
            StepConfig::Enrich(_) => "enrich",
            StepConfig::Stop(_) => "stop",
        }
    }
}

/// One arm of a `route`: `{when, to}`, `{when, steps}` or `{else}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteArm {
    /// JMESPath predicate.
    #[schemars(with = "Option<Text>")]
    pub when: Option<Spanned<Text>>,
    /// Sinks to deliver to when the arm matches.
    #[schemars(with = "Option<Targets>")]
    pub to: Option<Spanned<Targets>>,
    /// Steps to run when the arm matches.
    #[schemars(with = "Option<Vec<StepConfig>>")]
    pub steps: Option<Vec<Spanned<StepConfig>>>,
    /// Sinks for messages that matched no arm.
    #[serde(rename = "else")]
    #[schemars(with = "Option<Targets>")]
    pub otherwise: Option<Spanned<Targets>>,
}

/// One sink name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(pub Vec<String>);

impl JsonSchema for Targets {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Targets".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "One sink name, or a non-empty list of sink names.",
            "oneOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetsVisitor;
        impl<'de> Visitor<'de> for TargetsVisitor {
            type Value = Targets;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sink name or a list of sink names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Targets, E> {
                Ok(Targets(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Targets, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                if names.is_empty() {
                    return Err(de::Error::custom("the list of sinks is empty"));
                }
                Ok(Targets(names))
            }
        }
        deserializer.deserialize_any(TargetsVisitor)
    }
}
