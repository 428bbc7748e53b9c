//! Whether a test case's dry run met its `expect:`: each key checked, and what differed.

use super::{CompiledTest, DryRun, ExpectedError, ExpectedSent, subset_match};
use serde_json::Value;

pub(super) fn check_test(test: &CompiledTest, run: &DryRun) -> Result<(), String> {
    if let Some(expected) = &test.error {
        return check_error(expected, run);
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
    check_reply(test, run)?;
    if let Some(expected) = &test.deliveries {
        check_deliveries(expected, run)?;
    }
    for sent in &test.sent {
        check_sent(sent, run)?;
    }
    let checks_elsewhere = test.filtered.is_some()
        || test.deliveries.is_some()
        || !test.sent.is_empty()
        || test.status.is_some()
        || !test.headers.is_empty();
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
            if !checks_elsewhere && !run.route.is_empty() && test.payload.is_none() {
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

fn check_error(expected: &ExpectedError, run: &DryRun) -> Result<(), String> {
    let kind = expected.kind;
    let Some(e) = &run.error else {
        return Err(format!(
            "expected a `{kind}` error, but the message was {}",
            run.outcome
        ));
    };
    if e.kind != kind {
        return Err(format!(
            "expected a `{kind}` error, got a `{}` error: {}",
            e.kind, e.message
        ));
    }
    if let Some(pointer) = &expected.pointer
        && !e.violations.iter().any(|v| &v.pointer == pointer)
    {
        let found: Vec<&str> = e.violations.iter().map(|v| v.pointer.as_str()).collect();
        return Err(if found.is_empty() {
            format!(
                "expected a violation at `{pointer}`, but the `{kind}` error has none: {}",
                e.message
            )
        } else {
            format!(
                "expected a violation at `{pointer}`, got violations at {}",
                found.join(", ")
            )
        });
    }
    if let Some(part) = &expected.message
        && !e.message.contains(part.as_str())
    {
        return Err(format!(
            "expected the error message to contain `{part}`, got: {}",
            e.message
        ));
    }
    Ok(())
}

fn check_reply(test: &CompiledTest, run: &DryRun) -> Result<(), String> {
    let status = run.reply.as_ref().map_or(200, |r| r.status);
    if let Some(expected) = test.status
        && expected != status
    {
        return Err(format!("expected status {expected}, got {status}"));
    }
    let headers = run
        .reply
        .as_ref()
        .map(|r| r.headers.as_slice())
        .unwrap_or_default();
    for (name, value) in &test.headers {
        match headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, actual)) if actual == value => {}
            Some((_, actual)) => {
                return Err(format!(
                    "expected header `{name}: {value}`, got `{name}: {actual}`"
                ));
            }
            None => {
                return Err(format!(
                    "expected header `{name}: {value}`, but the answer has none"
                ));
            }
        }
    }
    Ok(())
}

fn check_deliveries(expected: &[(String, Option<Value>)], run: &DryRun) -> Result<(), String> {
    if expected.len() != run.deliveries.len() {
        return Err(format!(
            "expected {} deliveries ({}), got {} ({})",
            expected.len(),
            expected
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            run.deliveries.len(),
            run.route.join(", ")
        ));
    }
    for (i, ((sink, payload), actual)) in expected.iter().zip(&run.deliveries).enumerate() {
        if sink != &actual.sink {
            return Err(format!(
                "delivery {i}: expected `{sink}`, got `{}` (deliveries: {})",
                actual.sink,
                run.route.join(", ")
            ));
        }
        if let Some(payload) = payload {
            subset_match(payload, &actual.payload, "")
                .map_err(|e| format!("delivery {i} to `{sink}`: {e}"))?;
        }
    }
    Ok(())
}

fn check_sent(expected: &ExpectedSent, run: &DryRun) -> Result<(), String> {
    let to = expected.to.as_str();
    let payloads: Vec<&Value> = run
        .deliveries
        .iter()
        .filter(|d| d.sink == to)
        .map(|d| &d.payload)
        .chain(run.sent.iter().filter(|s| s.to == to).map(|s| &s.payload))
        .collect();
    match expected.count {
        Some(count) if count != payloads.len() => {
            return Err(format!(
                "expected {count} sent to `{to}`, got {}",
                payloads.len()
            ));
        }
        None if payloads.is_empty() => {
            return Err(format!(
                "expected something sent to `{to}`, but nothing was"
            ));
        }
        _ => {}
    }
    if let Some(subset) = &expected.payload {
        let mut first = None;
        for payload in &payloads {
            match subset_match(subset, payload, "") {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        return Err(format!(
            "what was sent to `{to}` does not match: {}",
            first.unwrap_or_else(|| "nothing was sent".to_owned())
        ));
    }
    Ok(())
}
