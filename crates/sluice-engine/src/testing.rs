//! `tests:` cases and dry runs (`sluice test`, `sluice exec`, and the gate of every reload).

use crate::connector::Outgoing;
use crate::error::{ErrorKind, FlowError};
use crate::flow::CompiledFlow;
use crate::message::{Message, Meta};
use crate::steps::Control;
use serde::Serialize;
use serde_json::Value;
use sluice_flow::Span;
use std::collections::BTreeMap;

/// Metadata key set on the messages of `tests:` cases.
pub const TEST_MARKER: &str = "sluice.test";

/// A test case, checked at compile time (its sink exists, its error kind is known).
#[derive(Debug, Clone)]
pub struct CompiledTest {
    /// Its name.
    pub name: String,
    /// Where it is in the flow file.
    pub span: Option<Span>,
    /// The payload given to the first step.
    pub input: Value,
    /// Extra metadata.
    pub meta: BTreeMap<String, String>,
    /// The sink that must receive the message.
    pub sink: Option<String>,
    /// A subset of the payload delivered there (or of the final payload).
    pub payload: Option<Value>,
    /// The message must be filtered (or must not).
    pub filtered: Option<bool>,
    /// The message must fail with this kind.
    pub error: Option<ErrorKind>,
}

/// What `sluice exec` prints: the result of one message, with nothing written.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// `delivered`, `completed`, `filtered` or `error`.
    pub outcome: &'static str,
    /// The payload after the last step.
    pub payload: Value,
    /// Sinks that would receive the message, in order.
    pub route: Vec<String>,
    /// What each sink would receive and where it would write it.
    pub deliveries: Vec<DryDelivery>,
    /// The error, when the outcome is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DryError>,
}

/// One delivery of a dry run.
#[derive(Debug, Serialize)]
pub struct DryDelivery {
    /// The sink's name.
    pub sink: String,
    /// The payload it would receive.
    pub payload: Value,
    /// Where it would write (a file path, `stdout`, …).
    pub target: String,
}

/// The error of a dry run.
#[derive(Debug, Serialize)]
pub struct DryError {
    /// The error kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// The step.
    pub step: Option<String>,
    /// Contract violations.
    pub violations: Vec<crate::error::Violation>,
}

impl From<FlowError> for DryError {
    fn from(e: FlowError) -> Self {
        DryError {
            kind: e.kind,
            message: e.message,
            step: e.step,
            violations: e.violations,
        }
    }
}

/// Runs one message through the steps and asks each sink where it would write; writes nothing.
pub async fn dry_run(flow: &CompiledFlow, payload: Value, meta: Meta) -> DryRun {
    let message = Message::new(&flow.name, payload, meta);
    let executed = match flow.execute(message).await {
        Ok(executed) => executed,
        Err(e) => {
            return DryRun {
                outcome: "error",
                payload: Value::Null,
                route: Vec::new(),
                deliveries: Vec::new(),
                error: Some(e.into()),
            };
        }
    };
    let mut final_payload = executed.payload;
    let payload = final_payload.json().cloned().unwrap_or(Value::Null);
    if executed.control == Control::Drop {
        return DryRun {
            outcome: "filtered",
            payload,
            route: Vec::new(),
            deliveries: Vec::new(),
            error: None,
        };
    }
    let mut route = Vec::new();
    let mut deliveries = Vec::new();
    for delivery in executed.deliveries {
        for sink_name in delivery.sinks.iter() {
            let mut out = Outgoing {
                payload: delivery.payload.clone(),
                meta: executed.meta.clone(),
            };
            let target = match flow.sinks.get(sink_name).map(|s| s.target(&mut out)) {
                Some(Ok(target)) => target,
                Some(Err(e)) => {
                    return DryRun {
                        outcome: "error",
                        payload,
                        route,
                        deliveries,
                        error: Some(e.at_step(format!("sink {sink_name}")).into()),
                    };
                }
                None => String::new(),
            };
            route.push(sink_name.clone());
            deliveries.push(DryDelivery {
                sink: sink_name.clone(),
                payload: out.payload.json().cloned().unwrap_or(Value::Null),
                target,
            });
        }
    }
    DryRun {
        outcome: if deliveries.is_empty() {
            "completed"
        } else {
            "delivered"
        },
        payload,
        route,
        deliveries,
        error: None,
    }
}

/// Runs one test case; `Err` says what differed.
pub async fn run_test(flow: &CompiledFlow, test: &CompiledTest) -> Result<(), String> {
    let mut meta = test.meta.clone();
    meta.insert(TEST_MARKER.to_owned(), "true".to_owned());
    meta.entry("message_id".to_owned())
        .or_insert_with(|| format!("test-{}", test.name.replace(' ', "-")));
    let run = dry_run(flow, test.input.clone(), meta).await;
    if let Some(kind) = test.error {
        return match &run.error {
            Some(e) if e.kind == kind => Ok(()),
            Some(e) => Err(format!(
                "expected a `{kind}` error, got a `{}` error: {}",
                e.kind, e.message
            )),
            None => Err(format!(
                "expected a `{kind}` error, but the message was {}",
                run.outcome
            )),
        };
    }
    if let Some(e) = &run.error {
        let mut text = format!(
            "the message failed with a `{}` error: {}",
            e.kind, e.message
        );
        for v in &e.violations {
            text.push_str(&format!("; {} {}", v.pointer, v.message));
        }
        return Err(text);
    }
    let filtered = run.outcome == "filtered";
    if let Some(expected) = test.filtered
        && expected != filtered
    {
        return Err(if expected {
            format!(
                "expected the message to be filtered, but it was {}",
                run.outcome
            )
        } else {
            "the message was filtered".to_owned()
        });
    }
    match &test.sink {
        Some(sink) => {
            let Some(delivery) = run.deliveries.iter().find(|d| &d.sink == sink) else {
                return Err(if run.route.is_empty() {
                    format!(
                        "expected delivery to `{sink}`, but the message was {}",
                        run.outcome
                    )
                } else {
                    format!(
                        "expected delivery to `{sink}`, got {}",
                        run.route.join(", ")
                    )
                });
            };
            if let Some(expected) = &test.payload {
                subset_match(expected, &delivery.payload, "")?;
            }
        }
        None => {
            if test.filtered.is_none() && !run.route.is_empty() && test.payload.is_none() {
                return Err(format!(
                    "expected no delivery, got {}",
                    run.route.join(", ")
                ));
            }
            if let Some(expected) = &test.payload {
                subset_match(expected, &run.payload, "")?;
            }
        }
    }
    Ok(())
}

/// Objects match when every expected key matches; arrays element by element with equal
/// length; scalars by equality (numbers by value, so `2` matches `2.0`).
pub fn subset_match(expected: &Value, actual: &Value, pointer: &str) -> Result<(), String> {
    let at = if pointer.is_empty() { "/" } else { pointer };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let child = format!("{pointer}/{key}");
                match a.get(key) {
                    Some(actual) => subset_match(value, actual, &child)?,
                    None => {
                        return Err(format!("{child}: expected {value}, but the key is missing"));
                    }
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{at}: expected {} items, got {}", e.len(), a.len()));
            }
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                subset_match(e, a, &format!("{pointer}/{i}"))?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: expected {e}, got {a}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let actual = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        assert!(subset_match(&json!({"b": {"d": "x"}}), &actual, "").is_ok());
        assert!(subset_match(&json!({"a": 1.0}), &actual, "").is_ok());
        let err = subset_match(&json!({"b": {"c": [1]}}), &actual, "").unwrap_err();
        assert!(err.contains("/b/c"), "{err}");
        let err = subset_match(&json!({"z": 1}), &actual, "").unwrap_err();
        assert!(err.contains("/z"), "{err}");
    }
}
