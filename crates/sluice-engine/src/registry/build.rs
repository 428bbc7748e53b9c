//! Building one flow file into a version that can run, and finding the flow files.

use crate::compile::{Folders, compile};
use crate::connector::Connectors;
use crate::flow::CompiledFlow;
use crate::testing::run_test;
use sluice_flow::{Diagnostic, LoadedFlow, load_flow_file};
use std::path::{Path, PathBuf};

/// Parses, compiles and (optionally) tests one flow file.
pub async fn build_flow(
    path: &Path,
    folders: &Folders,
    connectors: &dyn Connectors,
    run_tests: bool,
) -> Result<CompiledFlow, Vec<Diagnostic>> {
    let loaded = load_flow_file(path).map_err(|d| vec![d])?;
    build_loaded(&loaded, folders, connectors, run_tests).await
}

pub(super) async fn build_loaded(
    loaded: &LoadedFlow,
    folders: &Folders,
    connectors: &dyn Connectors,
    run_tests: bool,
) -> Result<CompiledFlow, Vec<Diagnostic>> {
    let compiled = compile(loaded, folders, connectors)?;
    if run_tests {
        let mut failures = Vec::new();
        for test in &compiled.tests {
            if let Err(reason) = run_test(&compiled, test).await {
                failures.push(
                    loaded
                        .diagnostic(test.span, format!("test `{}` failed: {reason}", test.name))
                        .with_help("fix the flow or the test case"),
                );
            }
        }
        if !failures.is_empty() {
            return Err(failures);
        }
    }
    Ok(compiled)
}

/// Is `path` a flow file (`*.yaml` / `*.yml`, not hidden)?
pub fn is_flow_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        )
}

/// Every flow file in a folder, sorted by name.
pub fn flow_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_flow_file(p))
        .collect();
    files.sort();
    Ok(files)
}
