//! TLS for `mqtts://` and `wss://`: the bridge's `tls = { ... }` settings become one rustls
//! client configuration, read once when the bridge is built, and every address of the
//! failover list gets its rumqttc transport.
//!
//! The configuration names its crypto provider (aws-lc-rs, as the rest of the workspace)
//! instead of relying on a process-wide default, so no rustls default has to be installed.

use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use switchyard_api::SettingError;

use super::client::Endpoint;
use switchyard_api::tls::{TlsFiles, TlsSettings};

use super::config::BrokerAddress;

/// Pairs every address with its transport; the TLS configuration is built (and its files
/// read) only when an address needs it.
pub fn endpoints(
    settings: &TlsSettings,
    addresses: Vec<BrokerAddress>,
) -> Result<Vec<Endpoint>, SettingError> {
    let tls = if addresses.iter().any(|address| address.tls) {
        Some(TlsConfiguration::Rustls(Arc::new(client_config(settings)?)))
    } else if settings.is_set() {
        return Err(SettingError::new(
            "tls",
            "set, but no address is mqtts:// or wss://; use one of those to connect with TLS",
        ));
    } else {
        None
    };
    Ok(addresses
        .into_iter()
        .map(|address| {
            // `tls` is built above whenever an address needs it.
            let transport = match (&tls, address.tls, address.websocket_url.is_some()) {
                (Some(tls), true, false) => Transport::Tls(tls.clone()),
                (Some(tls), true, true) => Transport::Wss(tls.clone()),
                (_, _, true) => Transport::Ws,
                (_, _, false) => Transport::Tcp,
            };
            Endpoint { address, transport }
        })
        .collect())
}

/// The rustls configuration: trusted authorities, the client certificate if any, and the
/// name to check the broker's certificate against.
fn client_config(settings: &TlsSettings) -> Result<ClientConfig, SettingError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(urls: &[&str]) -> Vec<BrokerAddress> {
        urls.iter()
            .map(|url| BrokerAddress::parse(url).unwrap())
            .collect()
    }

    fn tls(ca: &str, cert: &str, key: &str, server_name: &str) -> TlsSettings {
        TlsSettings {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
            server_name: server_name.to_owned(),
        }
    }

    #[test]
    fn each_address_gets_its_transport() {
        let endpoints = endpoints(
            &TlsSettings::default(),
            addresses(&["mqtt://a", "ws://a/mqtt", "mqtts://a", "wss://a/mqtt"]),
        )
        .unwrap();
        let kinds: Vec<&str> = endpoints
            .iter()
            .map(|endpoint| match endpoint.transport {
                Transport::Tcp => "tcp",
                Transport::Tls(_) => "tls",
                Transport::Ws => "ws",
                Transport::Wss(_) => "wss",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["tcp", "ws", "tls", "wss"]);
    }

    #[test]
    fn errors_name_the_key() {
        let secure = || addresses(&["mqtts://a"]);
        let missing = endpoints(&tls("/nonexistent/ca.pem", "", "", ""), secure())
            .err()
            .unwrap();
        assert_eq!(missing.path, "tls.ca");
        assert!(
            missing
                .message
                .starts_with("cannot read /nonexistent/ca.pem: "),
            "{}",
            missing.message
        );
        let half = endpoints(&tls("", "", "/k.pem", ""), secure())
            .err()
            .unwrap();
        assert_eq!(half.path, "tls.cert");
        let name = endpoints(&tls("", "", "", "not a name!"), secure())
            .err()
            .unwrap();
        assert_eq!(name.path, "tls.server_name");
        let unused = endpoints(&tls("/ca.pem", "", "", ""), addresses(&["mqtt://a"]));
        assert_eq!(unused.err().unwrap().path, "tls");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path =
            std::env::temp_dir().join(format!("switchyard-mqtt-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = endpoints(
            &tls(&path.display().to_string(), "", "", ""),
            addresses(&["mqtts://a"]),
        )
        .err()
        .unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(error.path, "tls.ca");
        assert!(
            error.message.contains("no PEM certificate"),
            "{}",
            error.message
        );
    }
}
