//! Short-lived CLI commands (`check`, `test`, `exec`, …), run to completion with a deadline.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::logs::strip_ansi;
use super::{SLUICE, millis};

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
    run_cli_env(cwd, args, &[], stdin, timeout)
}

/// [`run_cli`] with extra environment variables for the command.
pub fn run_cli_env(
    cwd: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> CliOutput {
    let mut child = Command::new(SLUICE)
        .args(args)
        .envs(envs.iter().copied())
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
