//! The long-running `sluice run` process: start, signal, kill (by PID), wait on its log.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::logs::{has_flow, strip_ansi, tail};
use super::sandbox::{Sandbox, read_json};
use super::{SLUICE, millis, secs};

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

/// A port that was free a moment ago (bound to port 0, then released).
/// Resident memory of a process now (VmRSS), in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

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
