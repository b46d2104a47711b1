//! The rustls client configuration of a bridge that connects out over TLS, built once from
//! its `tls = { ca, cert, key, server_name }` settings ([`TlsSettings`]).
//!
//! The configuration names its crypto provider (aws-lc-rs, as the rest of the workspace)
//! instead of relying on a process-wide default, so no rustls default has to be installed.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::aws_lc_rs;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::settings::SettingError;
use crate::tls::{TlsFiles, TlsSettings};

/// The rustls configuration: trusted authorities, the client certificate if any, and the
/// name to check the broker's certificate against.
pub fn client_config(settings: &TlsSettings) -> Result<ClientConfig, SettingError> {
    let expected_name = expected_name(&settings.server_name)?;
    let files = settings.load()?;
    let identity = client_identity(&files)?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let roots = Arc::new(trusted_roots(&files)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| SettingError::new("tls.ca", error.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| SettingError::new("tls", error.to_string()))?;
    let builder = match expected_name {
        None => builder.with_webpki_verifier(webpki),
        Some(name) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedName {
                name,
                inner: webpki,
            })),
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|error| SettingError::new("tls.key", error.to_string())),
    }
}

/// `tls.server_name`, parsed; `None` when empty (the host is checked).
fn expected_name(server_name: &str) -> Result<Option<ServerName<'static>>, SettingError> {
    if server_name.is_empty() {
        return Ok(None);
    }
    ServerName::try_from(server_name.to_owned())
        .map(Some)
        .map_err(|_| {
            SettingError::new(
                "tls.server_name",
                format!("expected a DNS name or an IP address, found {server_name:?}"),
            )
        })
}

/// The client certificate chain and its key, for mutual TLS.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The checked client identity, parsed for rustls.
fn client_identity(files: &TlsFiles) -> Result<Option<Identity>, SettingError> {
    let Some(identity) = &files.identity else {
        return Ok(None);
    };
    let chain = parse_certificates("tls.cert", &identity.cert_chain)?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key)
        .map_err(|error| SettingError::new("tls.key", error.to_string()))?;
    Ok(Some((chain, key)))
}

/// The authorities of the `ca` file, or the system's when there is none.
fn trusted_roots(files: &TlsFiles) -> Result<RootCertStore, SettingError> {
    let mut roots = RootCertStore::empty();
    match &files.ca {
        None => {
            let system = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                let errors: Vec<String> = system.errors.iter().map(ToString::to_string).collect();
                return Err(SettingError::new(
                    "tls.ca",
                    format!(
                        "no system certificate authorities found ({}); name a PEM file",
                        errors.join("; ")
                    ),
                ));
            }
        }
        Some(pem) => {
            for certificate in parse_certificates("tls.ca", pem)? {
                roots
                    .add(certificate)
                    .map_err(|error| SettingError::new("tls.ca", error.to_string()))?;
            }
        }
    }
    Ok(roots)
}

/// The certificates of checked PEM (setting `key`).
fn parse_certificates(key: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SettingError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| SettingError::new(key, error.to_string()))
}

/// Checks the broker's certificate against `tls.server_name` instead of the host connected
/// to; everything else is webpki's usual verification.
#[derive(Debug)]
struct ExpectedName {
    /// The name the certificate must carry.
    name: ServerName<'static>,
    /// The verifier that does the work.
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ExpectedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
