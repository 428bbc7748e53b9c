//! Shared helpers for the end-to-end tests: they drive the real `sluice` binary as a child
//! process inside a fresh temporary working directory.
//!
//! Every wait is bounded and fails with the tail of the sluice log; every child process is
//! killed (SIGKILL, by PID) and reaped when its guard is dropped.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

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

    /// [`Sluice::start`] with extra environment variables.
    pub fn start_with_env(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Sluice {
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
        let child = Command::new(SLUICE)
            .args(args)
            .current_dir(sandbox.root())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
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

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
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
