//! The SSH connection: host key checked against a known_hosts file, login by key or
//! password, the SFTP subsystem, and one session shared by everything a trigger or sink does
//! (SFTP requests run concurrently over it). A request that fails on the transport drops the
//! session; the next one connects again.

use super::Remote;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpFailure;
use russh_sftp::protocol::StatusCode;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests under way at once on one session. russh-sftp keeps SFTP handles as strings, and
/// OpenSSH's are four bytes holding the handle's number, so a handle numbered 128 or more is
/// not valid UTF-8 and comes back mangled (the server answers `Failure`); OpenSSH numbers
/// handles from 0 and reuses free ones, so keeping fewer than 128 open keeps them valid.
/// Every request that opens a handle closes it before it ends (a file's close is sent as it
/// is dropped), so this bound on requests is a bound on open handles, with room to spare.
const MAX_REQUESTS: usize = 64;

/// How long a TCP connect, the SSH handshake and the login may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong talking to the SSH server. Every text names the server without
/// credentials; a password or passphrase is never part of it.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// No TCP connection or SSH handshake.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server, `sftp://user@host:port/folder`.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server's host key is not in the known_hosts file.
    #[error(
        "the host key of {server} ({fingerprint}) is not in {known_hosts}: refusing to connect; check the key with the server's owner and add it (`ssh-keyscan -p PORT HOST`)"
    )]
    HostKeyUnknown {
        /// The server.
        server: String,
        /// The key's SHA-256 fingerprint.
        fingerprint: String,
        /// The known_hosts file.
        known_hosts: String,
    },
    /// The server's host key differs from the one the known_hosts file holds for it.
    #[error(
        "the host key of {server} ({fingerprint}) does not match the one in {known_hosts} line {line}: refusing to connect (someone may be impersonating the server; if its key really changed, replace that line)"
    )]
    HostKeyChanged {
        /// The server.
        server: String,
        /// The key's SHA-256 fingerprint.
        fingerprint: String,
        /// The known_hosts file.
        known_hosts: String,
        /// The line of the recorded key.
        line: usize,
    },
    /// The known_hosts file cannot be read.
    #[error("cannot read the known_hosts file {known_hosts}: {reason}")]
    KnownHosts {
        /// The file.
        known_hosts: String,
        /// Why.
        reason: String,
    },
    /// The private key file cannot be read or decrypted.
    #[error("cannot read the private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The server refused every login that was tried.
    #[error("{server} refused the login of `{user}` (tried: {tried})")]
    Login {
        /// The server.
        server: String,
        /// The user.
        user: String,
        /// The methods tried (`key`, `password`).
        tried: String,
    },
    /// An SFTP request failed.
    #[error("{what} {path}: {source}")]
    Request {
        /// The request (`rename`, `open`, …).
        what: &'static str,
        /// The path it named.
        path: String,
        /// The server's or the client's reason.
        #[source]
        source: SftpFailure,
    },
}

impl SftpError {
    /// A request that failed because its file (or folder) is not there.
    pub(crate) fn not_found(&self) -> bool {
        matches!(self, SftpError::Request { source: SftpFailure::Status(s), .. } if s.status_code == StatusCode::NoSuchFile)
    }

    /// A request the server answered with a refusal (the file exists, permission, …), as
    /// opposed to a failure of the connection.
    pub(crate) fn refused(&self) -> bool {
        matches!(
            self,
            SftpError::Request {
                source: SftpFailure::Status(_),
                ..
            }
        )
    }
}

/// One connected SFTP session.
pub(crate) struct Session {
    pub(crate) sftp: SftpSession,
    _ssh: russh::client::Handle<Checker>,
}

/// The connection of one trigger or sink, made on first use and again after a failure.
pub(crate) struct Link {
    pub(crate) remote: Remote,
    current: Mutex<Option<Arc<Session>>>,
    /// Held while connecting, so that concurrent requests wait for one connection.
    connecting: tokio::sync::Mutex<()>,
    /// One per request under way ([`MAX_REQUESTS`]).
    requests: tokio::sync::Semaphore,
}

impl Link {
    pub(crate) fn new(remote: Remote) -> Link {
        Link {
            remote,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            requests: tokio::sync::Semaphore::new(MAX_REQUESTS),
        }
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The session, connecting when there is none.
    pub(crate) async fn session(&self) -> Result<Arc<Session>, SftpError> {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let session = Arc::new(connect(&self.remote).await?);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
        Ok(session)
    }

    /// Runs one request on the session; a failure of the connection (not a refusal by the
    /// server) drops the session, so that the next request connects again.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        path: &str,
        request: F,
    ) -> Result<T, SftpError>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SftpFailure>>,
    {
        let session = self.session().await?;
        // Never closed, so acquiring cannot fail.
        let _request = self.requests.acquire().await.ok();
        match request(session.clone()).await {
            Ok(value) => Ok(value),
            Err(source) => {
                if !matches!(source, SftpFailure::Status(_)) {
                    self.drop_session(&session);
                }
                Err(SftpError::Request {
                    what,
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }

    /// Forgets `session` if it is still the current one.
    pub(crate) fn drop_session(&self, session: &Arc<Session>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            *current = None;
        }
    }
}

/// Checks the server's host key against the known_hosts file; the verdict on a refused key
/// is kept for the error.
pub(crate) struct Checker {
    host: String,
    port: u16,
    server: String,
    known_hosts: PathBuf,
    refused: Arc<Mutex<Option<SftpError>>>,
}

impl Checker {
    fn refuse(&self, error: SftpError) -> Result<bool, russh::Error> {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        Ok(false)
    }
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                let fingerprint = cert.public_key().fingerprint(HashAlg::Sha256).to_string();
                return self.refuse(SftpError::HostKeyUnknown {
                    server: self.server.clone(),
                    fingerprint: format!("a host certificate, {fingerprint}"),
                    known_hosts: self.known_hosts.display().to_string(),
                });
            }
        };
        let known_hosts = self.known_hosts.display().to_string();
        if let Err(e) = std::fs::metadata(&self.known_hosts) {
            return self.refuse(SftpError::KnownHosts {
                known_hosts,
                reason: e.to_string(),
            });
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) => self.refuse(SftpError::HostKeyUnknown {
                server: self.server.clone(),
                fingerprint,
                known_hosts,
            }),
            Err(russh::keys::Error::KeyChanged { line }) => {
                self.refuse(SftpError::HostKeyChanged {
                    server: self.server.clone(),
                    fingerprint,
                    known_hosts,
                    line,
                })
            }
            Err(e) => self.refuse(SftpError::KnownHosts {
                known_hosts,
                reason: e.to_string(),
            }),
        }
    }
}

async fn connect(remote: &Remote) -> Result<Session, SftpError> {
    let server = remote.shown();
    match tokio::time::timeout(CONNECT_TIMEOUT, open(remote)).await {
        Ok(done) => done,
        Err(_) => Err(SftpError::Connect {
            server,
            reason: format!("no SFTP session within {}s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

async fn open(remote: &Remote) -> Result<Session, SftpError> {
    let server = remote.shown();
    let connect_error = |reason: String| SftpError::Connect {
        server: server.clone(),
        reason,
    };
    // Read before connecting: a missing key is the operator's to fix, not the server's.
    let key = match &remote.key {
        Some(path) => Some(load_key(path, remote.passphrase.as_deref())?),
        None => None,
    };
    let refused = Arc::new(Mutex::new(None));
    let checker = Checker {
        host: remote.host.clone(),
        port: remote.port,
        server: server.clone(),
        known_hosts: remote.known_hosts.clone(),
        refused: refused.clone(),
    };
    let config = Arc::new(russh::client::Config {
        // A server that stops answering is noticed, and its requests fail, within a minute.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let connected =
        russh::client::connect(config, (remote.host.as_str(), remote.port), checker).await;
    let mut ssh = match connected {
        Ok(ssh) => ssh,
        Err(e) => {
            if let Some(verdict) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(verdict);
            }
            return Err(connect_error(e.to_string()));
        }
    };
    let mut tried = Vec::new();
    let mut logged_in = false;
    if let Some(key) = key {
        tried.push("key");
        // Only an RSA key needs to know which signature hash the server takes.
        let hash = if key.algorithm().is_rsa() {
            ssh.best_supported_rsa_hash()
                .await
                .map_err(|e| connect_error(e.to_string()))?
                .flatten()
        } else {
            None
        };
        let with_hash = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        logged_in = ssh
            .authenticate_publickey(&remote.user, with_hash)
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .success();
    }
    if !logged_in && let Some(password) = &remote.password {
        tried.push("password");
        logged_in = ssh
            .authenticate_password(&remote.user, password)
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .success();
    }
    if !logged_in {
        return Err(SftpError::Login {
            server,
            user: remote.user.clone(),
            tried: tried.join(", "),
        });
    }
    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| connect_error(format!("cannot open a channel: {e}")))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| connect_error(format!("no SFTP subsystem: {e}")))?;
    let sftp = SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| connect_error(format!("the SFTP session did not start: {e}")))?;
    Ok(Session { sftp, _ssh: ssh })
}

fn load_key(
    path: &PathBuf,
    passphrase: Option<&str>,
) -> Result<russh::keys::PrivateKey, SftpError> {
    russh::keys::load_secret_key(path, passphrase).map_err(|e| SftpError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
