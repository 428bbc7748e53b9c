//! TLS through rustls, shared by every connector that offers it (`mqtt`, `redis`,
//! `postgres`): the `ca`, `cert` and `key` files are read and checked when the flow loads (a
//! missing or broken one is a load error at its position), and a rustls client configuration
//! is built from them. The ring provider is named explicitly: rustls picks none by itself when
//! several are compiled in.

// Some parts serve only some of the connectors (mqtt, redis or postgres);
// a build without the others leaves them unused.
#![cfg_attr(
    not(all(feature = "mqtt", feature = "redis", feature = "postgres")),
    allow(dead_code)
)]

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sluice_engine::BuildContext;
use sluice_flow::{Diagnostic, Spanned, Text, TlsFiles};
use std::sync::Arc;

/// The three files of a connector's TLS settings, borrowed from whichever settings hold them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Files<'a> {
    /// The certificate authorities to trust instead of the system's.
    pub ca: Option<&'a Spanned<Text>>,
    /// A client certificate (chain).
    pub cert: Option<&'a Spanned<Text>>,
    /// The client certificate's private key.
    pub key: Option<&'a Spanned<Text>>,
}

impl<'a> From<&'a TlsFiles> for Files<'a> {
    fn from(tls: &'a TlsFiles) -> Self {
        Files {
            ca: tls.ca.as_ref(),
            cert: tls.cert.as_ref(),
            key: tls.key.as_ref(),
        }
    }
}

/// What the files held, read at load. Each is kept as its PEM text too, for clients that take
/// PEM rather than a rustls configuration (redis).
pub(crate) struct Loaded {
    /// The `ca` file's certificates and PEM text; `None`: the system's roots.
    pub ca: Option<(Vec<CertificateDer<'static>>, Vec<u8>)>,
    /// The client certificate chain and key, and their PEM texts.
    pub identity: Option<Identity>,
}

/// A client certificate and its key.
pub(crate) struct Identity {
    /// The certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// The chain's PEM text.
    pub chain_pem: Vec<u8>,
    /// The key's PEM text.
    pub key_pem: Vec<u8>,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Against the trusted authorities, and it must name the host connected to.
    Full,
    /// Not at all (PostgreSQL's `sslmode=require`): encryption without authentication.
    None,
}

/// The process's rustls provider: ring, the one sluice builds rustls with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Loaded {
    /// Reads and checks every file given; a problem is a load error at its setting.
    pub(crate) fn read(files: Files<'_>, cx: &BuildContext<'_>) -> Result<Loaded, Diagnostic> {
        let ca = match files.ca {
            Some(ca) => {
                let pem = read_file(ca, cx)?;
                let certs = certificates(ca, &pem, cx)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in &certs {
                    roots.add(cert.clone()).map_err(|e| {
                        cx.diagnostic(
                            ca,
                            format!("`{}` holds a certificate rustls cannot use: {e}", ca.value),
                        )
                    })?;
                }
                Some((certs, pem))
            }
            None => None,
        };
        let identity = match (files.cert, files.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let chain_pem = read_file(cert, cx)?;
                let chain = certificates(cert, &chain_pem, cx)?;
                let key_pem = read_file(key, cx)?;
                let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    cx.diagnostic(
                        key,
                        format!("cannot read the private key `{}`: {e}", key.value),
                    )
                    .with_help(
                        "give a PEM file with a `-----BEGIN PRIVATE KEY-----` (or RSA/EC) block",
                    )
                })?;
                Some(Identity {
                    chain,
                    key: private,
                    chain_pem,
                    key_pem,
                })
            }
            (Some(only), None) | (None, Some(only)) => {
                return Err(cx
                    .diagnostic(only, "a client certificate needs both `cert` and `key`")
                    .with_help("give both PEM files, or neither"));
            }
        };
        let loaded = Loaded { ca, identity };
        // Built once now, so that a certificate and key that do not fit together are a load
        // error at `cert` rather than a failure at the first connection.
        loaded.client_config(Verify::Full, files, cx)?;
        Ok(loaded)
    }

    /// The rustls client configuration: the `ca` file's authorities, else the system's roots,
    /// and the client certificate when one was given.
    pub(crate) fn client_config(
        &self,
        verify: Verify,
        files: Files<'_>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<rustls::ClientConfig>, Diagnostic> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            // Checked to be usable when read.
            Some((certs, _)) => {
                for cert in certs {
                    let _ = roots.add(cert.clone());
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system certificate rustls cannot parse is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                cx.flow
                    .diagnostic(None, format!("TLS set-up failed: {e}"))
                    .with_help(
                        "the TLS library refused its own defaults; please report this as a bug",
                    )
            })?;
        let builder = match verify {
            Verify::Full => builder.with_root_certificates(roots),
            Verify::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        };
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(|e| {
                    let at = files.cert.and_then(sluice_flow::Span::of);
                    cx.flow.diagnostic(
                        at,
                        format!("the client certificate and key do not fit together: {e}"),
                    )
                })?,
        };
        Ok(Arc::new(config))
    }
}

/// Reads a file named by a setting, reporting a problem at the setting's position.
fn read_file(path: &Spanned<Text>, cx: &BuildContext<'_>) -> Result<Vec<u8>, Diagnostic> {
    std::fs::read(path.value.as_str()).map_err(|e| {
        cx.diagnostic(path, format!("cannot read `{}`: {e}", path.value))
            .with_help("the path is relative to the working directory; the file must be PEM")
    })
}

/// Every certificate of a PEM text; none at all is an error.
fn certificates(
    path: &Spanned<Text>,
    pem: &[u8],
    cx: &BuildContext<'_>,
) -> Result<Vec<CertificateDer<'static>>, Diagnostic> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            cx.diagnostic(path, format!("cannot read `{}`: {e}", path.value))
                .with_help("the file must be PEM")
        })?;
    if certs.is_empty() {
        return Err(cx
            .diagnostic(path, format!("`{}` holds no certificate", path.value))
            .with_help("give a PEM file with one or more `-----BEGIN CERTIFICATE-----` blocks"));
    }
    Ok(certs)
}

/// Accepts any server certificate (still checking that the handshake is signed by it), for
/// PostgreSQL's `require`.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
