//! `tls = { ca, cert, key, server_name }`: what the client bridges share about TLS.
//!
//! The files are read and checked once, when the bridge is built, so a missing or wrong
//! file is a configuration error that names its key (`switchyard check` finds it without
//! connecting). Each adapter hands the checked PEM to its own TLS library.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::settings::SettingError;

/// `tls = { ... }` of a bridge that connects out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the certificate authorities to trust (`""` = the system's).
    #[serde(default)]
    pub ca: String,
    /// PEM file of the client certificate chain, for mutual TLS (with `key`).
    #[serde(default)]
    pub cert: String,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key: String,
    /// The name the server's certificate must carry when it is not the host connected to
    /// (`""` = the host); only where the bridge's client library can check another name.
    #[serde(default)]
    pub server_name: String,
}

/// The checked contents of the files a [`TlsSettings`] names.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM of the authorities to trust; `None` = the system's.
    pub ca: Option<Vec<u8>>,
    /// The client certificate, for mutual TLS.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// PEM of the certificate chain (at least one certificate).
    pub cert_chain: Vec<u8>,
    /// PEM of the private key.
    pub key: Vec<u8>,
}

impl TlsSettings {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        !(self.ca.is_empty()
            && self.cert.is_empty()
            && self.key.is_empty()
            && self.server_name.is_empty())
    }

    /// Reads and checks the files: `ca` and `cert` hold certificates, `key` a private
    /// key, and `cert` and `key` come together.
    pub fn load(&self) -> Result<TlsFiles, SettingError> {
        let ca = if self.ca.is_empty() {
            None
        } else {
            Some(certificates("tls.ca", &self.ca)?)
        };
        let identity = match (self.cert.is_empty(), self.key.is_empty()) {
            (true, true) => None,
            (false, false) => Some(ClientIdentity {
                cert_chain: certificates("tls.cert", &self.cert)?,
                key: private_key(&self.key)?,
            }),
            (true, false) => {
                return Err(SettingError::new(
                    "tls.cert",
                    "tls.key is set: set tls.cert too",
                ))
            }
            (false, true) => {
                return Err(SettingError::new(
                    "tls.key",
                    "tls.cert is set: set tls.key too",
                ))
            }
        };
        Ok(TlsFiles { ca, identity })
    }

    /// Refuses `server_name` for a bridge whose client library checks only the host.
    pub fn refuse_server_name(&self) -> Result<(), SettingError> {
        if self.server_name.is_empty() {
            return Ok(());
        }
        Err(SettingError::new(
            "tls.server_name",
            "this bridge checks the certificate against the host of its url; remove \
             server_name and connect by the name the certificate carries",
        ))
    }
}

/// The PEM file at `path` (setting `key`), checked to hold at least one certificate.
fn certificates(key: &str, path: &str) -> Result<Vec<u8>, SettingError> {
    let pem = read(key, path)?;
    let mut found = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|error| SettingError::new(key, format!("{path}: {error}")))?;
        found += 1;
    }
    if found == 0 {
        return Err(SettingError::new(
            key,
            format!("no PEM certificate in {path}"),
        ));
    }
    Ok(pem)
}

/// The PEM file at `path`, checked to hold a private key.
fn private_key(path: &str) -> Result<Vec<u8>, SettingError> {
    let pem = read("tls.key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        SettingError::new("tls.key", format!("no private key in {path}: {error}"))
    })?;
    Ok(pem)
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, SettingError> {
    std::fs::read(path)
        .map_err(|error| SettingError::new(key, format!("cannot read {path}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca: &str, cert: &str, key: &str) -> TlsSettings {
        TlsSettings {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
            server_name: String::new(),
        }
    }

    #[test]
    fn nothing_set_means_system_roots_and_no_identity() {
        let files = TlsSettings::default().load().expect("nothing to read");
        assert!(files.ca.is_none() && files.identity.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let error = settings("/nonexistent/ca.pem", "", "").load().unwrap_err();
        assert_eq!(error.path, "tls.ca");
        assert!(
            error.message.contains("cannot read /nonexistent/ca.pem"),
            "{error}"
        );
        assert_eq!(
            settings("", "c.pem", "").load().unwrap_err().path,
            "tls.key"
        );
        assert_eq!(
            settings("", "", "k.pem").load().unwrap_err().path,
            "tls.cert"
        );
        let not_pem =
            std::env::temp_dir().join(format!("switchyard-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, "hello").unwrap();
        let error = settings(not_pem.to_str().unwrap(), "", "")
            .load()
            .unwrap_err();
        assert!(error.message.contains("no PEM certificate"), "{error}");
        let _ = std::fs::remove_file(not_pem);
    }

    #[test]
    fn server_name_is_refused_where_unsupported() {
        let mut tls = TlsSettings::default();
        assert!(tls.refuse_server_name().is_ok());
        tls.server_name = "broker.example".into();
        assert_eq!(
            tls.refuse_server_name().unwrap_err().path,
            "tls.server_name"
        );
        assert!(tls.is_set());
    }
}
