//! The `sftp` trigger and sink: a folder on an SSH server, with the file trigger's claim
//! semantics (stability gate, claim by rename into `.inflight/`, outcome folders, sidecars).

use super::trigger::{
    default_check_interval, default_glob, default_max_in_flight, default_max_size, default_min_age,
    default_stable_checks, unspanned,
};
use super::{CsvOptions, FileFormat, OnConflict, OnSuccess, OutputFormat};
use crate::{ByteSize, Dur, Text};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::time::Duration;

/// How sluice logs in to an SSH server: the same keys for the trigger and the sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SftpAuth {
    /// A private key file (OpenSSH format) to log in with.
    pub key: Option<Spanned<Text>>,
    /// The passphrase of an encrypted `key` (`${env:…}`).
    pub passphrase: Option<Text>,
    /// A password to log in with, tried after `key` (`${env:…}`).
    pub password: Option<Text>,
}

/// The `sftp` trigger: takes stable files from a folder on an SSH server, claiming each by a
/// server-side rename into `<path>/.inflight/`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftpTriggerConfig {
    /// The server and folder, `sftp://user@host:port/path` (port 22 by default; the path is
    /// absolute on the server).
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// A private key file (OpenSSH format) to log in with.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
    /// The passphrase of an encrypted `key` (`${env:…}`).
    pub passphrase: Option<Text>,
    /// A password to log in with, tried after `key` (`${env:…}`).
    pub password: Option<Text>,
    /// The known_hosts file that holds the server's host key; an unknown or changed key is
    /// refused.
    #[schemars(with = "Text")]
    pub known_hosts: Spanned<Text>,
    /// Which file names to take.
    #[serde(default = "default_glob")]
    #[schemars(with = "Text")]
    pub glob: Spanned<Text>,
    /// How a file becomes messages.
    #[serde(default)]
    pub format: FileFormat,
    /// Move to `.done/` or delete after success.
    #[serde(default)]
    pub on_success: OnSuccess,
    /// Larger files go to `.error/` without being read.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// Minimum age since the file was first seen.
    #[serde(default = "default_min_age")]
    pub min_age: Dur,
    /// Interval between looks at files that are settling.
    #[serde(default = "default_check_interval")]
    pub check_interval: Dur,
    /// Consecutive identical looks (size and mtime) before a file is taken.
    #[serde(
        default = "default_stable_checks",
        deserialize_with = "crate::units::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub stable_checks: u32,
    /// Interval between listings of the folder when no file is settling.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Dur,
    /// Files claimed at once.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "crate::units::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub max_in_flight: usize,
    /// A file in `.inflight/` whose modification time has not moved for this long belongs
    /// to no running process (each one touches the files it holds every third of it) and is
    /// taken again. At least 3s.
    #[serde(default = "default_lease")]
    pub lease: Dur,
    /// CSV options, for `format: csv`.
    #[serde(default)]
    pub csv: CsvOptions,
    /// XML options, for `format: xml`.
    #[serde(default)]
    pub xml: crate::XmlReadConfig,
}

/// The `sftp` sink: one file per message in a folder on an SSH server, written under a
/// temporary name and renamed.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftpSinkConfig {
    /// The server and folder, `sftp://user@host:port/path`.
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// A private key file (OpenSSH format) to log in with.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
    /// The passphrase of an encrypted `key` (`${env:…}`).
    pub passphrase: Option<Text>,
    /// A password to log in with, tried after `key` (`${env:…}`).
    pub password: Option<Text>,
    /// The known_hosts file that holds the server's host key.
    #[schemars(with = "Text")]
    pub known_hosts: Spanned<Text>,
    /// File name template; it cannot leave the folder.
    #[serde(default = "default_name")]
    #[schemars(with = "Text")]
    pub name: Spanned<Text>,
    /// Serialization of the payload.
    #[serde(default)]
    pub format: OutputFormat,
    /// Behaviour when the name exists with different content.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// XML options, for `format: xml`.
    #[serde(default)]
    pub xml: crate::XmlWriteConfig,
}

impl SftpTriggerConfig {
    /// The login settings.
    pub fn auth(&self) -> SftpAuth {
        SftpAuth {
            key: self.key.clone(),
            passphrase: self.passphrase.clone(),
            password: self.password.clone(),
        }
    }
}

impl SftpSinkConfig {
    /// The login settings.
    pub fn auth(&self) -> SftpAuth {
        SftpAuth {
            key: self.key.clone(),
            passphrase: self.passphrase.clone(),
            password: self.password.clone(),
        }
    }
}

fn default_poll_interval() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_lease() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_name() -> Spanned<Text> {
    unspanned(Text::from("{{meta('message_id')}}.json"))
}
