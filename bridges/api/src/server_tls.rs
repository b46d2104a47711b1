//! `tls = { cert, key, client_ca, require_certificate }` of a listener: rustls server
//! configuration, built once when the bridge is built (so `switchyard check` finds a bad
//! file) and again on SIGHUP (see [`crate::reload`]): new handshakes use the new
//! certificate, established connections keep theirs.
//!
//! With `client_ca`, a client may present a certificate signed by it (required with
//! `require_certificate = true`); its subject's common name becomes the client's user
//! name, as Mosquitto's `use_identity_as_username`.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::reload::Reloadable;
use crate::SettingError;

/// `tls = { ... }` of a listener.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// PEM file of the server's certificate chain (leaf first).
    #[serde(default)]
    pub cert: String,
    /// PEM file of its private key.
    #[serde(default)]
    pub key: String,
    /// PEM file of the authorities whose client certificates are accepted (`""` = none
    /// asked for). The certificate's common name is the client's user name.
    #[serde(default)]
    pub client_ca: String,
    /// Refuse clients without a certificate signed by `client_ca`.
    #[serde(default)]
    pub require_certificate: bool,
}

impl std::fmt::Debug for ServerTlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // File names only; nothing secret is read here.
        f.debug_struct("ServerTlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .field("require_certificate", &self.require_certificate)
            .finish()
    }
}

impl ServerTlsSettings {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        !(self.cert.is_empty() && self.key.is_empty() && self.client_ca.is_empty())
            || self.require_certificate
    }
}

/// A listener's TLS: the server configuration in use, reloaded on SIGHUP.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<Reloadable<ServerConfig>>,
}

/// An accepted TLS connection and the user its client certificate names, if any.
pub struct Accepted<S> {
    /// The TLS stream.
    pub stream: TlsStream<S>,
    /// The common name of the client certificate (already verified against `client_ca`).
    pub certificate_user: Option<String>,
}

impl ServerTls {
    /// Loads the files of `settings` (`key` names the setting, e.g. `tls`, and `what` the
    /// listener, e.g. `bridges.mqtt.tls`, for the log).
    pub fn load(key: &str, what: &str, settings: &ServerTlsSettings) -> Result<Self, SettingError> {
        let settings = settings.clone();
        let key = key.to_owned();
        let config = Reloadable::new(what, move || server_config(&key, &settings))?;
        Ok(Self { config })
    }

    /// The `tls` of server bridge `bridge`, loaded when set (`None`: plain TCP).
    pub fn for_bridge(
        bridge: &str,
        settings: &ServerTlsSettings,
    ) -> Result<Option<Self>, SettingError> {
        settings
            .is_set()
            .then(|| Self::load("tls", &format!("bridges.{bridge}.tls"), settings))
            .transpose()
    }

    /// Completes the TLS handshake on `stream` with the configuration in use now.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<Accepted<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.config.get());
        let stream = acceptor.accept(stream).await?;
        let certificate_user = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| common_name(leaf));
        Ok(Accepted {
            stream,
            certificate_user,
        })
    }

    /// Reloads the files on every SIGHUP until `shutdown`.
    pub async fn reload_on_sighup(&self, shutdown: CancellationToken) {
        Arc::clone(&self.config).reload_on_sighup(shutdown).await;
    }
}

/// The subject common name of a DER certificate.
fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

/// Reads the files and builds the rustls configuration.
fn server_config(key: &str, settings: &ServerTlsSettings) -> Result<ServerConfig, SettingError> {
    let error = |field: &str, message: String| SettingError::new(format!("{key}.{field}"), message);
    if settings.cert.is_empty() || settings.key.is_empty() {
        return Err(error(
            "cert",
            "a TLS listener needs both cert and key (PEM files)".to_owned(),
        ));
    }
    let chain = certificates(&settings.cert).map_err(|message| error("cert", message))?;
    let private_key = read(&settings.key)
        .and_then(|pem| {
            PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|cause| format!("no private key in {}: {cause}", settings.key))
        })
        .map_err(|message| error("key", message))?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|cause| error("cert", cause.to_string()))?;
    let builder = if settings.client_ca.is_empty() {
        if settings.require_certificate {
            return Err(error(
                "require_certificate",
                "set client_ca to the authorities that sign client certificates".to_owned(),
            ));
        }
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for certificate in
            certificates(&settings.client_ca).map_err(|message| error("client_ca", message))?
        {
            roots
                .add(certificate)
                .map_err(|cause| error("client_ca", format!("{}: {cause}", settings.client_ca)))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if settings.require_certificate {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|cause| error("client_ca", cause.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    builder
        .with_single_cert(chain, private_key)
        .map_err(|cause| {
            error(
                "key",
                format!("{} does not fit {}: {cause}", settings.key, settings.cert),
            )
        })
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {path}: {error}"))
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{path}: {error}"))?;
    if chain.is_empty() {
        return Err(format!("no PEM certificate in {path}"));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_key() {
        let settings = ServerTlsSettings {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ..ServerTlsSettings::default()
        };
        let error = ServerTls::load("tls", "test", &settings).unwrap_err();
        assert_eq!(error.path, "tls.cert");
        assert!(
            error.message.contains("cannot read /nonexistent/cert.pem"),
            "{error}"
        );
        let error = ServerTls::load("tls", "test", &ServerTlsSettings::default()).unwrap_err();
        assert!(error.message.contains("both cert and key"), "{error}");
    }
}
