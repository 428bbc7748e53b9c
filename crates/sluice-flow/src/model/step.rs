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
    #[schemars(with = "Vec<FlowStep>")]
    Try(Vec<Spanned<FlowStep>>),
    /// Steps run when the steps of the preceding `try` failed.
    #[schemars(with = "Vec<FlowStep>")]
    Catch(Vec<Spanned<FlowStep>>),
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
    #[schemars(with = "Option<Vec<FlowStep>>")]
    pub steps: Option<Vec<Spanned<FlowStep>>>,
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

/// One entry of a step list: the step (its kind key and config) and an optional `name:`
/// that metrics, traces, errors, mocks and `/api/flows` use instead of the position.
///
/// Written as one map: `- name: price` beside `script: ...`. Deserialized by hand because
/// the kind is an externally tagged enum key, and serde's `flatten` would lose both the
/// strictness (`deny_unknown_fields`) and the positions of the values.
#[derive(Debug)]
pub struct FlowStep {
    /// `name:`, unique within the flow.
    pub name: Option<Spanned<Text>>,
    /// The step itself.
    pub config: StepConfig,
}

impl std::ops::Deref for FlowStep {
    type Target = StepConfig;
    fn deref(&self) -> &StepConfig {
        &self.config
    }
}

impl<'de> Deserialize<'de> for FlowStep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = FlowStep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step: a map with one step kind key (and optionally `name`)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<FlowStep, A::Error> {
                let mut name: Option<Spanned<Text>> = None;
                let mut config: Option<(String, StepConfig)> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "name" {
                        if name.is_some() {
                            return Err(de::Error::duplicate_field("name"));
                        }
                        name = Some(map.next_value()?);
                        continue;
                    }
                    if let Some((first, _)) = &config {
                        return Err(de::Error::custom(format!(
                            "a step has exactly one kind, but this one has `{first}` and `{key}`; \
                             put each in a step of its own"
                        )));
                    }
                    let step = StepConfig::deserialize(KindEntry {
                        key: key.clone(),
                        map: &mut map,
                    })?;
                    config = Some((key, step));
                }
                match config {
                    Some((_, config)) => Ok(FlowStep { name, config }),
                    None => Err(de::Error::custom(
                        "a step needs a kind, e.g. `- transform: ...` (a `name:` alone is not a step)",
                    )),
                }
            }
        }
        deserializer.deserialize_map(StepVisitor)
    }
}

/// The kind key of a step already read from its map, with its value still in the map:
/// handed to `StepConfig`'s derived `Deserialize` as the enum it expects.
struct KindEntry<'m, A> {
    key: String,
    map: &'m mut A,
}

impl<'de, A: de::MapAccess<'de>> Deserializer<'de> for KindEntry<'_, A> {
    type Error = A::Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de, 'm, A: de::MapAccess<'de>> de::EnumAccess<'de> for KindEntry<'m, A> {
    type Error = A::Error;
    type Variant = KindValue<'m, A>;
    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, KindValue<'m, A>), A::Error> {
        use serde::de::IntoDeserializer;
        let key: de::value::StringDeserializer<A::Error> = self.key.into_deserializer();
        let variant = seed.deserialize(key)?;
        Ok((variant, KindValue(self.map)))
    }
}

/// The value of a step's kind key, read from the step's map.
struct KindValue<'m, A>(&'m mut A);

impl<'de, A: de::MapAccess<'de>> de::VariantAccess<'de> for KindValue<'_, A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.next_value::<de::IgnoredAny>().map(|_| ())
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a step's value is a single value"))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a step's value is a single value"))
    }
}

impl JsonSchema for FlowStep {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StepConfig".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The kinds' schema, each alternative (a one-key object) allowing `name` beside its
        // kind key.
        let mut schema = StepConfig::json_schema(generator);
        let name = generator.subschema_for::<Text>();
        let mut name = name.to_value();
        if let Some(object) = name.as_object_mut() {
            object.insert(
                "description".to_owned(),
                serde_json::Value::String(
                    "The step's name, unique within the flow: metrics, traces, errors, test \
                     mocks and the admin API use it instead of the position."
                        .to_owned(),
                ),
            );
        }
        if let Some(alternatives) = schema.get_mut("oneOf").and_then(|v| v.as_array_mut()) {
            for alternative in alternatives {
                if let Some(properties) = alternative
                    .get_mut("properties")
                    .and_then(|p| p.as_object_mut())
                {
                    properties.insert("name".to_owned(), name.clone());
                }
            }
        }
        schema
    }
}
