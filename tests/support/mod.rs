//! Shared helpers for the end-to-end tests: they drive the real `sluice` binary as a child
//! process inside a fresh temporary working directory.
//!
//! Every wait is bounded and fails with the tail of the sluice log; every child process is
//! killed (SIGKILL, by PID) and reaped when its guard is dropped.

#![allow(dead_code)]

pub mod mosquitto;
pub mod mqtt;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)] // a re-export for the test files; not every one builds JSON
pub use serde_json::json;

/// The binary under test.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Tests inside one test binary run on parallel threads. The sluice processes would then compete
/// for the admin port and for the two cores of the machine, so every sandbox holds this lock for
/// its whole life: tests of one file run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Sandbox
// ---------------------------------------------------------------------------------------------

/// A fresh working directory with `flows/`, `schemas/` and `scripts/`.
pub struct Sandbox {
    // Field order matters for Drop: the directory goes before the lock is released.
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .tempdir()
            .expect("create temp dir");
        for sub in ["flows", "schemas", "scripts"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create sandbox folder");
        }
        Sandbox {
            dir,
            _serial: serial,
        }
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

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Log parsing
// ---------------------------------------------------------------------------------------------

/// Removes ANSI escape sequences (colours), in case the logger emits them into a file.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether `line` carries the field `key=value` exactly (quoted or not), not as a prefix of a
/// longer value: `flow=hr` does not match `flow=hr2`.
pub fn has_field(line: &str, key: &str, value: &str) -> bool {
    for needle in [format!("{key}={value}"), format!("{key}=\"{value}\"")] {
        let mut start = 0;
        while let Some(i) = line[start..].find(&needle) {
            let at = start + i;
            let before_ok = at == 0 || {
                let b = line.as_bytes()[at - 1];
                !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            };
            let end = at + needle.len();
            let after_ok = end == line.len() || {
                let b = line.as_bytes()[end];
                !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            };
            if before_ok && after_ok {
                return true;
            }
            start = at + 1;
        }
    }
    false
}

pub fn has_flow(line: &str, flow: &str) -> bool {
    has_field(line, "flow", flow)
}

/// Lines of `log` containing `substr` with `flow=<flow>`.
pub fn lines_with(log: &str, substr: &str, flow: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(substr) && has_flow(l, flow))
        .count()
}

/// Fails unless exactly one line of `log` for `flow` contains `substr`.
pub fn assert_logged_once(log: &str, substr: &str, flow: &str) {
    assert_eq!(
        lines_with(log, substr, flow),
        1,
        "`{substr}` logged once for flow={flow}:\n{}",
        tail(log, 30)
    );
}

/// The one dead letter in `sb`'s `dead-letter/` of a body that could not be decoded, checked to
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

/// Every `<file>:<line>:<col>` position named in `text` for a file whose path ends with `file`
/// (e.g. `flows/hr.yaml`).
pub fn positions(text: &str, file: &str) -> Vec<(u32, u32)> {
    let needle = format!("{file}:");
    let mut found = Vec::new();
    let mut start = 0;
    while let Some(i) = text[start..].find(&needle) {
        let rest = &text[start + i + needle.len()..];
        if let Some(pos) = parse_line_col(rest) {
            found.push(pos);
        }
        start += i + 1;
    }
    found
}

fn parse_line_col(s: &str) -> Option<(u32, u32)> {
    let line_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if line_len == 0 || s.as_bytes().get(line_len) != Some(&b':') {
        return None;
    }
    let rest = &s[line_len + 1..];
    let col_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if col_len == 0 {
        return None;
    }
    Some((s[..line_len].parse().ok()?, rest[..col_len].parse().ok()?))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The long-running `sluice run` process
// ---------------------------------------------------------------------------------------------

/// A running sluice process. Dropping it sends SIGKILL and reaps it.
pub struct Sluice {
    child: Option<Child>,
    pid: i32,
    log: PathBuf,
    /// Offset in the (shared, appended) log file where this process's output starts.
    log_start: u64,
    status: Option<ExitStatus>,
}

impl Sluice {
    /// Starts `sluice <args>` in the sandbox; stderr (the log) is appended to
    /// `<sandbox>/sluice.log`, stdout to `<sandbox>/sluice.stdout`.
    pub fn start(sandbox: &Sandbox, args: &[&str]) -> Sluice {
        Sluice::start_with_env(sandbox, args, &[])
    }

    /// Like [`Sluice::start`], with extra environment variables.
    pub fn start_with_env(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Sluice {
        Sluice::start_configured(sandbox, args, env, |_| {})
    }

    /// Like [`Sluice::start_with_env`], with a last say on the command before it is spawned
    /// (e.g. `CommandExt::uid` to run it as another user).
    pub fn start_configured(
        sandbox: &Sandbox,
        args: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Sluice {
        let log = sandbox.path("sluice.log");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open sluice.log");
        let log_start = stderr.metadata().map(|m| m.len()).unwrap_or(0);
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.path("sluice.stdout"))
            .expect("open sluice.stdout");
        let mut command = Command::new(SLUICE);
        command
            .args(args)
            .current_dir(sandbox.root())
            // The operator's own settings must not leak into a test's sluice.
            .env_remove("RUST_LOG")
            .env_remove("SLUICE_LISTEN")
            .env_remove("SLUICE_ADMIN")
            .env_remove("SLUICE_ADMIN_TOKEN")
            .env_remove("SLUICE_ADMIN_HOSTS")
            .env_remove("SLUICE_LOG_FORMAT")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        configure(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SLUICE}: {e}"));
        let pid = child.id() as i32;
        Sluice {
            child: Some(child),
            pid,
            log,
            log_start,
            status: None,
        }
    }

    /// `sluice run` with the default folders.
    pub fn run(sandbox: &Sandbox) -> Sluice {
        Sluice::start(sandbox, &["run"])
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGKILL by PID, then reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.status.is_none() {
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop) and waits up to `timeout` for the exit; returns its
    /// status. Panics with the log tail when the process does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if self.is_running() {
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                panic!(
                    "sluice did not exit within {timeout:?} after SIGTERM\n--- log tail ---\n{}",
                    self.log_tail(40)
                );
            }
            thread::sleep(millis(20));
        }
        self.status.expect("an exited process has a status")
    }

    /// Whether the process is still alive (records its exit status otherwise).
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.status = Some(status);
                false
            }
            _ => false,
        }
    }

    /// Panics (with the log tail) unless the process is still running.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "sluice exited unexpectedly ({:?})\n--- log tail ---\n{}",
                self.status,
                self.log_tail(60)
            );
        }
    }

    /// The whole log written by this process so far (ANSI colours removed).
    pub fn log(&self) -> String {
        self.log_since(self.log_start)
    }

    /// The log text after an absolute offset returned by [`Sluice::mark`].
    pub fn log_since(&self, offset: u64) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&self.log) {
            use std::io::{Seek, SeekFrom};
            let _ = f.seek(SeekFrom::Start(offset));
            let _ = f.read_to_end(&mut bytes);
        }
        strip_ansi(&String::from_utf8_lossy(&bytes))
    }

    /// The current end of the log, to look only at what comes after.
    pub fn mark(&self) -> u64 {
        fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// Complete log lines (ending in a newline) written after `offset`.
    fn lines_since(&self, offset: u64) -> Vec<String> {
        let text = self.log_since(offset);
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => "",
        };
        complete.lines().map(str::to_owned).collect()
    }

    /// Waits for a log line written after `offset` that satisfies `pred`; returns it.
    pub fn wait_for_line_since(
        &mut self,
        offset: u64,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines_since(offset).into_iter().find(|l| pred(l)) {
                return line;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for a log line: {what}\n--- log tail ---\n{}",
                    self.log_tail(60)
                );
            }
            if !self.is_running() {
                // One more look: the line may have been written just before exiting.
                if let Some(line) = self.lines_since(offset).into_iter().find(|l| pred(l)) {
                    return line;
                }
                panic!(
                    "sluice exited ({:?}) while waiting for a log line: {what}\n--- log tail ---\n{}",
                    self.status,
                    self.log_tail(60)
                );
            }
            thread::sleep(millis(25));
        }
    }

    /// Waits for a line (of this process) that satisfies `pred`.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = self.log_start;
        self.wait_for_line_since(start, what, timeout, pred)
    }

    /// Waits for a line (of this process) containing `substr`.
    pub fn wait_for_log(&mut self, substr: &str, timeout: Duration) -> String {
        self.wait_for_line(&format!("{substr:?}"), timeout, |l| l.contains(substr))
    }

    /// Waits for `flow ready` with `flow=<name>`.
    pub fn wait_ready(&mut self, flow: &str) -> String {
        self.wait_for_line(&format!("`flow ready` for flow={flow}"), secs(30), |l| {
            l.contains("flow ready") && has_flow(l, flow)
        })
    }

    /// Waits until `cond` holds; panics with `what` and the log tail otherwise, or when the
    /// process dies meanwhile.
    pub fn expect_within(&mut self, timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting until {what}\n--- log tail ---\n{}",
                    self.log_tail(60)
                );
            }
            if !self.is_running() {
                if cond() {
                    return;
                }
                panic!(
                    "sluice exited ({:?}) while waiting until {what}\n--- log tail ---\n{}",
                    self.status,
                    self.log_tail(60)
                );
            }
            thread::sleep(millis(20));
        }
    }

    /// Waits for `<sandbox-relative file>` to exist and returns its JSON.
    pub fn wait_json(&mut self, sandbox: &Sandbox, rel: &str, timeout: Duration) -> Value {
        let path = sandbox.path(rel);
        self.expect_within(timeout, &format!("{rel} exists"), || path.exists());
        read_json(&path)
    }

    /// Peak resident set size (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Short-lived CLI commands
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn stdout_json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON value ({e}):\n{}\n--- stderr ---\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Both streams, for messages.
    pub fn all(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Kills a child by PID when dropped (used while a CLI command runs).
struct KillOnDrop(i32, bool);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.1 {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
}

pub fn run_cli(cwd: &Path, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CliOutput {
    let mut child = Command::new(SLUICE)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {SLUICE}: {e}"));
    let mut guard = KillOnDrop(child.id() as i32, false);

    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
            // The pipe closes here: EOF for the child.
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                drop(guard);
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
                panic!(
                    "`sluice {}` did not finish within {timeout:?}\n--- stderr ---\n{stderr}",
                    args.join(" ")
                );
            }
            None => thread::sleep(millis(10)),
        }
    };
    guard.1 = true;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = strip_ansi(&String::from_utf8_lossy(&err_reader.join().unwrap()));
    CliOutput {
        code: status.code(),
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers for flows
// ---------------------------------------------------------------------------------------------

/// The file-trigger options used by tests that want quick pick-up (the defaults favour safety:
/// 500 ms minimum age, three looks 200 ms apart).
pub const FAST_TRIGGER: &str =
    "min_age: 100ms\n    check_interval: 50ms\n    stable_checks: 2\n    rescan_interval: 1s";

/// The 1-based line number of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not found in:\n{text}"))
}

/// The 1-based column of `needle` in the first line of `text` containing it.
pub fn col_of(text: &str, needle: &str) -> u32 {
    let line = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not found in:\n{text}"));
    line.find(needle).unwrap() as u32 + 1
}

// ---------------------------------------------------------------------------------------------
// External services (brokers, databases) and private servers
// ---------------------------------------------------------------------------------------------

/// Whether CI demands every service (`SLUICE_REQUIRE_SERVICES=1`): then a missing one fails
/// the test instead of skipping it.
pub fn services_required() -> bool {
    std::env::var("SLUICE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether `service` answers on `127.0.0.1:port`. When it does not, prints why the calling
/// test skips and returns `false`, or panics under `SLUICE_REQUIRE_SERVICES=1`.
pub fn service_available(service: &str, port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if std::net::TcpStream::connect_timeout(&addr, millis(500)).is_ok() {
        return true;
    }
    skip_or_fail(&format!("{service} is not reachable on 127.0.0.1:{port}"))
}

/// Whether the program `bin` is installed (on `PATH`); skips or fails like
/// [`service_available`] otherwise.
pub fn program_available(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()));
    found || skip_or_fail(&format!("`{bin}` is not installed"))
}

fn skip_or_fail(why: &str) -> bool {
    let test = thread::current().name().unwrap_or("test").to_owned();
    if services_required() {
        panic!("{test}: {why}, and SLUICE_REQUIRE_SERVICES=1 requires it");
    }
    eprintln!("SKIPPED {test}: {why} (set SLUICE_REQUIRE_SERVICES=1 to make this a failure)");
    false
}

/// A name no other test run uses: `<prefix>_<pid>_<time>`, letters, digits and `_` only, so
/// it is valid as a stream, queue, key, table or subject token everywhere.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A private server (`nats-server`, `redis-server`, …) started by a test. Dropping it sends
/// SIGKILL by PID and reaps it.
pub struct Server {
    program: String,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args…` and waits until it accepts connections on `port`.
    pub fn start(program: &str, args: &[String], port: u16) -> Server {
        let mut server = Server {
            program: program.to_owned(),
            args: args.to_vec(),
            port,
            child: None,
        };
        server.restart();
        server
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL by PID, then reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Starts the server again with the same arguments (after [`Server::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program));
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = wait_until(secs(20), || {
            std::net::TcpStream::connect_timeout(&addr, millis(200)).is_ok()
        });
        assert!(
            up,
            "{} did not listen on port {} within 20 s",
            self.program, self.port
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs SQL through `psql` against the test database (`postgres` user, database `test`,
/// 127.0.0.1:5432); returns the unaligned, tuples-only output. Panics on an SQL error.
pub fn psql(sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-tAq",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql failed: {}\n{sql}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The PostgreSQL URL the connector tests use.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether PostgreSQL and `psql` are there (skips or fails like [`service_available`]).
pub fn postgres_available() -> bool {
    service_available("PostgreSQL", 5432) && program_available("psql")
}

// =============================================================================================
// HTTP, admin and operations helpers (http_trigger, http_reload, http_sink, admin, shutdown)
// =============================================================================================

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// The listener and admin addresses a served sluice was started with.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Sluice {
    /// `sluice run --listen 127.0.0.1:<free> --admin 127.0.0.1:<free> <extra>` with `envs`;
    /// waits for the `admin server on <addr>` line.
    pub fn serve(sandbox: &Sandbox, extra: &[&str], envs: &[(&str, &str)]) -> (Sluice, Ports) {
        let ports = Ports {
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        };
        let listen = ports.listen.to_string();
        let admin = ports.admin.to_string();
        let mut args = vec!["run", "--listen", &listen, "--admin", &admin];
        args.extend_from_slice(extra);
        let mut sluice = Sluice::start_with_env(sandbox, &args, envs);
        sluice.wait_admin(ports);
        (sluice, ports)
    }

    /// Waits for `admin server on <ports.admin>`.
    pub fn wait_admin(&mut self, ports: Ports) -> String {
        let admin = ports.admin.to_string();
        self.wait_for_line(&format!("`admin server on {admin}`"), secs(30), |l| {
            l.contains("admin server on") && l.contains(&admin)
        })
    }

    /// Waits for `http listener on <ports.listen>`.
    pub fn wait_listener(&mut self, ports: Ports) -> String {
        let listen = ports.listen.to_string();
        self.wait_for_line(&format!("`http listener on {listen}`"), secs(30), |l| {
            l.contains("http listener on") && l.contains(&listen)
        })
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) by PID, unless the process was already reaped.
    pub fn signal(&mut self, sig: i32) {
        if self.is_running() {
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    /// Waits (bounded) for the process to exit and returns its status; `None` when it is still
    /// running after `timeout` (the caller decides; the guard kills it on drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(millis(10));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client over std::net::TcpStream (one request per connection)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the response) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {} {}",
                self.status,
                self.text()
            )
        })
    }
}

impl std::fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            write!(f, "\n{k}: {v}")?;
        }
        write!(f, "\n\n{}", self.text())
    }
}

/// The raw bytes of a request: `Host`, `Connection: close`, the headers given, and
/// `Content-Length` when there is a body (unless the caller set one).
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let (Some(body), false) = (body, has_length) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Tries to parse a complete response from `buf`. `Ok(None)`: more bytes are needed (`eof`
/// false) — with `eof` true an incomplete response is an error.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<HttpResponse>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if eof {
            Err(format!(
                "connection closed before a complete response head ({} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(buf)
            ))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let rest = &buf[head_end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if (100..200).contains(&status) {
        // An interim response (100 Continue): skip it and parse what follows.
        return match parse_response(rest, eof)? {
            Some(r) => Ok(Some(r)),
            None => Ok(None),
        };
    } else if status == 204 || status == 304 {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        match decode_chunked(rest)? {
            Some(body) => body,
            None if eof => return Err("connection closed inside a chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        if rest.len() < len {
            return if eof {
                Err(format!(
                    "connection closed after {} of {len} body bytes",
                    rest.len()
                ))
            } else {
                Ok(None)
            };
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(HttpResponse {
        status,
        headers,
        body,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `Ok(None)` when incomplete.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            return Ok(find(data, b"\r\n").map(|_| body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Writes `bytes` on a fresh connection and reads one response, bounded by `timeout`.
/// Errors (refused, reset, closed early, timeout) are returned as text.
pub fn try_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, secs(5)).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    read_response(&mut stream, timeout)
}

/// Reads one response from `stream`, bounded by `timeout`.
pub fn read_response(stream: &mut TcpStream, timeout: Duration) -> Result<HttpResponse, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete response within {timeout:?} ({} bytes so far: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(300)])
            ));
        }
        stream
            .set_read_timeout(Some(left.max(millis(1))))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true).map(|r| r.expect("complete at eof"));
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse_response(&buf, false)? {
                    return Ok(r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => {
                // A reset after a complete response still counts as that response.
                if let Ok(Some(r)) = parse_response(&buf, false) {
                    return Ok(r);
                }
                return Err(format!("read: {e} (after {} bytes)", buf.len()));
            }
        }
    }
}

/// One request (see [`request_bytes`]); errors as text. Bounded by 30 s.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    try_exchange(
        addr,
        &request_bytes(addr, method, path, headers, body),
        secs(30),
    )
}

/// One request; panics on a transport error.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], None)
}

/// POSTs `value` as `application/json` with extra headers.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    value: &Value,
) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http(
        addr,
        "POST",
        path,
        &all,
        Some(&serde_json::to_vec(value).unwrap()),
    )
}

/// GET on the admin server with an optional bearer token.
pub fn admin_get(ports: Ports, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http(ports.admin, "GET", path, &headers, None)
}

/// `GET <admin>/api/flows/<name>` as JSON (panics unless 200).
pub fn admin_flow(ports: Ports, name: &str) -> Value {
    let r = admin_get(ports, &format!("/api/flows/{name}"), None);
    assert_eq!(r.status, 200, "GET /api/flows/{name}:\n{r}");
    r.json()
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// family name → type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: std::collections::BTreeMap<String, String>,
    pub helps: std::collections::BTreeMap<String, String>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_prom_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses the Prometheus text exposition format (0.0.4), strictly: every line is a comment,
/// `# HELP`, `# TYPE`, or a sample `name{label="value",…} value [timestamp]`; a family's
/// `# TYPE` comes at most once and before its samples.
pub fn parse_prometheus(text: &str) -> Result<Metrics, String> {
    let mut m = Metrics::default();
    let mut seen_samples: BTreeSet<String> = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("HELP ") {
                let (name, help) = r.split_once(' ').unwrap_or((r, ""));
                if !is_metric_name(name) {
                    return Err(format!("line {n}: bad metric name in HELP: {raw:?}"));
                }
                m.helps.insert(name.to_owned(), help.to_owned());
            } else if let Some(r) = rest.strip_prefix("TYPE ") {
                let (name, ty) = r
                    .split_once(' ')
                    .ok_or_else(|| format!("line {n}: TYPE without a type: {raw:?}"))?;
                if !is_metric_name(name) {
                    return Err(format!("line {n}: bad metric name in TYPE: {raw:?}"));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty.trim()) {
                    return Err(format!("line {n}: unknown type {ty:?}"));
                }
                if m.types
                    .insert(name.to_owned(), ty.trim().to_owned())
                    .is_some()
                {
                    return Err(format!("line {n}: second TYPE for {name}"));
                }
                if seen_samples.contains(name) {
                    return Err(format!("line {n}: TYPE for {name} after its samples"));
                }
            }
            continue;
        }
        // A sample.
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("line {n}: no value: {raw:?}"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if rest.starts_with('{') {
            let bytes = rest.as_bytes();
            let mut i = 1;
            loop {
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let key_start = i;
                while i < bytes.len() && bytes[i] != b'=' {
                    i += 1;
                }
                let key = rest[key_start..i].trim();
                if !is_label_name(key) || i + 1 >= bytes.len() || bytes[i + 1] != b'"' {
                    return Err(format!("line {n}: bad label near {:?}", &rest[key_start..]));
                }
                i += 2;
                let mut value = String::new();
                loop {
                    match bytes.get(i) {
                        None => return Err(format!("line {n}: unterminated label value")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match bytes.get(i + 1) {
                                Some(b'n') => value.push('\n'),
                                Some(b'\\') => value.push('\\'),
                                Some(b'"') => value.push('"'),
                                other => {
                                    return Err(format!("line {n}: bad escape {other:?}"));
                                }
                            }
                            i += 2;
                        }
                        Some(_) => {
                            let ch = rest[i..].chars().next().unwrap();
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                labels.push((key.to_owned(), value));
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(format!("line {n}: expected , or }} in labels: {raw:?}")),
                }
            }
            rest = &rest[i..];
        }
        let mut fields = rest.split_whitespace();
        let value_text = fields
            .next()
            .ok_or_else(|| format!("line {n}: no value: {raw:?}"))?;
        let value = parse_prom_value(value_text)
            .ok_or_else(|| format!("line {n}: bad value {value_text:?}"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing text: {raw:?}"));
        }
        let family = ["_bucket", "_sum", "_count", "_total", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| m.types.contains_key(*f)))
            .unwrap_or(name);
        seen_samples.insert(family.to_owned());
        seen_samples.insert(name.to_owned());
        m.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(m)
}

impl Metrics {
    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// The sum of the matching samples; `None` when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for s in self.matching(name, labels) {
            found = true;
            sum += s.value;
        }
        found.then_some(sum)
    }

    /// Like [`Metrics::value`], 0 when absent (counters that never moved may be missing).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

/// `GET <admin>/metrics`, checked for status 200 and parsed strictly.
pub fn scrape(ports: Ports) -> Metrics {
    scrape_with(ports, None)
}

pub fn scrape_with(ports: Ports, token: Option<&str>) -> Metrics {
    let r = admin_get(ports, "/metrics", token);
    assert_eq!(r.status, 200, "GET /metrics:\n{r}");
    parse_prometheus(&r.text())
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", r.text()))
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 test server (for http sinks and enrich): one thread per connection,
// every answer carries `Connection: close`.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the test server answers: status, extra headers, body (sent as JSON content type).
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: b"{}".to_vec(),
        }
    }

    pub fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: serde_json::to_vec(value).unwrap(),
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Answer {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

type Handler = dyn Fn(usize, &Recorded) -> Answer + Send + Sync + 'static;

pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on a free port; `handler(i, request)` answers the i-th (0-based) request.
    pub fn start(
        handler: impl Fn(usize, &Recorded) -> Answer + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let requests = requests.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let requests = requests.clone();
                            let handler = handler.clone();
                            thread::spawn(move || serve_connection(stream, requests, handler));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(millis(5))
                        }
                        Err(_) => thread::sleep(millis(5)),
                    }
                }
            })
        };
        TestServer {
            addr,
            requests,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve_connection(
    mut stream: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Handler>,
) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(secs(10))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, head) = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break (end, String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut rest = buf[head_end + 4..].to_vec();
    let body = loop {
        if chunked {
            match decode_chunked(&rest) {
                Ok(Some(body)) => break body,
                Ok(None) => {}
                Err(_) => return,
            }
        } else if rest.len() >= length {
            break rest[..length].to_vec();
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    };
    let recorded = Recorded {
        method,
        target,
        headers,
        body,
        at: Instant::now(),
    };
    let index = {
        let mut all = requests.lock().unwrap();
        all.push(recorded.clone());
        all.len() - 1
    };
    let answer = handler(index, &recorded);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status),
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer.body);
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    // Let the client read the answer before the socket goes away.
    let _ = stream.read(&mut chunk);
}

// ---------------------------------------------------------------------------------------------
// SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104), for signing webhook bodies in tests
// ---------------------------------------------------------------------------------------------

const SHA256_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for t in 0..16 {
            w[t] = u32::from_be_bytes([
                block[4 * t],
                block[4 * t + 1],
                block[4 * t + 2],
                block[4 * t + 3],
            ]);
        }
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16]
                .wrapping_add(s0)
                .wrapping_add(w[t - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for t in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(SHA256_K[t])
                .wrapping_add(w[t]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Vec::with_capacity(64 + data.len());
    inner.extend(k.iter().map(|b| b ^ 0x36));
    inner.extend_from_slice(data);
    let inner_hash = sha256(&inner);
    let mut outer = Vec::with_capacity(96);
    outer.extend(k.iter().map(|b| b ^ 0x5c));
    outer.extend_from_slice(&inner_hash);
    sha256(&outer)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
