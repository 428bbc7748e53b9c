//! External services (brokers, databases): skip or fail when absent, unique names, private
//! servers a test can kill and restart, `psql`.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use super::{millis, secs, wait_until};

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

/// Prints why the calling test skips and returns `false`, or panics under
/// `SLUICE_REQUIRE_SERVICES=1`.
pub fn skip_or_fail(why: &str) -> bool {
    let test = thread::current().name().unwrap_or("test").to_owned();
    if services_required() {
        panic!("{test}: {why}, and SLUICE_REQUIRE_SERVICES=1 requires it");
    }
    eprintln!("SKIPPED {test}: {why} (set SLUICE_REQUIRE_SERVICES=1 to make this a failure)");
    false
}

/// A name no other test run uses: `<prefix>_<pid>_<time>`, letters, digits and `_` only, so
/// it is valid as a stream, queue, key, table or subject token everywhere. The time part
/// only goes up within the process, so tests on parallel threads never get the same one.
pub fn unique_name(prefix: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0) as u64;
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(nanos.max(last + 1))
        })
        .expect("the update always gives a value");
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos.max(previous + 1)
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
