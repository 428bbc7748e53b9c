//! `sluice tap`: the live tap of a running `sluice run`, read from its admin server's
//! server-sent events.

use super::remote::{Admin, block_on, encode};
use crate::cli::Remote;
use anyhow::Context;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

/// Prints the samples until the stream ends (`--limit`, the server stops) or Ctrl-C.
pub fn tap(
    remote: &Remote,
    flow: &str,
    step: Option<&str>,
    sample: u64,
    limit: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(remote, true)?;
    let mut path = format!("/api/flows/{}/tap?sample={sample}", encode(flow));
    if let Some(step) = step {
        path.push_str(&format!("&step={}", encode(step)));
    }
    if let Some(limit) = limit {
        path.push_str(&format!("&limit={limit}"));
    }
    let json = remote.json;
    block_on(async move {
        let mut response = admin.stream(&path).await?;
        eprintln!("tapping flow `{flow}` (Ctrl-C stops)");
        let mut buffer: Vec<u8> = Vec::new();
        let mut lost = 0;
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = response.chunk().await.context("the tap broke off")? {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                for line in text.lines() {
                    let Some(data) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    let Ok(sample) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    let now_lost = sample["lost"].as_u64().unwrap_or(0);
                    if now_lost > lost {
                        eprintln!(
                            "{} samples lost so far: this reader was slower than the flow",
                            now_lost
                        );
                        lost = now_lost;
                    }
                    let printed = if json {
                        writeln!(stdout, "{data}")
                    } else {
                        writeln!(stdout, "{}", text_line(&sample))
                    };
                    if printed.and_then(|()| stdout.flush()).is_err() {
                        // The reader went away (`| head`).
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `TIME MESSAGE_ID STEP PAYLOAD [error KIND: MESSAGE]`, then the metadata indented.
fn text_line(sample: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{} {} {}  {}",
        text(&sample["time"]),
        text(&sample["message_id"]),
        text(&sample["step"]),
        sample["payload"]
    );
    if let Some(kind) = sample["error"]["kind"].as_str() {
        line.push_str(&format!(
            "  error {kind}: {}",
            text(&sample["error"]["message"])
        ));
    }
    if let Some(meta) = sample["meta"].as_object() {
        let pairs: Vec<String> = meta
            .iter()
            .filter(|(k, _)| k.as_str() != "message_id" && k.as_str() != "flow")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        if !pairs.is_empty() {
            line.push_str(&format!("\n    {}", pairs.join(" ")));
        }
    }
    line
}
