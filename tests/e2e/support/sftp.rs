//! A private OpenSSH server for the SFTP tests: `sshd` on a free port of 127.0.0.1 with a
//! host key and a user key generated per test, key login only, SFTP only
//! (`ForceCommand internal-sftp`), chrooted to a folder of its own. The folder is under the
//! target directory (`CARGO_TARGET_TMPDIR`), not `/tmp`: sshd refuses a chroot any of whose
//! parents others can write to. The test user is the one running the tests (root: sshd needs
//! root to chroot), so the test reads and writes the chroot's files directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::process::{Child, Stdio};

use super::{free_port, millis, secs, skip_or_fail, unique_name, wait_until};

/// Where Debian's openssh-server puts the daemon (`.ci/sftp-server.sh` installs it).
pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether an SFTP test can run: `sshd` and `ssh-keygen` installed, and running as root.
/// Skips (prints why) or fails under `SLUICE_REQUIRE_SERVICES=1`, like `service_available`.
pub fn sshd_available() -> bool {
    if !Path::new(SSHD).is_file() {
        return skip_or_fail(
            "`sshd` is not installed (apt-get install openssh-server; .ci/sftp-server.sh does it)",
        );
    }
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return skip_or_fail("the SFTP tests run sshd with a chroot, which needs root");
    }
    true
}

/// One sshd with its keys and chroot.
pub struct Sshd {
    /// `<target>/tmp/sftp-…`: `etc/` (keys, config) and `root/` (the chroot).
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    args: Vec<String>,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

impl Sshd {
    /// Starts sshd with `<chroot>/inbox` and `<chroot>/outbox` made.
    pub fn start() -> Sshd {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique_name("sftp"));
        let etc = dir.join("etc");
        let root = dir.join("root");
        for folder in [&etc, &root.join("inbox"), &root.join("outbox")] {
            std::fs::create_dir_all(folder).expect("create the sshd folders");
        }
        // The privilege separation folder Debian's sshd wants (made by its service, which
        // is not running here).
        let _ = std::fs::create_dir_all("/run/sshd");
        keygen(&etc.join("host_key"));
        keygen(&etc.join("client_key"));
        keygen(&etc.join("other_host_key"));
        std::fs::copy(etc.join("client_key.pub"), etc.join("authorized_keys"))
            .expect("authorized_keys");
        let port = free_port();
        let user = String::from_utf8_lossy(
            &Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .trim()
        .to_owned();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {etc}/host_key\nPidFile none\n\
             AuthorizedKeysFile {etc}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nChrootDirectory {root}\n\
             ForceCommand internal-sftp\nSubsystem sftp internal-sftp\n\
             AllowTcpForwarding no\nX11Forwarding no\nMaxStartups 100\nMaxSessions 50\n\
             LogLevel ERROR\n",
            etc = etc.display(),
            root = root.display(),
        );
        std::fs::write(etc.join("sshd_config"), config).expect("sshd_config");
        let known = |key: &str| {
            let public = std::fs::read_to_string(etc.join(format!("{key}.pub"))).expect("key");
            let mut parts = public.split_whitespace();
            let (kind, base64) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            format!("[127.0.0.1]:{port} {kind} {base64}\n")
        };
        std::fs::write(etc.join("known_hosts"), known("host_key")).expect("known_hosts");
        std::fs::write(etc.join("wrong_known_hosts"), known("other_host_key"))
            .expect("wrong_known_hosts");
        std::fs::write(etc.join("empty_known_hosts"), "").expect("empty_known_hosts");
        let args = vec![
            "-D".to_owned(),
            "-e".to_owned(),
            "-f".to_owned(),
            etc.join("sshd_config").display().to_string(),
        ];
        let mut sshd = Sshd {
            dir,
            port,
            user,
            args,
            child: None,
        };
        sshd.restart();
        sshd
    }

    /// `<chroot>/<rel>` on this machine.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join("root").join(rel)
    }

    /// `<etc>/<name>`: `client_key`, `known_hosts`, `wrong_known_hosts`, `empty_known_hosts`.
    pub fn etc(&self, name: &str) -> String {
        self.dir.join("etc").join(name).display().to_string()
    }

    /// `sftp://user@127.0.0.1:port/<folder>`.
    pub fn url(&self, folder: &str) -> String {
        format!("sftp://{}@127.0.0.1:{}/{folder}", self.user, self.port)
    }

    /// The YAML keys to log in with the test key, checking the host key against `known`.
    pub fn login(&self, known: &str) -> String {
        format!(
            "key: \"{}\", known_hosts: \"{}\"",
            self.etc("client_key"),
            self.etc(known)
        )
    }

    /// SIGKILL by PID to the daemon and to every process under it (one per session, which
    /// sshd puts in sessions of their own), so that connections under way die too.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut pids = descendants(child.id() as i32);
            pids.push(child.id() as i32);
            for pid in pids {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }

    /// Starts it (again), with the same keys and folders, and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(SSHD)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SSHD}: {e}"));
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = wait_until(secs(20), || {
            std::net::TcpStream::connect_timeout(&addr, millis(200)).is_ok()
        });
        assert!(up, "sshd did not listen on port {} within 20 s", self.port);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every process whose parent chain leads to `pid`, from `/proc/*/stat`.
fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}
