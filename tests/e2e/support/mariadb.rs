//! MariaDB for the tests: SQL through the `mysql` client against the machine's server
//! (127.0.0.1:3306, `root` without a password, database `test`) or a private one, and a
//! private `mariadbd` in a temporary folder that a test can kill and restart.

use super::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The URL the connector tests use for the machine's server.
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Whether MariaDB answers on 3306 and the `mysql` client is installed (skips or fails
/// like [`service_available`]).
pub fn mariadb_available() -> bool {
    service_available("MariaDB", 3306) && program_available("mysql")
}

/// Runs SQL against the machine's server (database `test`); returns the tab-separated rows
/// without a header. Panics on an SQL error.
pub fn mariadb(sql: &str) -> String {
    mariadb_at(3306, sql).unwrap_or_else(|e| panic!("mariadb failed: {e}\n{sql}"))
}

/// Runs SQL against the server on `port` (database `test`): the rows, or the client's error.
pub fn mariadb_at(port: u16, sql: &str) -> Result<String, String> {
    let output = Command::new("mysql")
        .args(["--protocol=tcp", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args([
            "-u",
            "root",
            "--connect-timeout=5",
            "-N",
            "-B",
            "test",
            "-e",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run mysql: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Whether `mariadbd` and `mariadb-install-db` are installed (skips or fails otherwise).
pub fn private_mariadb_possible() -> bool {
    program_available("mariadb-install-db")
        && (Path::new("/usr/sbin/mariadbd").is_file() || program_available("mariadbd"))
}

/// A private `mariadbd` on a free port, its data in a temporary folder (made with
/// `mariadb-install-db`, with a database `test`). Dropping it sends SIGKILL by PID.
pub struct PrivateMysql {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateMysql {
    /// Creates the data folder and starts the server.
    pub fn start() -> PrivateMysql {
        let dir = tempfile::Builder::new()
            .prefix("sluice-mariadb-")
            .tempdir()
            .expect("mariadb dir");
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--auth-root-authentication-method=normal"])
            .arg("--skip-test-db")
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PrivateMysql {
            port: free_port(),
            dir,
            child: None,
        };
        server.restart();
        mariadb_at(server.port, "SELECT 1")
            .or_else(|_| {
                // The first start: the database does not exist yet.
                let output = Command::new("mysql")
                    .args(["--protocol=tcp", "-h", "127.0.0.1", "-P"])
                    .arg(server.port.to_string())
                    .args(["-u", "root", "-e", "CREATE DATABASE test"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| e.to_string())?;
                if output.status.success() {
                    Ok(String::new())
                } else {
                    Err(String::from_utf8_lossy(&output.stderr).into_owned())
                }
            })
            .expect("create the database `test`");
        server
    }

    /// The URL of its database `test`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }

    /// Starts the server (again, on the same port and data) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mariadbd is already running");
        let dir = self.dir.path();
        let program = if Path::new("/usr/sbin/mariadbd").is_file() {
            "/usr/sbin/mariadbd"
        } else {
            "mariadbd"
        };
        let child = Command::new(program)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.join("mariadbd.err").display()
            ))
            .args(["--bind-address=127.0.0.1", "--user=root"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(secs(60), || {
            mariadb_at(port, "SELECT 1").is_ok()
                || mariadb_at(port, "SELECT 1").is_err_and(|e| e.contains("Unknown database"))
        });
        assert!(
            up,
            "mariadbd did not answer on port {port} within 60 s:\n{}",
            tail(
                &std::fs::read_to_string(dir.join("mariadbd.err")).unwrap_or_default(),
                30
            )
        );
    }

    /// SIGKILL by PID, then reap: a crash, nothing flushed on purpose. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateMysql {
    fn drop(&mut self) {
        self.kill();
    }
}
