//! Shared helpers for the end-to-end tests: they drive the real `sluice` binary as a child
//! process inside a fresh temporary working directory.
//!
//! Every wait is bounded and fails with the tail of the sluice log; every child process is
//! killed (SIGKILL, by PID) and reaped when its guard is dropped.

pub mod certs;
pub mod cli;
pub mod flows;
pub mod gate;
pub mod http;
pub mod kafka;
pub mod logs;
pub mod mariadb;
pub mod metrics;
pub mod mosquitto;
pub mod mqtt;
pub mod process;
pub mod raw_http;
pub mod sandbox;
pub mod services;
pub mod sftp;
pub mod signing;
pub mod test_server;
pub mod tls_servers;

pub use flows::*;
pub use http::*;
pub use kafka::*;
pub use logs::*;
pub use metrics::*;
pub use process::*;
pub use raw_http::*;
pub use sandbox::*;
pub use services::*;
pub use signing::*;
pub use test_server::*;

use std::thread;
use std::time::{Duration, Instant};

// A re-export for the test modules, which build JSON with it.
pub use serde_json::json;

/// The binary under test.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
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
