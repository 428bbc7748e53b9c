//! Edge values through both the parser and the generated schema: each must give the same
//! verdict, so a constraint the parser enforces is one the schema states, and the other way
//! round. (Constraints the compiler enforces, such as `aggregate: {}`, are walked through
//! `sluice check` in `tests/reference_docs.rs`.)

use crate::schema::{validator, yaml_to_json};
use crate::units::{DURATION_UNITS, SIZE_UNITS};
use std::path::Path;

/// A flow with a file trigger whose extra keys are `file_keys`.
fn file_flow(file_keys: &str) -> String {
    format!("trigger:\n  file: {{ path: inbox, {file_keys} }}\n")
}

fn mqtt_flow(keys: &str) -> String {
    format!("trigger:\n  mqtt: {{ topics: [a], {keys} }}\n")
}

fn flow_with_sink(sink: &str) -> String {
    format!("trigger:\n  file: {{ path: inbox }}\nsinks:\n  out: {sink}\n")
}

fn flow_with_step(step: &str) -> String {
    format!(
        "trigger:\n  file: {{ path: inbox }}\nsteps:\n  - {step}\nsinks:\n  out: {{ stdout: {{}} }}\n"
    )
}

/// (what, flow text, accepted?)
fn table() -> Vec<(String, String, bool)> {
    let mut rows: Vec<(String, String, bool)> = Vec::new();
    let mut row = |what: &str, text: String, ok: bool| rows.push((what.to_owned(), text, ok));
    row("minimal flow", file_flow("glob: '*'"), true);
    row("unknown key", file_flow("globb: '*'"), false);
    row("missing trigger", "steps: []\n".to_owned(), false);
    row("empty trigger map", "trigger: {}\n".to_owned(), false);
    row(
        "two triggers",
        "trigger: { file: { path: a }, http: { path: /a } }\n".to_owned(),
        false,
    );
    row(
        "valid name",
        format!("name: order-intake.v2\n{}", file_flow("glob: '*'")),
        true,
    );
    row(
        "name with a blank",
        format!("name: 'order intake'\n{}", file_flow("glob: '*'")),
        false,
    );
    // Counts.
    for (key, value, ok) in [
        ("stable_checks", "0", false),
        ("stable_checks", "1", true),
        ("stable_checks", "-1", false),
        ("stable_checks", "two", false),
        ("max_in_flight", "0", false),
        ("max_in_flight", "1", true),
        ("max_in_flight", "-3", false),
    ] {
        row(
            &format!("{key}: {value}"),
            file_flow(&format!("{key}: {value}")),
            ok,
        );
    }
    row(
        "nats batch: 0",
        "trigger:\n  nats: { subject: a, batch: 0 }\n".to_owned(),
        false,
    );
    row(
        "nats batch: 1",
        "trigger:\n  nats: { subject: a, batch: 1 }\n".to_owned(),
        true,
    );
    row(
        "postgres trigger: {}",
        "trigger:\n  postgres: {}\n".to_owned(),
        false,
    );
    row(
        "postgres pool: 0",
        flow_with_sink("{ postgres: { sql: 'select 1', pool: 0 } }"),
        false,
    );
    row(
        "postgres pool: 2",
        flow_with_sink("{ postgres: { sql: 'select 1', pool: 2 } }"),
        true,
    );
    // Sizes: every unit spelling, no unit, and what is not a size.
    for (unit, _) in SIZE_UNITS {
        row(
            &format!("max_size 512{unit}"),
            file_flow(&format!("max_size: 512{unit}")),
            true,
        );
        row(
            &format!("max_size '3 {unit}'"),
            file_flow(&format!("max_size: '3 {unit}'")),
            true,
        );
    }
    for (value, ok) in [
        ("0", true),
        ("1048576", true),
        ("'1048576'", true),
        ("-1", false),
        ("1.5MiB", false),
        ("12 parsecs", false),
        ("MiB", false),
        ("512kb", false),
        ("''", false),
    ] {
        row(
            &format!("max_size: {value}"),
            file_flow(&format!("max_size: {value}")),
            ok,
        );
    }
    // Durations: every unit spelling, combinations, fractions, and what is not a duration.
    for (unit, _) in DURATION_UNITS {
        row(
            &format!("min_age 5{unit}"),
            file_flow(&format!("min_age: 5{unit}")),
            true,
        );
    }
    for (value, ok) in [
        ("0s", true),
        ("1m 30s", true),
        ("1m30s", true),
        ("1.5s", true),
        ("' 2 h '", true),
        ("5", false),
        ("'5'", false),
        ("-1s", false),
        ("5 parsecs", false),
        ("1.s", false),
        ("1s 2", false),
        ("''", false),
        ("5S", false),
    ] {
        row(
            &format!("min_age: {value}"),
            file_flow(&format!("min_age: {value}")),
            ok,
        );
    }
    // MQTT keep-alive: whole seconds.
    for (value, ok) in [
        ("30s", true),
        ("1m", true),
        ("0s", true),
        ("1500ms", false),
        ("1000ms", false),
        ("1.5s", false),
        ("30", false),
    ] {
        row(
            &format!("keep_alive: {value}"),
            mqtt_flow(&format!("keep_alive: {value}")),
            ok,
        );
    }
    row("qos: 0", mqtt_flow("qos: 0"), true);
    row("qos: 2", mqtt_flow("qos: 2"), false);
    // Enums and shapes.
    row("format: ndjson", file_flow("format: ndjson"), true);
    row("format: xml", file_flow("format: xml"), true);
    row("format: yaml", file_flow("format: yaml"), false);
    row(
        "http method get",
        "trigger:\n  http: { path: /a, method: get }\n".to_owned(),
        true,
    );
    row(
        "http method Get",
        "trigger:\n  http: { path: /a, method: Get }\n".to_owned(),
        false,
    );
    row("empty sink map", flow_with_sink("{}"), false);
    row("stdout sink", flow_with_sink("{ stdout: {} }"), true);
    row("to: []", flow_with_step("to: []"), false);
    row("to: [out]", flow_with_step("to: [out]"), true);
    row("split shorthand", flow_with_step("split: items"), true);
    row("split: {}", flow_with_step("split: {}"), false);
    row("unknown step", flow_with_step("tranform: a"), false);
    row(
        "two step kinds",
        flow_with_step("{ filter: a, log: b }"),
        false,
    );
    rows
}

#[test]
fn the_parser_and_the_schema_agree_on_every_edge_value() {
    let schema = validator(None).expect("the generated schema compiles");
    let mut disagreements = Vec::new();
    for (what, text, expected) in table() {
        let parsed = crate::parse_flow(Path::new("flows/edge.yaml"), text.clone());
        let json = yaml_to_json(&text).expect("every row is well-formed YAML");
        let valid = schema.is_valid(&json);
        if parsed.is_ok() != expected || valid != expected {
            disagreements.push(format!(
                "{what}: expected {}, the parser {} ({}), the schema {}\n{text}",
                verdict(expected),
                verdict(parsed.is_ok()),
                parsed.err().map(|d| d.message).unwrap_or_default(),
                verdict(valid),
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

fn verdict(ok: bool) -> &'static str {
    if ok { "accepts" } else { "refuses" }
}

#[test]
fn zero_counts_are_refused_at_their_own_key() {
    let text = "trigger:\n  file:\n    path: inbox\n    max_in_flight: 0\n    stable_checks: 3\n";
    let err = crate::parse_flow(Path::new("flows/t.yaml"), text.to_owned()).unwrap_err();
    assert_eq!(err.span.map(|s| (s.line, s.column)), Some((4, 20)), "{err}");
    assert!(err.message.contains("at least 1"), "{err}");
    let text = "trigger:\n  file:\n    path: inbox\n    stable_checks: 0\n";
    let err = crate::parse_flow(Path::new("flows/t.yaml"), text.to_owned()).unwrap_err();
    assert_eq!(err.span.map(|s| (s.line, s.column)), Some((4, 20)), "{err}");
}

#[test]
fn sub_second_keep_alive_is_refused_at_its_value() {
    let text = "trigger:\n  mqtt:\n    topics: [a]\n    keep_alive: 1500ms\n";
    let err = crate::parse_flow(Path::new("flows/t.yaml"), text.to_owned()).unwrap_err();
    assert_eq!(err.span.map(|s| s.line), Some(4), "{err}");
    assert!(err.message.contains("whole number of seconds"), "{err}");
}

#[test]
fn every_key_of_the_schema_has_a_description() {
    let schema = serde_json::Value::from(crate::schema::flow_schema());
    let mut undescribed = Vec::new();
    for (name, def) in schema["$defs"].as_object().expect("the schema has $defs") {
        for (key, property) in def["properties"].as_object().into_iter().flatten() {
            let described = property
                .get("description")
                .and_then(|d| d.as_str())
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                undescribed.push(format!("{name}.{key}"));
            }
        }
    }
    assert!(
        undescribed.is_empty(),
        "give these model fields a doc comment: {}",
        undescribed.join(", ")
    );
}
