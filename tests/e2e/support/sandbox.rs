//! The sandbox: a fresh temporary working directory per test, and reading what sluice wrote.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cli::{CliOutput, run_cli, run_cli_env};
use super::gate::{self, Pass};
use super::secs;

/// A fresh working directory with `flows/`, `schemas/` and `scripts/`, and the test's pass
/// through the gate (see [`super::gate`]), held for the sandbox's whole life.
pub struct Sandbox {
    // Field order matters for Drop: the directory goes before the pass is handed back.
    dir: tempfile::TempDir,
    _pass: Pass,
}

impl Sandbox {
    /// A sandbox that runs beside as many others as the gate lets in.
    pub fn new() -> Sandbox {
        Sandbox::with_pass(gate::enter())
    }

    /// A sandbox for a test that measures time or memory, or uses fixed ports: it runs while
    /// no other sandbox does.
    pub fn alone() -> Sandbox {
        Sandbox::with_pass(gate::alone())
    }

    fn with_pass(pass: Pass) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .tempdir()
            .expect("create temp dir");
        for sub in ["flows", "schemas", "scripts"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create sandbox folder");
        }
        Sandbox { dir, _pass: pass }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<sandbox>/<rel>`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file in place (truncate + write), creating parent folders.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent folder");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Writes a file atomically: a dotfile beside it, then a rename onto the final name.
    pub fn write_atomic(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        atomic_write(&path, contents.as_ref());
        path
    }

    /// Drops a JSON value into a folder (atomically) as `<dir>/<name>`.
    pub fn drop_json(&self, dir: &str, name: &str, value: &Value) -> PathBuf {
        self.write_atomic(&format!("{dir}/{name}"), serde_json::to_vec(value).unwrap())
    }

    pub fn remove(&self, rel: &str) {
        let path = self.path(rel);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Number of regular, non-dot files directly in `<sandbox>/<rel>` (0 when it is missing).
    pub fn count(&self, rel: &str) -> usize {
        count_files(&self.path(rel))
    }

    /// Names of the regular, non-dot files directly in `<sandbox>/<rel>`.
    pub fn names(&self, rel: &str) -> BTreeSet<String> {
        file_names(&self.path(rel))
    }

    pub fn read_json(&self, rel: &str) -> Value {
        read_json(&self.path(rel))
    }

    /// The JSON of the only file in folder `rel` (fails when there is not exactly one).
    pub fn only_json(&self, rel: &str) -> Value {
        let names = self.names(rel);
        assert_eq!(names.len(), 1, "one file in {rel}: {names:?}");
        let name = names.iter().next().expect("checked: one file");
        self.read_json(&format!("{rel}/{name}"))
    }

    /// Runs a short-lived CLI command (`check`, `test`, `exec`, `schema`, …) to completion, with
    /// an optional stdin, and captures its output. Bounded by 60 s.
    pub fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
        run_cli(self.root(), args, stdin, secs(60))
    }

    /// [`Sandbox::cli`] with extra environment variables.
    pub fn cli_env(&self, args: &[&str], envs: &[(&str, &str)]) -> CliOutput {
        run_cli_env(self.root(), args, envs, None, secs(60))
    }
}

pub fn atomic_write(path: &Path, contents: &[u8]) {
    let parent = path.parent().expect("file has a parent folder");
    fs::create_dir_all(parent).expect("create parent folder");
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = parent.join(format!(".{name}.writing"));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename onto {}: {e}", path.display()));
}

/// Regular files directly in `dir` whose name does not start with a dot.
pub fn file_names(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // A file may move away between read_dir and file_type; count what is there now.
        match entry.file_type() {
            Ok(t) if t.is_file() => {
                names.insert(name);
            }
            _ => {}
        }
    }
    names
}

/// Number of regular, non-dot files directly in `dir` (0 when it does not exist).
/// Copies a folder and everything in it (an example or the repository's sample folders into
/// a sandbox).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn count_files(dir: &Path) -> usize {
    file_names(dir).len()
}

pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} is not valid JSON ({e}): {}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// `<repo root>/<rel>` (the crate lives in crates/sluice).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

impl Sandbox {
    /// Copies `<repo>/<rel>` to `<sandbox>/<rel>`.
    pub fn copy_from_repo(&self, rel: &str) -> PathBuf {
        let from = repo_file(rel);
        let bytes = fs::read(&from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        self.write(rel, bytes)
    }
}

/// hold `body` as it arrived with a `trigger` error whose message contains `reason`; returned
/// for the connector's own checks.
pub fn undecodable_dead_letter(sb: &Sandbox, body: &str, reason: &str) -> Value {
    let dead = sb.only_json("dead-letter");
    assert_eq!(dead["message"], body, "the body as it arrived: {dead:#}");
    assert_eq!(dead["error"]["kind"], "trigger", "{dead:#}");
    assert!(
        dead["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(reason)),
        "{dead:#}"
    );
    dead
}
