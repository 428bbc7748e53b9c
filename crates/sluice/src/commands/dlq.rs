//! `sluice dlq`: the dead letters of a running `sluice run`, through its admin API.

use super::remote::{Admin, block_on, encode};
use crate::cli::{Dlq, Remote};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::process::ExitCode;

/// Runs a `sluice dlq` command; exit 1 when an entry could not be replayed or purged.
pub fn dlq(remote: &Remote, what: Dlq) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(remote, false)?;
    block_on(async move {
        match what {
            Dlq::List { flow } => {
                let path = match &flow {
                    Some(flow) => format!("/api/dead-letters?flow={}", encode(flow)),
                    None => "/api/dead-letters".to_owned(),
                };
                let entries = admin.get(&path).await?;
                if remote.json {
                    print_json(&entries);
                } else {
                    print_list(&entries);
                }
                Ok(ExitCode::SUCCESS)
            }
            Dlq::Show { id } => {
                let entry = admin
                    .get(&format!("/api/dead-letters/{}", encode(&id)))
                    .await?;
                print_json(&entry);
                Ok(ExitCode::SUCCESS)
            }
            Dlq::Replay {
                ids,
                all,
                flow,
                edit,
            } => {
                let body = if all {
                    json!({"all": true, "flow": flow})
                } else if edit {
                    let [id] = ids.as_slice() else {
                        bail!("--edit replays one entry: give exactly one id");
                    };
                    let entry = admin
                        .get(&format!("/api/dead-letters/{}", encode(id)))
                        .await?;
                    let payload = edited(id, &entry["message"])?;
                    json!({"ids": [id], "payload": payload})
                } else {
                    json!({"ids": ids})
                };
                let answer = admin.post("/api/dead-letters/replay", &body).await?;
                Ok(report(
                    remote.json,
                    &answer,
                    &["delivered", "completed", "filtered"],
                ))
            }
            Dlq::Purge { ids } => {
                let answer = admin
                    .post("/api/dead-letters/purge", &json!({"ids": ids}))
                    .await?;
                Ok(report(remote.json, &answer, &["purged"]))
            }
        }
    })
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// One line per entry: id, flow, kind, time, message.
fn print_list(entries: &Value) {
    let entries = entries.as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        eprintln!("no dead letters");
        return;
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                text(&e["id"]),
                text(&e["flow"]),
                text(&e["kind"]),
                text(&e["time"]),
                text(&e["message"]).replace('\n', " "),
            ]
        })
        .collect();
    let header = ["ID", "FLOW", "KIND", "TIME", "ERROR"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
}

/// Prints the result of each entry; exit 1 unless every outcome is one of `good`.
fn report(as_json: bool, answer: &Value, good: &[&str]) -> ExitCode {
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    if as_json {
        print_json(answer);
    } else if results.is_empty() {
        eprintln!("no dead letters");
    }
    let mut ok = true;
    for result in &results {
        let outcome = result["outcome"].as_str().unwrap_or("error");
        let passed = good.contains(&outcome);
        ok &= passed;
        if as_json {
            continue;
        }
        let id = result["id"].as_str().unwrap_or("-");
        let flow = result["flow"].as_str().unwrap_or("-");
        match result["error"]["message"].as_str() {
            Some(error) if !passed => println!("{id}  {flow}  {outcome}: {error}"),
            _ => println!("{id}  {flow}  {outcome}"),
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The message after the user edited it in `$VISUAL` / `$EDITOR` (else `vi`).
fn edited(id: &str, message: &Value) -> anyhow::Result<Value> {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file = std::env::temp_dir().join(format!("sluice-dlq-{safe}-{}.json", std::process::id()));
    let text = serde_json::to_string_pretty(message).context("the message is not JSON")?;
    std::fs::write(&file, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_owned());
    // Through the shell, so that an editor given with its flags (`code --wait`) works.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .with_context(|| format!("cannot run the editor `{editor}`"))?;
    if !status.success() {
        bail!(
            "the editor `{editor}` failed ({status}); nothing was replayed (the message is in {})",
            file.display()
        );
    }
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let value = sluice_engine::parse_json(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "the edited message in {} is not usable: {e}; nothing was replayed",
            file.display()
        )
    })?;
    let _ = std::fs::remove_file(&file);
    Ok(value)
}
