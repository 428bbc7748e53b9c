//! `sluice new flow NAME --trigger KIND`: a new flow file with a contract stub and tests that
//! pass, written the way the docs write flows (`docs/flow-format.md`), so that `sluice check`
//! and `sluice test` are green before the first edit.

use crate::cli::{Folders, NewTrigger};
use anyhow::bail;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Writes `<flows>/<name>.yaml` and `<schemas>/<name>.v1.json`; refuses to overwrite either.
pub fn new_flow(folders: &Folders, name: &str, trigger: NewTrigger) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let flow_path = folders.flows.join(format!("{name}.yaml"));
    let contract = format!("{name}.v1");
    let contract_path = folders.schemas.join(format!("{contract}.json"));
    for path in [&flow_path, &contract_path] {
        if path.exists() {
            bail!(
                "{} exists already; pick another name, or remove the file to write it anew",
                path.display()
            );
        }
    }
    write_new(&contract_path, &contract_text(name))?;
    write_new(&flow_path, &flow_text(name, trigger))?;
    eprintln!(
        "wrote {} ({} trigger, contract `{contract}`, 2 tests)",
        flow_path.display(),
        trigger.key()
    );
    eprintln!("wrote {}", contract_path.display());
    eprintln!(
        "next: edit the steps and the contract, then `sluice test {}` and `sluice run`",
        flow_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A flow name becomes a file name, a subject, a queue and a path segment: keep it plain.
fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        bail!(
            "`{name}` is not a usable flow name: use up to 64 letters, digits, `-` and `_`, starting with a letter or digit (e.g. order-intake)"
        );
    }
    Ok(())
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the folder {}: {e}; create it or pass --flows/--schemas",
                parent.display()
            )
        })?;
    }
    // `create_new`: a file that appeared since the check above is not overwritten either.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", PathBuf::from(path).display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The contract stub: an object with a required string `id`.
fn contract_text(name: &str) -> String {
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{name} input, version 1"),
        "description": format!("What a message of the `{name}` flow carries. Add its fields; formats (`email`, `date-time`, …) are checked."),
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": { "type": "string", "minLength": 1, "description": "Identifies the message; names the output file." }
        }
    });
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The trigger block, indented under `trigger:`.
fn trigger_text(name: &str, trigger: NewTrigger) -> String {
    let stream = name.to_ascii_uppercase().replace('-', "_");
    match trigger {
        NewTrigger::Http => format!(
            "  http:\n    path: /{name}  # POST a JSON body here; the final payload is the answer\n    method: POST\n"
        ),
        NewTrigger::File => format!(
            "  file:\n    path: inbox/{name}  # drop *.json files here\n    glob: \"*.json\"\n    format: json\n"
        ),
        NewTrigger::Nats => format!(
            "  nats:\n    url: \"nats://127.0.0.1:4222\"  # the default; ${{env:NATS_URL}} to configure it\n    stream: {stream}  # created with `subject` when missing\n    subject: \"{name}.>\"\n    durable: {name}\n"
        ),
        NewTrigger::Amqp => format!(
            "  amqp:\n    url: \"amqp://guest:guest@127.0.0.1:5672/%2f\"  # the default; credentials via ${{env:…}}\n    queue: {name}  # declared durable when missing\n"
        ),
        NewTrigger::Mqtt => format!(
            "  mqtt:\n    url: \"mqtt://127.0.0.1:1883\"  # the default\n    topics: [\"{name}/#\"]\n    client_id: {name}\n"
        ),
        NewTrigger::Redis => format!(
            "  redis:\n    url: \"redis://127.0.0.1:6379\"  # the default\n    stream: {name}\n    group: {name}\n"
        ),
        NewTrigger::Postgres => format!(
            "  postgres:  # an outbox table: id, payload (json/jsonb)\n    url: \"postgres://postgres@127.0.0.1:5432/test\"  # the default; the password via ${{env:…}}\n    table: {}_outbox\n",
            name.replace('-', "_")
        ),
        NewTrigger::Mysql => format!(
            "  mysql:  # an outbox table: id, payload (JSON)\n    url: \"mysql://root@127.0.0.1:3306/test\"  # the default; the password via ${{env:…}}\n    table: {}_outbox\n",
            name.replace('-', "_")
        ),
        NewTrigger::Kafka => format!(
            "  kafka:\n    brokers: \"127.0.0.1:9092\"  # the default; ${{env:KAFKA_BROKERS}} to configure it\n    topics: [{name}]\n    group: {name}  # processes using it share the partitions\n"
        ),
        NewTrigger::Sftp => format!(
            "  sftp:\n    url: \"sftp://{name}@127.0.0.1:22/inbox/{name}\"  # the server and folder\n    key: keys/{name}  # a private key file; or password: ${{env:SFTP_PASSWORD}}\n    known_hosts: keys/known_hosts  # the server's host key must be in it\n    glob: \"*.json\"\n"
        ),
        NewTrigger::Schedule => format!(
            "  schedule:\n    every: 1m  # or cron: \"0 */5 * * * *\" (UTC)\n    payload: {{ id: {name} }}\n"
        ),
        NewTrigger::Channel => {
            format!("  channel:\n    name: {name}  # other flows send here with a `channel` sink\n")
        }
    }
}

/// The whole flow file.
fn flow_text(name: &str, trigger: NewTrigger) -> String {
    // A schedule sends the same payload on every tick: name each output by its message id.
    let file_name = match trigger {
        NewTrigger::Schedule => "{{meta('message_id')}}.json",
        _ => "{{id}}.json",
    };
    format!(
        r#"# Written by `sluice new flow {name} --trigger {key}`. Reference: docs/flow-format.md
name: {name}
description: Receives {name} messages ({key} trigger) and writes each to outbox/{name}.
trigger:
{trigger}contract:
  input: {name}.v1  # schemas/{name}.v1.json, checked before the first step
steps:
  - set:
      received_at: "meta('received_at')"
  - to: out
sinks:
  out:
    file: {{ path: outbox/{name}, name: "{file_name}" }}
errors:
  retry: {{ attempts: 3, backoff: 100ms, max_backoff: 10s }}
  dead_letter: {{ file: {{ path: dead-letter/{name} }} }}
tests:  # `sluice test` runs these, and so does every reload
  - name: a message with an id is written to the outbox
    input: {{ id: example-1 }}
    expect: {{ sink: out, payload: {{ id: example-1 }} }}
  - name: a message without an id breaks the contract
    input: {{ note: no id }}
    expect: {{ error: contract }}
"#,
        key = trigger.key(),
        trigger = trigger_text(name, trigger),
    )
}
