//! The reference cannot drift from the code.
//!
//! - Every YAML block in README.md, docs/*.md and examples/**/README.md is checked: a plain
//!   ```` ```yaml ```` block is a whole flow and must pass `sluice check`; a block marked
//!   ```` ```yaml fragment=NAME ```` is validated against the flow schema's definition `NAME`
//!   (`flow` for a partial flow file, `steps` for a list of steps, `sluice.yaml` for settings).
//! - `sluice schema` prints the checked-in schema.
//! - Constraints the compiler enforces (`aggregate: {}`, a `postgres: {}` sink, zero counts)
//!   get the same verdict from `sluice check` and from the schema.
//! - Every key of every connector is in its section of the docs, with its default; every error
//!   kind and every field of the error envelope is documented.
//!
//! Each command runs the real binary in a temporary folder and ends on its own; nothing waits.

use crate::support::copy_dir;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the sluice binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The schema as `sluice schema` prints it.
fn printed_schema() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice(dir.path(), &["schema"]);
    assert!(out.status.success(), "sluice schema: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("sluice schema prints JSON")
}

/// A validator for the definition `name` of the schema (`None`: the whole flow file;
/// `Some("flow")`: a flow file that may leave out required keys).
fn validator(schema: &Value, name: Option<&str>) -> jsonschema::Validator {
    let target = match name {
        None => schema.clone(),
        Some("flow") => {
            let mut partial = schema.clone();
            partial.as_object_mut().unwrap().remove("required");
            partial
        }
        Some("steps") => serde_json::json!({
            "type": "array",
            "items": { "$ref": "#/$defs/StepConfig" },
            "$defs": schema["$defs"],
        }),
        Some(def) => {
            assert!(
                schema["$defs"].get(def).is_some(),
                "the flow schema has no definition `{def}`; the fragment's info string names one of: {}",
                schema["$defs"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            serde_json::json!({ "$ref": format!("#/$defs/{def}"), "$defs": schema["$defs"] })
        }
    };
    jsonschema::validator_for(&target).expect("the schema compiles")
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every file whose YAML blocks are reference material.
fn reference_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    for entry in fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut stack = vec![root.join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "README.md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One fenced YAML block: where it starts, its info string after `yaml`, its text.
struct Block {
    line: usize,
    info: String,
    body: String,
}

fn yaml_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.as_mut() {
            Some(block) if trimmed.starts_with("```") => {
                blocks.push(std::mem::replace(
                    block,
                    Block {
                        line: 0,
                        info: String::new(),
                        body: String::new(),
                    },
                ));
                open = None;
            }
            Some(block) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            None => {
                if let Some(info) = trimmed.strip_prefix("```yaml") {
                    open = Some(Block {
                        line: i + 1,
                        info: info.trim().to_owned(),
                        body: String::new(),
                    });
                }
            }
        }
    }
    blocks
}

/// A working folder with the repository's contracts and scripts, as the README assumes.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["schemas", "scripts"] {
        copy_dir(&repo().join(folder), &dir.path().join(folder));
    }
    fs::create_dir_all(dir.path().join("flows")).unwrap();
    dir
}

/// `sluice check` of one flow, with every `${env:NAME}` it names set (a placeholder of secret
/// length), as a deployment would.
fn check_flow(dir: &Path, flow: &str) -> Output {
    fs::write(dir.join("flows/block.yaml"), flow).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["check", "flows/block.yaml"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for reference in flow.split("${env:").skip(1) {
        let name: String = reference
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        command.env(name, "placeholder-value");
    }
    command.output().expect("run the sluice binary")
}

#[test]
fn every_yaml_block_of_the_reference_loads_or_matches_its_fragment() {
    let schema = printed_schema();
    let dir = workdir();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in reference_files() {
        let markdown = fs::read_to_string(&file).unwrap();
        let shown = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        for block in yaml_blocks(&markdown) {
            checked += 1;
            let at = format!("{shown}:{}", block.line);
            let fragment = block.info.strip_prefix("fragment=").map(str::to_owned);
            if !block.info.is_empty() && fragment.is_none() {
                problems.push(format!(
                    "{at}: unknown info string `yaml {}`; write `yaml` for a whole flow or `yaml fragment=NAME`",
                    block.info
                ));
                continue;
            }
            match fragment.as_deref() {
                None => {
                    let out = check_flow(dir.path(), &block.body);
                    if !out.status.success() {
                        problems.push(format!(
                            "{at}: a whole flow that `sluice check` refuses (mark a part of a flow `yaml fragment=flow`):\n{}",
                            text(&out.stderr)
                        ));
                    }
                }
                Some("sluice.yaml") => {
                    let settings = tempfile::tempdir().unwrap();
                    fs::write(settings.path().join("sluice.yaml"), &block.body).unwrap();
                    if let Err(e) = sluice_flow::Settings::load(settings.path()) {
                        problems.push(format!("{at}: not a valid sluice.yaml: {e}"));
                    }
                }
                Some(name) => {
                    let value = match sluice_flow::schema::yaml_to_json(&block.body) {
                        Ok(value) => value,
                        Err(e) => {
                            problems.push(format!("{at}: not YAML: {e}"));
                            continue;
                        }
                    };
                    let found = errors(&validator(&schema, Some(name)), &value);
                    if !found.is_empty() {
                        problems.push(format!(
                            "{at}: does not match `{name}` of the flow schema: {}",
                            found.join("; ")
                        ));
                    }
                }
            }
        }
    }
    assert!(checked >= 25, "only {checked} YAML blocks found");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_schema_command_prints_the_checked_in_schema() {
    let on_disk: Value = serde_json::from_str(
        &fs::read_to_string(repo().join("schemas/sluice-flow.schema.json")).unwrap(),
    )
    .unwrap();
    assert!(
        printed_schema() == on_disk,
        "schemas/sluice-flow.schema.json is stale; regenerate it with \
         `cargo run -q -p sluice -- schema > schemas/sluice-flow.schema.json`"
    );
}

/// Constraints the compiler (or a connector's builder) enforces, through `sluice check` and
/// the schema: (what, flow, accepted?).
fn compile_table() -> Vec<(&'static str, String, bool)> {
    let head = "trigger:\n  file: { path: inbox }\n";
    let with_sink = |sink: &str| format!("{head}sinks:\n  out: {sink}\n");
    let with_step =
        |step: &str| format!("{head}steps:\n  - {step}\nsinks:\n  out: {{ stdout: {{}} }}\n");
    let top = |line: &str| format!("{line}\n{head}");
    vec![
        ("aggregate: {}", with_step("aggregate: {}"), false),
        (
            "aggregate: { size: 10 }",
            with_step("aggregate: { size: 10 }"),
            true,
        ),
        (
            "aggregate end_of_batch: false",
            with_step("aggregate: { end_of_batch: false }"),
            false,
        ),
        (
            "aggregate end_of_batch: true",
            with_step("aggregate: { end_of_batch: true }"),
            true,
        ),
        (
            "aggregate size: 0",
            with_step("aggregate: { size: 0 }"),
            false,
        ),
        (
            "aggregate max_groups: 0",
            with_step("aggregate: { size: 2, max_groups: 0 }"),
            false,
        ),
        (
            "dedupe max_keys: 0",
            with_step("dedupe: { max_keys: 0 }"),
            false,
        ),
        (
            "throttle burst: 0",
            with_step("throttle: { rate: 5/s, burst: 0 }"),
            false,
        ),
        (
            "throttle concurrency: 0",
            with_step("throttle: { concurrency: 0 }"),
            false,
        ),
        (
            "throttle concurrency: 2",
            with_step("throttle: { concurrency: 2 }"),
            true,
        ),
        ("throttle: {}", with_step("throttle: {}"), false),
        (
            "throttle key without rate",
            with_step("throttle: { key: a, concurrency: 2 }"),
            false,
        ),
        (
            "throttle rate and key",
            with_step("throttle: { rate: 5/s, key: a }"),
            true,
        ),
        (
            "http path without /",
            "trigger:\n  http: { path: orders }\n".to_owned(),
            false,
        ),
        (
            "http path",
            "trigger:\n  http: { path: /orders }\n".to_owned(),
            true,
        ),
        (
            "reply status: 99",
            with_step("reply: { status: 99 }"),
            false,
        ),
        (
            "reply status: 600",
            with_step("reply: { status: 600 }"),
            false,
        ),
        (
            "reply status: 201",
            with_step("reply: { status: 201 }"),
            true,
        ),
        ("postgres sink: {}", with_sink("{ postgres: {} }"), false),
        (
            "postgres sink: table, no columns",
            with_sink("{ postgres: { table: t } }"),
            false,
        ),
        (
            "postgres sink: table and columns",
            with_sink("{ postgres: { table: t, columns: { id: id } } }"),
            true,
        ),
        (
            "postgres sink: sql",
            with_sink("{ postgres: { sql: 'select 1' } }"),
            true,
        ),
        (
            "postgres sink: table and sql",
            with_sink("{ postgres: { table: t, columns: { id: id }, sql: 'select 1' } }"),
            false,
        ),
        ("mariadb sink: {}", with_sink("{ mysql: {} }"), false),
        (
            "mariadb sink: table, no columns",
            with_sink("{ mysql: { table: t } }"),
            false,
        ),
        (
            "mariadb sink: table and columns",
            with_sink("{ mysql: { table: t, columns: { id: id } } }"),
            true,
        ),
        (
            "mariadb sink: sql",
            with_sink("{ mysql: { sql: 'select 1' } }"),
            true,
        ),
        (
            "mariadb sink: table and sql",
            with_sink("{ mysql: { table: t, columns: { id: id }, sql: 'select 1' } }"),
            false,
        ),
        (
            "schedule: {}",
            "trigger:\n  schedule: {}\n".to_owned(),
            false,
        ),
        (
            "schedule every",
            "trigger:\n  schedule: { every: 1s }\n".to_owned(),
            true,
        ),
        (
            "schedule every and cron",
            "trigger:\n  schedule: { every: 1s, cron: '* * * * * *' }\n".to_owned(),
            false,
        ),
        (
            "http auth: {}",
            "trigger:\n  http: { path: /a, auth: {} }\n".to_owned(),
            false,
        ),
        (
            "http auth: bearer",
            "trigger:\n  http: { path: /a, auth: { bearer: tok-1234 } }\n".to_owned(),
            true,
        ),
        ("concurrency: 0", top("concurrency: 0"), false),
        ("concurrency: 2", top("concurrency: 2"), true),
        ("queue: 0", top("queue: 0"), false),
        (
            "retry attempts: 0",
            top("errors: { retry: { attempts: 0 } }"),
            false,
        ),
        (
            "breaker failures: 0",
            top("errors: { circuit_breaker: { failures: 0 } }"),
            false,
        ),
        (
            "breaker probes: 0",
            top("errors: { circuit_breaker: { probes: 0 } }"),
            false,
        ),
        (
            "script concurrency: 0",
            top("script_limits: { concurrency: 0 }"),
            false,
        ),
        (
            "script concurrency: 1025",
            top("script_limits: { concurrency: 1025 }"),
            false,
        ),
        (
            "script max_operations: 0",
            top("script_limits: { max_operations: 0 }"),
            false,
        ),
        (
            "channel name with a blank",
            "trigger:\n  channel: { name: 'a b' }\n".to_owned(),
            false,
        ),
        (
            "channel name",
            "trigger:\n  channel: { name: a-b_1 }\n".to_owned(),
            true,
        ),
    ]
}

#[test]
fn sluice_check_and_the_schema_agree_on_compiler_constraints() {
    let schema = printed_schema();
    let whole = validator(&schema, None);
    let dir = workdir();
    let mut disagreements = Vec::new();
    for (what, flow, expected) in compile_table() {
        let out = check_flow(dir.path(), &flow);
        let value = sluice_flow::schema::yaml_to_json(&flow).unwrap();
        let schema_errors = errors(&whole, &value);
        let code_ok = out.status.success();
        let schema_ok = schema_errors.is_empty();
        if code_ok != expected || schema_ok != expected {
            disagreements.push(format!(
                "{what}: expected {expected}, `sluice check` {code_ok} ({}), the schema {schema_ok} ({})\n{flow}",
                text(&out.stderr).trim(),
                schema_errors.join("; ")
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n\n"));
}

/// The text of the section under `heading`, up to the next heading of the same or a higher
/// level (a `#` line inside a code block is not a heading).
fn section(markdown: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = markdown.lines();
    lines
        .by_ref()
        .find(|l| *l == heading || l.starts_with(&format!("{heading} ")))
        .unwrap_or_else(|| panic!("the docs have no heading `{heading}`"));
    let mut body = String::new();
    let mut in_code = false;
    for line in lines {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        body.push_str(line);
        body.push('\n');
    }
    body
}

/// How a default is written in the docs.
fn written(default: &Value) -> String {
    match default {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn every_connector_key_is_documented_with_its_default() {
    let schema = printed_schema();
    let defs = &schema["$defs"];
    let flow_format = fs::read_to_string(repo().join("docs/flow-format.md")).unwrap();
    let operations = fs::read_to_string(repo().join("docs/http-and-operations.md")).unwrap();
    let sections: [(&str, &str, &str); 25] = [
        ("FileTriggerConfig", "flow-format", "## Trigger `file`"),
        ("CsvOptions", "flow-format", "## Trigger `file`"),
        ("FileSinkConfig", "flow-format", "## Sinks"),
        ("NatsTriggerConfig", "flow-format", "### `nats`"),
        ("NatsSinkConfig", "flow-format", "### `nats`"),
        ("NatsCreateStream", "flow-format", "### `nats`"),
        ("ChannelConfig", "flow-format", "### `channel`"),
        ("AmqpTriggerConfig", "flow-format", "### `amqp`"),
        ("AmqpSinkConfig", "flow-format", "### `amqp`"),
        ("AmqpDeclare", "flow-format", "### `amqp`"),
        ("MqttTriggerConfig", "flow-format", "### `mqtt`"),
        ("MqttSinkConfig", "flow-format", "### `mqtt`"),
        ("RedisTriggerConfig", "flow-format", "### `redis`"),
        ("RedisSinkConfig", "flow-format", "### `redis`"),
        ("PostgresTriggerConfig", "flow-format", "### `postgres`"),
        ("PostgresSinkConfig", "flow-format", "### `postgres`"),
        ("MysqlTriggerConfig", "flow-format", "### `mysql`"),
        ("MysqlSinkConfig", "flow-format", "### `mysql`"),
        ("KafkaTriggerConfig", "flow-format", "### `kafka`"),
        ("KafkaSinkConfig", "flow-format", "### `kafka`"),
        (
            "SftpTriggerConfig",
            "flow-format",
            "## Trigger and sink `sftp`",
        ),
        (
            "SftpSinkConfig",
            "flow-format",
            "## Trigger and sink `sftp`",
        ),
        ("HttpTriggerConfig", "operations", "## Trigger `http`"),
        (
            "ScheduleTriggerConfig",
            "operations",
            "## Trigger `schedule`",
        ),
        ("HttpSinkConfig", "operations", "## Sink `http`"),
    ];
    // Every connector of the schema has a row above.
    for list in ["TriggerConfig", "SinkConfig"] {
        for variant in defs[list]["oneOf"].as_array().unwrap() {
            let (_, target) = variant["properties"]
                .as_object()
                .unwrap()
                .iter()
                .next()
                .unwrap();
            let name = target["$ref"]
                .as_str()
                .map_or("StdoutSinkConfig", |r| r.trim_start_matches("#/$defs/"));
            assert!(
                name == "StdoutSinkConfig" || sections.iter().any(|(d, _, _)| *d == name),
                "the connector `{name}` has no section in this test's table; add one and document it"
            );
        }
    }
    let mut missing = Vec::new();
    for (def, doc, heading) in sections {
        let markdown = if doc == "operations" {
            &operations
        } else {
            &flow_format
        };
        let text = &section(markdown, heading);
        let properties = defs[def]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("`{def}` has properties"));
        for (key, property) in properties {
            if !text.contains(&format!("{key}:")) && !text.contains(&format!("`{key}`")) {
                missing.push(format!(
                    "{heading}: the key `{key}` ({def}) is not documented"
                ));
                continue;
            }
            if let Some(default) = property.get("default")
                && !matches!(default, Value::Object(_) | Value::Array(_))
                && !text.contains(&written(default))
            {
                missing.push(format!(
                    "{heading}: the default of `{key}` ({def}), `{}`, is not documented",
                    written(default)
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_error_kind_and_envelope_field_is_documented() {
    use sluice_engine::{ErrorEnvelope, ErrorKind, FlowError};
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let flow_format = fs::read_to_string(repo().join("docs/flow-format.md")).unwrap();
    let errors_section = &section(&flow_format, "## Errors");
    let kinds_line = readme
        .lines()
        .find(|l| l.starts_with("| `kind` |"))
        .expect("the README's sidecar table has a `kind` row");
    let readme_errors = &section(&readme, "## Errors and retries");
    for kind in ErrorKind::ALL {
        let name = format!("`{}`", kind.as_str());
        assert!(
            kinds_line.contains(&name),
            "README's `kind` row lacks {name}"
        );
        assert!(
            readme_errors.contains(&name),
            "README's \"Errors and retries\" lacks {name}"
        );
        assert!(
            errors_section.contains(&name),
            "flow-format.md's \"Errors\" lacks {name}"
        );
    }
    let mut envelope = ErrorEnvelope::new(
        "f",
        "v",
        "m",
        &FlowError::permanent(ErrorKind::Script, "x"),
        1,
    );
    envelope.correlation_id = Some("c".to_owned());
    let fields = serde_json::to_value(&envelope).unwrap();
    for field in fields.as_object().unwrap().keys() {
        assert!(
            errors_section.contains(&format!("\"{field}\"")),
            "the error envelope in flow-format.md (\"Errors\") lacks `{field}`"
        );
        if field != "correlation_id" {
            assert!(
                readme.contains(&format!("| `{field}` |")),
                "README's sidecar table lacks `{field}`"
            );
        }
    }
}
