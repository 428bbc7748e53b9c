//! TLS settings shared by the connectors that speak TLS through rustls (`mqtt`, `redis`,
//! `postgres`): the certificate files are read when the flow loads, so a missing or broken
//! one is a load error at its position.

use crate::Text;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// TLS settings of a connection (`mqtts://`, `rediss://`); without them the system's roots
/// are trusted and no client certificate is sent.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the certificate authorities to trust instead of the system's.
    #[schemars(with = "Option<Text>")]
    pub ca: Option<Spanned<Text>>,
    /// PEM file of a client certificate (chain), for servers that require one; with `key`.
    #[schemars(with = "Option<Text>")]
    pub cert: Option<Spanned<Text>>,
    /// PEM file of the client certificate's private key.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
}

/// How much a `postgres` connection's TLS checks (PostgreSQL's `sslmode` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PgSslMode {
    /// Encrypted, and the server's certificate is checked against `ca` (or the system's
    /// roots) and must name the host of the URL.
    #[default]
    VerifyFull,
    /// Encrypted, but the server's certificate is not checked: protects against listeners
    /// on the wire, not against a server that impersonates the real one.
    Require,
}

/// TLS of a `postgres` trigger or sink; without it the connection is plain.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresTls {
    /// `verify-full` (default) or `require`.
    #[serde(default)]
    pub mode: PgSslMode,
    /// PEM file of the certificate authorities to trust instead of the system's
    /// (`verify-full` only).
    #[schemars(with = "Option<Text>")]
    pub ca: Option<Spanned<Text>>,
    /// PEM file of a client certificate (chain), for servers that require one; with `key`.
    #[schemars(with = "Option<Text>")]
    pub cert: Option<Spanned<Text>>,
    /// PEM file of the client certificate's private key.
    #[schemars(with = "Option<Text>")]
    pub key: Option<Spanned<Text>>,
}
