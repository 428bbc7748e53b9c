use crate::Text;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// One step: a single-key map whose key names the kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    /// Check the payload against a contract.
    Validate(Spanned<Text>),
    /// Replace the payload with a JMESPath result.
    Transform(Spanned<Text>),
    /// Merge JMESPath results into the payload.
    Set(BTreeMap<String, Spanned<Text>>),
    /// Run a Rhai script (inline or a `.rhai` path).
    Script(Spanned<Text>),
    /// Drop the message when the predicate is not truthy.
    Filter(Spanned<Text>),
    /// Content-based router; first matching arm wins.
    Route(Vec<Spanned<RouteArm>>),
    /// Deliver to one sink or several.
    To(Spanned<Targets>),
    /// Write a templated line to the log.
    Log(Spanned<Text>),
    /// Set the status and headers of a request-reply answer.
    Reply(crate::ReplyConfig),
    /// Call an HTTP endpoint and merge the answer into the payload.
    Enrich(Box<crate::EnrichConfig>),
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
            StepConfig::Reply(_) => "reply",
            StepConfig::Enrich(_) => "enrich",
        }
    }
}

/// One arm of a `route`: `{when, to}`, `{when, steps}` or `{else}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteArm {
    /// JMESPath predicate.
    pub when: Option<Spanned<Text>>,
    /// Sinks to deliver to when the arm matches.
    pub to: Option<Spanned<Targets>>,
    /// Steps to run when the arm matches.
    pub steps: Option<Vec<Spanned<StepConfig>>>,
    /// Sinks for messages that matched no arm.
    #[serde(rename = "else")]
    pub otherwise: Option<Spanned<Targets>>,
}

/// One sink name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(pub Vec<String>);

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
