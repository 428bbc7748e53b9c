//! The subcommands: `run`, `check`, `test`, `exec`, `schema`.

use crate::cli::{Cli, Command, Folders};

mod dlq;
mod exec;
mod graph;
mod remote;
mod tap;
use anyhow::{Context, bail};
use exec::exec;
use sluice_connectors::StandardConnectors;
use sluice_engine::CompiledFlow;
use sluice_engine::testing::run_test;
use sluice_engine::{Registry, RegistryOptions, build_flow, duplicate_name, flow_files};
use sluice_flow::FileFormat;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long `sluice run` waits at start-up for flow, schema and script files that are still
/// being written (docs/http-and-operations.md, "Hot reload").
const START_SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Runs a command and returns its exit code (0 ok, 1 invalid flow or input).
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            folders,
            shutdown_grace,
            listen,
            http_max_connections,
            admin,
            admin_token,
            admin_hosts,
        } => run(RunOptions {
            folders,
            grace: shutdown_grace,
            listen,
            http_max_connections,
            admin,
            admin_token,
            admin_hosts,
        }),
        Command::Check { folders, files } => check(&folders, files),
        Command::Dlq { remote, what } => dlq::dlq(&remote, what),
        Command::Tap {
            remote,
            flow,
            step,
            sample,
            limit,
        } => tap::tap(&remote, &flow, step.as_deref(), sample, limit),
        Command::Graph { folders, format } => graph_command(&folders, format),
        Command::Test { folders, files } => test(&folders, files),
        Command::Exec {
            folders,
            flow,
            input,
            options,
        } => exec(&folders, &flow, &input, options),
        Command::New {
            what:
                crate::cli::New::Flow {
                    folders,
                    name,
                    trigger,
                },
        } => crate::scaffold::new_flow(&folders, &name, trigger),
        Command::Openapi {
            folders,
            files,
            servers,
        } => openapi(&folders, files, &servers),
        Command::Schema => {
            // Generated from the model; `schemas/sluice-flow.schema.json` is this output.
            out(sluice_flow::schema::flow_schema_text().trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn engine_folders(folders: &Folders) -> sluice_engine::Folders {
    sluice_engine::Folders {
        schemas: folders.schemas.clone(),
        scripts: folders.scripts.clone(),
    }
}

struct RunOptions {
    folders: Folders,
    grace: std::time::Duration,
    listen: String,
    http_max_connections: Option<usize>,
    admin: String,
    admin_token: Option<String>,
    admin_hosts: Vec<String>,
}

fn run(options: RunOptions) -> anyhow::Result<ExitCode> {
    // `sluice.yaml` in the working directory: where flow-to-flow channels live.
    let mut settings = sluice_flow::Settings::load(Path::new(".")).map_err(anyhow::Error::msg)?;
    let RunOptions {
        folders,
        grace,
        listen,
        http_max_connections,
        admin,
        admin_token,
        admin_hosts,
    } = options;
    if let Some(max) = http_max_connections {
        settings.http.max_connections = max;
    }
    let listen_url = format!("http://{listen}");
    if !folders.flows.is_dir() {
        bail!(
            "the flows folder `{}` does not exist; create it or pass --flows DIR",
            folders.flows.display()
        );
    }
    // Without an admin server nobody can read the metrics: then no recorder is installed and
    // every metric is a no-op, so they cost no memory at all.
    let metrics = (admin != "off")
        .then(crate::metrics_recorder::install)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::allocator::on_park)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let http = sluice_connectors::http::HttpHub::with_limits(listen, &settings.http);
        let registry = Registry::new(
            RegistryOptions {
                flows: folders.flows.clone(),
                folders: engine_folders(&folders),
                drain_timeout: grace,
            },
            Arc::new(StandardConnectors::new(http.clone()).with_settings(&settings)),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(crate::allocator::tick(stop.clone()));
        let admin_server = metrics.map(|metrics| {
            tokio::spawn(crate::metrics_recorder::upkeep(
                metrics.clone(),
                stop.clone(),
            ));
            tokio::spawn(crate::admin::serve(
                crate::admin::AdminOptions {
                    addr: admin,
                    token: admin_token,
                    hosts: admin_hosts,
                    server: listen_url,
                },
                registry.clone(),
                metrics,
                stop.clone(),
            ))
        });
        let watched = vec![
            folders.flows.clone(),
            folders.schemas.clone(),
            folders.scripts.clone(),
        ];
        // A flow file still being copied in must not load half-written (the watcher's gate,
        // applied to what changed just before the start).
        let changing = sluice_engine::settle_at_start(&watched, START_SETTLE_LIMIT).await;
        if !changing.is_empty() {
            let names: Vec<String> = changing.iter().map(|p| p.display().to_string()).collect();
            tracing::warn!(
                "still being written {} after the start, loaded as they are now (reloaded once they settle): {}",
                humantime::format_duration(START_SETTLE_LIMIT),
                names.join(", ")
            );
        }
        // Taken before the flows load, so that a save made while they load is not missed.
        let snapshot = sluice_engine::Snapshot::take(&watched);
        registry.start_all().await.with_context(|| {
            format!("cannot read the flows folder `{}`", folders.flows.display())
        })?;
        let running = registry.status().await.len();
        tracing::info!(
            flows = running,
            "sluice running; watching {}, {}, {}",
            folders.flows.display(),
            folders.schemas.display(),
            folders.scripts.display()
        );
        let watcher = tokio::spawn(sluice_engine::watch(
            registry.clone(),
            watched,
            snapshot,
            stop.clone(),
        ));
        shutdown_signal().await;
        tracing::info!(
            "stopping: no new messages; finishing those in flight (up to {})",
            humantime::format_duration(grace)
        );
        // HTTP first: requests already accepted are answered while the flows still run.
        http.stop_accepting();
        http.finish_in_flight(grace).await;
        registry.shutdown().await;
        stop.cancel();
        let _ = watcher.await;
        if let Some(admin_server) = admin_server {
            let _ = admin_server.await;
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The flow files a command works on: the arguments (files, or names of flows in the
/// flows folder), or every flow in the flows folder.
fn selected_files(folders: &Folders, files: Vec<String>) -> anyhow::Result<Vec<PathBuf>> {
    if !files.is_empty() {
        return files.iter().map(|f| resolve_flow(folders, f)).collect();
    }
    flow_files(&folders.flows).with_context(|| {
        format!(
            "cannot read the flows folder `{}`; pass flow files or --flows DIR",
            folders.flows.display()
        )
    })
}

/// A flow argument: an existing file, else the flow of that name (or file stem) in the
/// flows folder.
fn resolve_flow(folders: &Folders, arg: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(path.to_owned());
    }
    let files = flow_files(&folders.flows).unwrap_or_default();
    if let Some(file) = files
        .iter()
        .find(|f| f.file_stem().is_some_and(|stem| stem == arg))
    {
        return Ok(file.clone());
    }
    let mut names = Vec::new();
    for file in &files {
        if let Ok(loaded) = sluice_flow::load_flow_file(file) {
            if loaded.name == arg {
                return Ok(file.clone());
            }
            names.push(loaded.name);
        }
    }
    let mut help = if names.is_empty() {
        format!(
            "the flows folder `{}` has no flows",
            folders.flows.display()
        )
    } else {
        format!(
            "flows in `{}`: {}",
            folders.flows.display(),
            names.join(", ")
        )
    };
    if let Some(close) =
        sluice_flow::diagnostic::did_you_mean(arg, names.iter().map(String::as_str))
    {
        help = format!("did you mean `{close}`? {help}");
    }
    bail!(
        "`{arg}` is neither a flow file nor the name of a flow in `{}`; {help} (or pass --flows DIR)",
        folders.flows.display()
    )
}

/// The flows of the flows folder that are not among `checked`, built without their tests:
/// what `call`s of the checked flows resolve against. Their own mistakes are not reported
/// here (they are not being checked).
fn flows_called_from(folders: &Folders, checked: &[CompiledFlow]) -> Vec<CompiledFlow> {
    let mut others = Vec::new();
    if checked.iter().all(|f| f.calls.is_empty()) {
        return others;
    }
    let paths: Vec<PathBuf> = checked
        .iter()
        .map(|f| sluice_flow::paths::normalize(&f.path))
        .collect();
    for path in flow_files(&folders.flows).unwrap_or_default() {
        if paths.contains(&sluice_flow::paths::normalize(&path)) {
            continue;
        }
        if let Ok(flow) = block_on(build_flow(
            &path,
            &engine_folders(folders),
            &StandardConnectors::default(),
            false,
        )) && !checked.iter().any(|f| f.name == flow.name)
        {
            others.push(flow);
        }
    }
    others
}

/// Builds every file, reporting diagnostics and duplicate names; returns the valid flows.
fn build_all(folders: &Folders, files: &[PathBuf]) -> (Vec<CompiledFlow>, usize) {
    let mut flows: Vec<CompiledFlow> = Vec::new();
    let mut invalid = 0;
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        match block_on(build_flow(
            path,
            &engine_folders(folders),
            &StandardConnectors::default(),
            false,
        )) {
            Ok(flow) => {
                if let Some(first) = names.get(&flow.name) {
                    let d = duplicate_name(&flow.source, &flow.name, first);
                    eprint!("{}", d.render());
                    invalid += 1;
                    continue;
                }
                names.insert(flow.name.clone(), path.clone());
                flows.push(flow);
            }
            Err(diagnostics) => {
                invalid += 1;
                for d in diagnostics {
                    eprint!("{}", d.render());
                    eprintln!();
                }
            }
        }
    }
    (flows, invalid)
}

fn check(folders: &Folders, files: Vec<String>) -> anyhow::Result<ExitCode> {
    let files = selected_files(folders, files)?;
    let (flows, mut invalid) = build_all(folders, &files);
    let others = flows_called_from(folders, &flows);
    invalid += check_calls(&flows, &others);
    if invalid > 0 {
        eprintln!("error: {invalid} of {} flow files invalid", files.len());
        return Ok(ExitCode::from(1));
    }
    for flow in &flows {
        // Warnings do not fail the check: the flow runs as written.
        for warning in &flow.warnings {
            eprint!("{}", warning.render_warning());
            eprintln!();
        }
        eprintln!("ok {} ({})", flow.name, flow.path.display());
    }
    eprintln!("{} flow files checked, all valid", files.len());
    Ok(ExitCode::SUCCESS)
}

/// `sluice graph`: every flow of the flows folder; nothing while a flow does not parse.
fn graph_command(folders: &Folders, format: crate::cli::GraphFormat) -> anyhow::Result<ExitCode> {
    let files = selected_files(folders, Vec::new())?;
    let mut flows = Vec::new();
    let mut invalid = 0;
    for file in &files {
        match sluice_flow::load_flow_file(file) {
            Ok(flow) => flows.push(flow),
            Err(d) => {
                invalid += 1;
                eprint!("{}", d.render());
                eprintln!();
            }
        }
    }
    if invalid > 0 {
        eprintln!(
            "error: {invalid} of {} flow files invalid; no graph",
            files.len()
        );
        return Ok(ExitCode::from(1));
    }
    let graph = graph::graph(&flows);
    match format {
        crate::cli::GraphFormat::Mermaid => out(graph.mermaid().trim_end()),
        crate::cli::GraphFormat::Dot => out(graph.dot().trim_end()),
        crate::cli::GraphFormat::Json => {
            out(&serde_json::to_string_pretty(&graph.json()).unwrap_or_default())
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice openapi`: the document of every `http` flow; no document while a flow is invalid
/// (it would describe a set of flows that cannot run).
fn openapi(folders: &Folders, files: Vec<String>, servers: &[String]) -> anyhow::Result<ExitCode> {
    let files = selected_files(folders, files)?;
    let (flows, invalid) = build_all(folders, &files);
    if invalid > 0 {
        eprintln!(
            "error: {invalid} of {} flow files invalid; fix them (`sluice check`) to get the document",
            files.len()
        );
        return Ok(ExitCode::from(1));
    }
    let document = crate::openapi::document(&flows, servers);
    out(&serde_json::to_string_pretty(&document)?);
    Ok(ExitCode::SUCCESS)
}

fn test(folders: &Folders, files: Vec<String>) -> anyhow::Result<ExitCode> {
    let files = selected_files(folders, files)?;
    let (flows, mut invalid) = build_all(folders, &files);
    let others = flows_called_from(folders, &flows);
    invalid += check_calls(&flows, &others);
    // `call` steps find the flows they name in the directory, as under `sluice run`.
    let flows: Vec<Arc<CompiledFlow>> = flows.into_iter().map(Arc::new).collect();
    for flow in others {
        let name = flow.name.clone();
        sluice_engine::directory::register(&name, Arc::new(arc_swap::ArcSwap::from_pointee(flow)));
    }
    for flow in &flows {
        sluice_engine::directory::register(
            &flow.name,
            Arc::new(arc_swap::ArcSwap::new(flow.clone())),
        );
    }
    let (mut passed, mut failed) = (0, 0);
    for flow in &flows {
        if flow.tests.is_empty() {
            out(&format!("-- {}: no tests", flow.name));
        }
        for case in &flow.tests {
            match block_on(run_test(flow, case)) {
                Ok(()) => {
                    passed += 1;
                    out(&format!("ok {}: {}", flow.name, case.name));
                }
                Err(failure) => {
                    failed += 1;
                    let at = case
                        .span
                        .map(|s| format!(" ({}:{}:{})", flow.path.display(), s.line, s.column))
                        .unwrap_or_default();
                    out(&format!(
                        "FAIL {}: {}: {}{at}\n  trace:\n{}",
                        flow.name,
                        case.name,
                        failure.reason,
                        failure.trace.trim_end()
                    ));
                }
            }
        }
    }
    out(&format!(
        "test result: {passed} passed, {failed} failed{}",
        if invalid > 0 {
            format!(", {invalid} invalid flow files")
        } else {
            String::new()
        }
    ));
    Ok(if failed > 0 || invalid > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reports `call`s of flows that are neither among `flows` nor `others` (the rest of the
/// flows folder), and cycles of calls; returns the number of `flows` with such mistakes.
fn check_calls(flows: &[CompiledFlow], others: &[CompiledFlow]) -> usize {
    let all = || flows.iter().chain(others);
    let graph: std::collections::BTreeMap<String, Vec<String>> = all()
        .map(|f| {
            (
                f.name.clone(),
                f.calls.iter().map(|(n, _)| n.clone()).collect(),
            )
        })
        .collect();
    let mut invalid = 0;
    for flow in flows {
        let mut problems = Vec::new();
        for (callee, span) in &flow.calls {
            let forks = all().find(|f| &f.name == callee).and_then(|f| f.forks);
            if let Some(kind) = forks {
                problems.push((
                    *span,
                    format!("flow `{callee}` cannot be called: it has a `{kind}` step"),
                    "a call returns one result; split and aggregate belong in flows fed by a trigger".to_owned(),
                ));
            }
            if !graph.contains_key(callee) {
                let names: Vec<&str> = graph.keys().map(String::as_str).collect();
                let mut help = format!("flows checked: {}", names.join(", "));
                if let Some(close) =
                    sluice_flow::diagnostic::did_you_mean(callee, names.iter().copied())
                {
                    help = format!("did you mean `{close}`? {help}");
                }
                problems.push((*span, format!("`call` of undefined flow `{callee}`"), help));
            }
        }
        if let Some(cycle) = sluice_engine::directory::find_cycle(&flow.name, &graph) {
            let span = flow
                .calls
                .iter()
                .find(|(n, _)| cycle.get(1) == Some(n))
                .and_then(|(_, s)| *s);
            problems.push((
                span,
                format!("a cycle of calls: {}", cycle.join(" → ")),
                "a cycle of `call`s would never end; break it by calling a flow that does not call back".to_owned(),
            ));
        }
        if problems.is_empty() {
            continue;
        }
        invalid += 1;
        // Quoted from the text the flow was built from, not from the file as it is now.
        for (span, message, help) in problems {
            eprint!(
                "{}",
                flow.source
                    .diagnostic(span, message)
                    .with_help(help)
                    .render()
            );
            eprintln!();
        }
    }
    invalid
}

fn format_name(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Json => "json",
        FileFormat::Ndjson => "ndjson",
        FileFormat::Csv => "csv",
        FileFormat::Text => "text",
        FileFormat::Bytes => "bytes",
        FileFormat::Xml => "xml",
    }
}

/// Prints a line on stdout; a closed pipe (`sluice schema | head`) ends the program quietly.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Runs a future to completion on a small runtime: `check`, `test` and `exec` are one-shot
/// commands, but steps such as `enrich` do asynchronous I/O.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok();
    }
    RUNTIME.with(|runtime| match runtime {
        Some(runtime) => runtime.block_on(future),
        None => {
            eprintln!("error: cannot start the async runtime");
            std::process::exit(1);
        }
    })
}
