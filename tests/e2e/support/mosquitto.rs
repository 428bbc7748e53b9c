//! A private `mosquitto` on a free port, for tests that stop, restart or reconfigure the broker.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Where Debian installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether `/usr/sbin/mosquitto` is installed; otherwise prints why the test skips (or fails
/// under `SLUICE_REQUIRE_SERVICES=1`).
pub fn mosquitto_installed() -> bool {
    if Path::new(MOSQUITTO).is_file() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("test").to_owned();
    if services_required() {
        panic!("{test}: {MOSQUITTO} is not installed, and SLUICE_REQUIRE_SERVICES=1 requires it");
    }
    eprintln!(
        "SKIPPED {test}: {MOSQUITTO} is not installed (set SLUICE_REQUIRE_SERVICES=1 to make this a failure)"
    );
    false
}

/// A private mosquitto with persistence in its own folder. [`Mosquitto::stop`] sends SIGTERM
/// (mosquitto saves its database on exit); dropping it sends SIGKILL by PID and reaps it.
pub struct Mosquitto {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts one on a free port, with its database and log in `dir`.
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "")
    }

    /// Like [`Mosquitto::start`], with `listener_options` (lines such as `certfile …`) added
    /// to its listener.
    pub fn start_with(dir: &Path, listener_options: &str) -> Mosquitto {
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\n{listener_options}allow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 100000\nmax_inflight_messages 100\n",
            dir.display()
        );
        // Started as root, mosquitto would switch to the `mosquitto` user, which cannot write
        // into the private folder.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            port,
            conf: conf_path,
            log: dir.join("mosquitto.log"),
            child: None,
        };
        broker.restart();
        broker
    }

    /// Starts mosquitto (again, on the same port) and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {MOSQUITTO}: {e}"));
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = wait_until(secs(20), || {
            std::net::TcpStream::connect_timeout(&addr, millis(200)).is_ok()
        });
        assert!(
            up,
            "mosquitto did not listen on port {} within 20 s:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// SIGTERM by PID, then waits (bounded) for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(millis(20)),
                _ => {
                    unsafe {
                        libc::kill(child.id() as i32, libc::SIGKILL);
                    }
                    let _ = child.wait();
                    panic!(
                        "mosquitto did not exit within 20 s of SIGTERM:\n{}",
                        self.log_text()
                    );
                }
            }
        }
    }

    pub fn log_text(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}
