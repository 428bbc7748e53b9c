//! `sluice exec`: one input through a flow as a dry run, with the metadata, mocks and
//! trace its options ask for.

use super::{block_on, engine_folders, flows_called_from, format_name, out, resolve_flow};
use crate::cli::{ExecOptions, Folders};
use anyhow::{Context, bail};
use sluice_connectors::StandardConnectors;
use sluice_engine::testing::dry_run_probed;
use sluice_engine::{CompiledFlow, InputFormat, Meta, build_flow};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) fn exec(
    folders: &Folders,
    flow_arg: &str,
    input: &Path,
    options: ExecOptions,
) -> anyhow::Result<ExitCode> {
    let flow_path = resolve_flow(folders, flow_arg)?;
    let flow = match block_on(build_flow(
        &flow_path,
        &engine_folders(folders),
        &StandardConnectors::default(),
        false,
    )) {
        Ok(flow) => flow,
        Err(diagnostics) => {
            for d in diagnostics {
                eprint!("{}", d.render());
            }
            return Ok(ExitCode::from(1));
        }
    };
    if !flow.calls.is_empty() {
        // The flows it `call`s come from the flows folder, as under `sluice run`.
        for other in flows_called_from(folders, std::slice::from_ref(&flow)) {
            let name = other.name.clone();
            sluice_engine::directory::register(
                &name,
                Arc::new(arc_swap::ArcSwap::from_pointee(other)),
            );
        }
    }
    let mocks = match &options.mocks {
        Some(file) => read_mocks(file, &flow)?,
        None => Default::default(),
    };
    let extra = exec_meta(&flow_path, &options)?;
    let (bytes, name) = if input == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the input from stdin")?;
        (bytes, "stdin".to_owned())
    } else {
        let bytes = std::fs::read(input)
            .with_context(|| format!("cannot read the input file `{}`", input.display()))?;
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (bytes, name)
    };
    // Inputs are read as the trigger reads its bodies (a file trigger's format and CSV
    // options; one JSON document for the others).
    let input_format: InputFormat = flow.trigger_info.input.clone();
    let format = input_format.format;
    let records = match sluice_connectors::file::decode_input(&bytes, &input_format) {
        Ok(records) => records,
        Err(reason) => {
            eprintln!(
                "error: the input `{}` cannot be read as {}: {reason}",
                input.display(),
                format_name(format)
            );
            return Ok(ExitCode::from(1));
        }
    };
    let mut results = Vec::new();
    for (payload, line) in records {
        let mut meta = Meta::new();
        meta.insert("file.name".to_owned(), name.clone());
        meta.insert("file.path".to_owned(), input.display().to_string());
        meta.insert("file.size".to_owned(), bytes.len().to_string());
        if let Some(line) = line {
            meta.insert("file.line".to_owned(), line.to_string());
        }
        meta.extend(extra.iter().cloned());
        let probe =
            sluice_engine::probe::Probe::new(mocks.clone(), options.trace, options.live, false);
        results.push(block_on(dry_run_probed(&flow, payload, meta, probe)));
    }
    let failed = results.iter().any(|r| r.outcome == "error");
    let text = if results.len() == 1 {
        serde_json::to_string_pretty(&results[0])
    } else {
        serde_json::to_string_pretty(&results)
    }
    .context("cannot print the result")?;
    out(&text);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The metadata `--meta-file`, `--http-path` and `--meta` give (in that order, later
/// entries winning).
fn exec_meta(flow_path: &Path, options: &ExecOptions) -> anyhow::Result<Vec<(String, String)>> {
    let mut meta = Vec::new();
    if let Some(file) = &options.meta_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the metadata file `{}`", file.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "the metadata file `{}` is not JSON; write an object such as {{\"mqtt.topic\": \"sensors/s-1\"}}",
                file.display()
            )
        })?;
        let serde_json::Value::Object(entries) = value else {
            bail!(
                "the metadata file `{}` must hold a JSON object of keys and values, e.g. {{\"mqtt.topic\": \"sensors/s-1\"}}",
                file.display()
            );
        };
        for (key, value) in entries {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            meta.push((key, text));
        }
    }
    if let Some(target) = &options.http_path {
        let loaded = sluice_flow::load_flow_file(flow_path).map_err(|d| anyhow::anyhow!("{d}"))?;
        let sluice_flow::TriggerConfig::Http(http) = &loaded.file.trigger.value else {
            bail!(
                "--http-path is for flows with an `http` trigger; `{}` has another trigger (give its metadata with --meta key=value)",
                flow_path.display()
            );
        };
        let entries = sluice_connectors::http::simulated_meta(http, target).map_err(|e| {
            anyhow::anyhow!("--http-path {target}: {e}; give a path the route matches")
        })?;
        meta.extend(entries);
    }
    meta.extend(options.meta.iter().cloned());
    Ok(meta)
}

/// `--mocks FILE`: a map of sink or step names to mocks, as in a test case's `mocks:`.
fn read_mocks(
    file: &Path,
    flow: &CompiledFlow,
) -> anyhow::Result<std::collections::BTreeMap<String, sluice_engine::probe::Mock>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the mocks file `{}`", file.display()))?;
    let configs: std::collections::BTreeMap<String, sluice_flow::MockConfig> =
        sluice_flow::load::parse_mocks(&text).map_err(|e| {
            anyhow::anyhow!(
                "the mocks file `{}` is not a map of mocks ({e}); write e.g. `price-lookup: {{ body: {{price: 9.5}}, status: 200 }}`",
                file.display()
            )
        })?;
    let mut mocks = std::collections::BTreeMap::new();
    let mockable: Vec<&str> = flow
        .step_list
        .iter()
        .filter(|s| matches!(s.kind, "enrich" | "call"))
        .map(|s| s.key())
        .chain(flow.sinks.keys().map(String::as_str))
        .collect();
    for (key, config) in configs {
        if !key.contains('/') && !mockable.contains(&key.as_str()) {
            bail!(
                "the mocks file `{}` names `{key}`, which is no sink and no `enrich` or `call` step of flow `{}`; what can be mocked: {}",
                file.display(),
                flow.name,
                mockable.join(", ")
            );
        }
        let error = match &config.error {
            Some(kind) => Some(sluice_engine::ErrorKind::parse(kind.value.as_str()).ok_or_else(|| {
                anyhow::anyhow!(
                    "the mocks file `{}`: `{key}` has the unknown error kind `{}`; expected one of contract, transform, script, sink, timeout, trigger, throttle",
                    file.display(),
                    kind.value
                )
            })?),
            None => None,
        };
        mocks.insert(
            key,
            sluice_engine::probe::Mock {
                body: config.body,
                status: config.status,
                delay: config.delay.map(|d| d.0),
                error,
            },
        );
    }
    Ok(mocks)
}
