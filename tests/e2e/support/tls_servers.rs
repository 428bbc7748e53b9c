//! Private servers with TLS for the TLS tests, each on a free port in a temporary folder,
//! killed by PID on drop: a PostgreSQL cluster (`initdb`, then `postgres -c ssl=on`) that
//! accepts only TLS connections, and a `redis-server` with only a TLS port that requires a
//! client certificate. The certificates come from [`super::certs::make_certificates`].

use super::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The PostgreSQL programs (`initdb`, `postgres`) of the newest installed version.
pub fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The uid and gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

/// Whether a private PostgreSQL can be started here (its programs, the `postgres` user,
/// `psql` and `openssl`); skips or fails otherwise.
pub fn private_postgres_possible() -> bool {
    if postgres_bin().is_none() {
        return skip_or_fail("no PostgreSQL server programs under /usr/lib/postgresql");
    }
    if postgres_user().is_none() {
        return skip_or_fail("there is no `postgres` user to run a private PostgreSQL");
    }
    program_available("psql") && program_available("openssl")
}

/// A private PostgreSQL that accepts TLS connections only (`hostssl`, trust), with the
/// server certificate of `certs`.
pub struct TlsPostgres {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    _dir: tempfile::TempDir,
    data: PathBuf,
    child: Option<Child>,
}

impl TlsPostgres {
    /// Creates the cluster and starts it.
    pub fn start(certs: &Path) -> TlsPostgres {
        let bin = postgres_bin().expect("PostgreSQL programs");
        let (uid, gid) = postgres_user().expect("the postgres user");
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-tls-")
            .tempdir()
            .expect("postgres dir");
        let chown = |path: &Path| {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres")
        };
        chown(dir.path());
        let data = dir.path().join("data");
        let out = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .uid(uid)
            .gid(gid)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The key must belong to the server's user and be private to it.
        for name in ["server.pem", "server.key"] {
            let to = dir.path().join(name);
            std::fs::copy(certs.join(name), &to).expect("copy the server certificate");
            chown(&to);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        let mut server = TlsPostgres {
            port: free_port(),
            _dir: dir,
            data,
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let bin = postgres_bin().expect("PostgreSQL programs");
        let (uid, gid) = postgres_user().expect("the postgres user");
        let dir = self.data.parent().expect("data has a parent").to_path_buf();
        let log = std::fs::File::create(dir.join("postgres.log")).expect("postgres.log");
        chown_file(&dir.join("postgres.log"), uid, gid);
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "ssl=on", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
            .uid(uid)
            .gid(gid)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(secs(30), || self.psql("SELECT 1").is_ok());
        assert!(
            up,
            "postgres did not answer over TLS on port {port} within 30 s:\n{}",
            tail(
                &std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default(),
                30
            )
        );
    }

    /// The URL of its database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL through `psql` over TLS: the unaligned, tuples-only output, or its error.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require connect_timeout=5",
                self.port
            ))
            .args(["-v", "ON_ERROR_STOP=1", "-tAq", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }
}

fn chown_file(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: the postmaster ends its backends at once and exits.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGQUIT);
            }
            if !wait_until(secs(10), || matches!(child.try_wait(), Ok(Some(_)))) {
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }
}

/// A private `redis-server` with only a TLS port, requiring a client certificate signed by
/// the CA of `certs`.
pub fn tls_redis(certs: &Path) -> (Server, u16) {
    let port = free_port();
    let pem = |name: &str| certs.join(name).display().to_string();
    let args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &pem("server.pem"),
        "--tls-key-file",
        &pem("server.key"),
        "--tls-ca-cert-file",
        &pem("ca.pem"),
        "--tls-auth-clients",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--bind",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (Server::start("redis-server", &args, port), port)
}

/// Runs one command through `redis-cli --tls` with the client certificate of `certs`.
pub fn redis_tls_cli(certs: &Path, port: u16, args: &[&str]) -> String {
    let pem = |name: &str| certs.join(name).display().to_string();
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args(["--cacert", &pem("ca.pem"), "--cert", &pem("client.pem")])
        .args(["--key", &pem("client.key")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
