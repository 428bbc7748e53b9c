//! Replays saved fuzz inputs through the fuzz targets' own checks (`fuzz/src/lib.rs`) on
//! stable Rust, without libFuzzer: every input in `fuzz/regressions/<target>/` (what the
//! fuzzer found, kept once fixed) and the seeds the fuzzer starts from (`fuzz/seeds/` and the
//! repository's flows, examples and schemas). Inputs in `fuzz/regressions/pending/` are
//! crashes whose fix is still to come; each has an ignored test below that names it.
//! Compiling this file also keeps the fuzz targets in step with the crates' APIs.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

use crate::support::gate;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files directly in `dir` (none when it does not exist), sorted for a stable order.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every file under `dir`, recursively, whose name ends in one of `extensions`.
fn files_under(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.is_dir() {
            files_under(&path, extensions, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e))
        {
            out.push(path);
        }
    }
}

/// Runs `check` on every regression input and seed of `target`, plus `extra` inputs; returns
/// how many inputs ran, so a test can insist that it ran some.
fn replay(target: &str, check: fn(&[u8]), extra: &[Vec<u8>]) -> usize {
    // The replays keep a core busy: they take their turn like a sluice test.
    let _pass = gate::enter();
    let root = root();
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in ["fuzz/regressions", "fuzz/seeds"] {
        for path in files_in(&root.join(dir).join(target)) {
            let bytes = std::fs::read(&path).expect("a saved input reads");
            inputs.push((path.display().to_string(), bytes));
        }
    }
    for (i, bytes) in extra.iter().enumerate() {
        inputs.push((format!("{target} repository seed {i}"), bytes.clone()));
    }
    for (name, bytes) in &inputs {
        let outcome = std::panic::catch_unwind(|| check(bytes));
        assert!(
            outcome.is_ok(),
            "{target}: the input {name} fails its check"
        );
    }
    inputs.len()
}

/// The repository's own files of these kinds, as fuzz seeds are made from them.
fn repository_files(extensions: &[&str]) -> Vec<Vec<u8>> {
    let root = root();
    let mut paths = Vec::new();
    for dir in ["flows", "examples", "schemas"] {
        files_under(&root.join(dir), extensions, &mut paths);
    }
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("a repository file reads"))
        .collect()
}

/// Each content behind each selector byte `0..count` (the format or option choice).
fn with_selectors(contents: &[Vec<u8>], count: u8) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for content in contents {
        for selector in 0..count {
            let mut input = vec![selector];
            input.extend_from_slice(content);
            out.push(input);
        }
    }
    out
}

#[test]
fn flow_loader_inputs_hold() {
    let flows = repository_files(&["yaml", "yml"]);
    assert!(!flows.is_empty(), "the repository has flows to start from");
    assert!(replay("flow_load", checks::flow_load, &flows) > flows.len());
}

#[test]
fn payload_decoder_inputs_hold() {
    let contents = repository_files(&["json", "ndjson", "csv", "rhai", "xml"]);
    let seeds = with_selectors(&contents, 10);
    assert!(replay("payload_decode", checks::payload_decode, &seeds) >= seeds.len());
}

#[test]
fn template_inputs_hold() {
    assert!(replay("template", checks::template, &[]) > 0);
}

#[test]
fn csv_row_inputs_hold() {
    let contents = repository_files(&["csv"]);
    let seeds = with_selectors(&contents, 14);
    assert!(replay("csv_rows", checks::csv_rows, &seeds) >= seeds.len());
}

#[test]
fn xml_document_inputs_hold() {
    let documents = repository_files(&["xml"]);
    assert!(replay("xml_document", checks::xml_document, &documents) >= 3);
}

#[test]
fn http_request_inputs_hold() {
    assert!(replay("http_request", checks::http_request, &[]) > 0);
}

/// Replays one input that still fails, from `fuzz/regressions/pending/<target>/<name>`.
fn pending(target: &str, name: &str, check: fn(&[u8])) {
    let _pass = gate::enter();
    let path = root()
        .join("fuzz/regressions/pending")
        .join(target)
        .join(name);
    let bytes = std::fs::read(&path).expect("the pending input exists");
    check(&bytes);
}

// Findings whose fix belongs to another change of issue 9 (item 1: one parse decides).

#[test]
fn body_with_a_number_out_of_range_is_refused_or_kept() {
    pending(
        "payload_decode",
        "body-number-out-of-range",
        checks::payload_decode,
    );
}

#[test]
fn body_nested_deeper_than_the_parser_is_refused_or_kept() {
    pending("payload_decode", "body-nested-200", checks::payload_decode);
}

#[test]
fn body_with_invalid_utf8_in_a_string_is_refused_or_kept() {
    pending(
        "payload_decode",
        "body-invalid-utf8-in-string",
        checks::payload_decode,
    );
}

#[test]
fn http_body_with_a_number_out_of_range_is_a_400() {
    pending("http_request", "number-out-of-range", checks::http_request);
}

#[test]
fn http_cookie_is_not_copied_into_the_metadata() {
    pending("http_request", "cookie-in-meta", checks::http_request);
}
