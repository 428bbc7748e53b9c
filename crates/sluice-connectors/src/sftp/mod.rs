//! The `sftp` connector: a trigger that takes files from a folder on an SSH server with the
//! file trigger's guarantees, and a sink that writes one file per message there.
//!
//! What the local folder trigger decides is shared with it, not copied: the stability gate
//! (`file::stability`), the content decoding (`file::decode`), where a finished file goes and
//! what its sidecar says (`file::claim::Verdict`), the outcome folders and suffixed names
//! (`file::finish`), and the sink's name check and serialization (`file::sink`). What differs
//! is the I/O: a server-side rename claims a file, and a lease (the file's modification time,
//! touched while it is held) tells a file in `.inflight/` left by a dead process from one a
//! running process holds (`lease.rs`).
//!
//! The SSH client is `russh` with ring's cryptography and `russh-sftp` (no OpenSSL). Host keys
//! are checked against a known_hosts file; an unknown or changed key is refused.

mod lease;
mod link;
mod place;
mod sink;
mod take;
mod trigger;

pub use link::SftpError;
pub use sink::SftpSink;
pub use trigger::SftpTrigger;

use sluice_engine::BuildContext;
use sluice_flow::{Diagnostic, SftpAuth, Spanned, Text};
use std::path::PathBuf;

/// Where a trigger or sink connects and how it logs in, read at load.
#[derive(Clone)]
pub(crate) struct Remote {
    host: String,
    port: u16,
    user: String,
    /// The folder on the server, absolute, without a trailing `/`.
    pub(crate) folder: String,
    key: Option<PathBuf>,
    passphrase: Option<String>,
    password: Option<String>,
    known_hosts: PathBuf,
}

impl Remote {
    /// Reads `sftp://user@host:port/path`; a URL that cannot be read, or no way to log in,
    /// is a load error at its position.
    pub(crate) fn load(
        url: &Spanned<Text>,
        auth: &SftpAuth,
        known_hosts: &Spanned<Text>,
        cx: &BuildContext<'_>,
    ) -> Result<Remote, Diagnostic> {
        let help = "write sftp://user@host:port/path, e.g. sftp://partner@files.example.com:22/inbox/orders";
        let text = url.value.as_str();
        let bad = |why: String| cx.diagnostic(url, why).with_help(help);
        let parsed = reqwest::Url::parse(text)
            .map_err(|e| bad(format!("invalid SFTP URL {}: {e}", crate::shown_url(text))))?;
        if parsed.scheme() != "sftp" {
            return Err(bad(format!(
                "the URL's scheme is `{}`, not `sftp`",
                parsed.scheme()
            )));
        }
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
            _ => return Err(bad("the URL names no host".to_owned())),
        }
        .to_owned();
        if parsed.username().is_empty() {
            return Err(bad(
                "the URL names no user (sftp://user@host/path)".to_owned()
            ));
        }
        if parsed.password().is_some() {
            return Err(cx
                .diagnostic(url, "the SFTP URL holds a password")
                .with_help("give it as `password: ${env:SFTP_PASSWORD}` instead, so that the URL can be shown"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("the SFTP URL has a query or fragment".to_owned()));
        }
        let path = parsed.path();
        if path.contains('%') {
            return Err(bad(
                "the folder has percent-escapes; write it as it is named on the server".to_owned(),
            ));
        }
        let folder = path.trim_end_matches('/');
        if folder.is_empty() {
            return Err(bad(
                "the URL names no folder; give its absolute path on the server".to_owned(),
            ));
        }
        // Checked on the text as written: the URL parser resolves `..` and `.` away, which
        // would name another folder than the one the flow seems to.
        let written_path = text.splitn(4, '/').nth(3).unwrap_or("");
        if written_path
            .split('/')
            .any(|part| part == ".." || part == ".")
        {
            return Err(bad("the folder contains `..` or `.`".to_owned()));
        }
        if auth.key.is_none() && auth.password.is_none() {
            return Err(cx
                .diagnostic(
                    url,
                    "no way to log in: neither `key` nor `password` is given",
                )
                .with_help("give `key: <private key file>` or `password: ${env:SFTP_PASSWORD}`"));
        }
        if known_hosts.value.as_str().trim().is_empty() {
            return Err(cx
                .diagnostic(known_hosts, "`known_hosts` is empty")
                .with_help("give the file that holds the server's host key (`ssh-keyscan -p PORT HOST >> known_hosts`, checked by hand)"));
        }
        Ok(Remote {
            host,
            port: parsed.port().unwrap_or(22),
            user: parsed.username().to_owned(),
            folder: folder.to_owned(),
            key: auth.key.as_ref().map(|k| PathBuf::from(k.value.as_str())),
            passphrase: auth.passphrase.as_ref().map(|p| p.as_str().to_owned()),
            password: auth.password.as_ref().map(|p| p.as_str().to_owned()),
            known_hosts: PathBuf::from(known_hosts.value.as_str()),
        })
    }

    /// The server and folder as logs show them: `sftp://user@host:port/folder`.
    pub(crate) fn shown(&self) -> String {
        format!(
            "sftp://{}@{}:{}{}",
            self.user, self.host, self.port, self.folder
        )
    }

    /// `folder/name`.
    pub(crate) fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.folder)
    }

    /// `folder/sub/name`.
    pub(crate) fn path_in(&self, sub: &str, name: &str) -> String {
        format!("{}/{sub}/{name}", self.folder)
    }
}

impl crate::TriggerComponent for sluice_flow::SftpTriggerConfig {
    const KEY: &'static str = "sftp";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, Diagnostic> {
        Ok(Box::new(SftpTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        format!(
            "sftp {}",
            sluice_engine::without_credentials(self.url.value.as_str())
        )
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }

    /// As its files: `format` and the CSV options.
    fn input(&self) -> sluice_engine::InputFormat {
        sluice_engine::InputFormat {
            format: self.format,
            csv: self.csv.clone(),
            xml: self.xml.clone(),
        }
    }
}

impl crate::SinkComponent for sluice_flow::SftpSinkConfig {
    const KEY: &'static str = "sftp";

    fn build(
        &self,
        name: &str,
        _: &crate::StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, Diagnostic> {
        Ok(std::sync::Arc::new(SftpSink::new(name, self, cx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::Remote;
    use sluice_engine::BuildContext;
    use sluice_flow::TriggerConfig;

    fn load(url: &str, login: &str) -> Result<Remote, String> {
        let source = format!(
            "trigger:\n  sftp: {{ url: \"{url}\", known_hosts: keys/kh{login} }}\nsinks:\n  out: {{ stdout: {{}} }}\n"
        );
        let loaded = sluice_flow::parse_flow(std::path::Path::new("flows/t.yaml"), source)
            .unwrap_or_else(|d| panic!("{d}"));
        let TriggerConfig::Sftp(config) = &loaded.file.trigger.value else {
            panic!("an sftp trigger");
        };
        let cx = BuildContext { flow: &loaded };
        Remote::load(&config.url, &config.auth(), &config.known_hosts, &cx)
            .map_err(|d| d.to_string())
    }

    #[test]
    fn a_url_names_user_host_port_and_folder() {
        let remote = load(
            "sftp://partner@files.example.com:2222/drop/orders/",
            ", key: k",
        )
        .expect("loads");
        assert_eq!(
            remote.shown(),
            "sftp://partner@files.example.com:2222/drop/orders"
        );
        assert_eq!(
            remote.path_in(".inflight", "a.json"),
            "/drop/orders/.inflight/a.json"
        );
        let default_port = load("sftp://p@[::1]/in", ", password: pw-1234").expect("loads");
        assert_eq!(default_port.shown(), "sftp://p@::1:22/in");
    }

    #[test]
    fn bad_urls_and_missing_logins_are_positioned_load_errors() {
        for (url, login, expected) in [
            ("sftp://p:secret-pw@h/in", ", key: k", "holds a password"),
            ("sftp://h/in", ", key: k", "names no user"),
            ("http://p@h/in", ", key: k", "not `sftp`"),
            ("sftp://p@h", ", key: k", "names no folder"),
            ("sftp://p@h/in/../etc", ", key: k", "`..`"),
            ("sftp://p@h/in%20box", ", key: k", "percent-escapes"),
            ("sftp://p@h/in", "", "neither `key` nor `password`"),
        ] {
            let error = load(url, login).err().unwrap_or_default();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(error.contains("flows/t.yaml:2:"), "{url}: {error}");
            assert!(!error.contains("secret-pw"), "{error}");
        }
    }
}
