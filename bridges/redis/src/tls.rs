//! `tls = { ca, cert, key }` for `rediss://`: which authorities to trust and which client
//! certificate to present. The files are read once, when the bridge is built, so a missing
//! or empty file is a configuration error naming its key, not a failure at every connect.
//!
//! The client library parses the PEM again when it connects; here it is only checked
//! that each file holds what its key promises.

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use switchyard_api::SettingError;

/// `tls = { ... }` for `rediss://` URLs.
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
}

impl TlsSettings {
    fn is_set(&self) -> bool {
        !(self.ca.is_empty() && self.cert.is_empty() && self.key.is_empty())
    }

    /// The files' contents for the client library; `None` when nothing is set (the
    /// system's authorities, no client certificate). `secure` says whether the URL is
    /// `rediss://`: the setting means nothing otherwise.
    pub fn load(&self, secure: bool) -> Result<Option<TlsCertificates>, SettingError> {
        if !self.is_set() {
            return Ok(None);
        }
        if !secure {
            return Err(SettingError::new(
                "tls",
                "set, but the url is redis://; use rediss:// to connect with TLS",
            ));
        }
        let root_cert = if self.ca.is_empty() {
            None
        } else {
            Some(certificates("tls.ca", &self.ca)?)
        };
        let client_tls = match (self.cert.is_empty(), self.key.is_empty()) {
            (true, true) => None,
            (false, false) => Some(ClientTlsConfig {
                client_cert: certificates("tls.cert", &self.cert)?,
                client_key: private_key(&self.key)?,
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
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
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

    fn tls(ca: &str, cert: &str, key: &str) -> TlsSettings {
        TlsSettings {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }
    }

    #[test]
    fn unset_means_system_roots_and_set_needs_rediss() {
        assert!(TlsSettings::default().load(true).unwrap().is_none());
        assert!(TlsSettings::default().load(false).unwrap().is_none());
        let error = tls("/ca.pem", "", "").load(false).unwrap_err();
        assert_eq!(error.path, "tls");
    }

    #[test]
    fn errors_name_the_key() {
        let missing = tls("/nonexistent/ca.pem", "", "").load(true).unwrap_err();
        assert_eq!(missing.path, "tls.ca");
        assert!(
            missing
                .message
                .starts_with("cannot read /nonexistent/ca.pem: "),
            "{}",
            missing.message
        );
        assert_eq!(
            tls("", "", "/k.pem").load(true).unwrap_err().path,
            "tls.cert"
        );
        assert_eq!(
            tls("", "/c.pem", "").load(true).unwrap_err().path,
            "tls.key"
        );
    }

    #[test]
    fn files_without_certificate_or_key_are_refused() {
        let path = std::env::temp_dir().join(format!(
            "switchyard-redis-not-pem-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let path_text = path.display().to_string();
        let ca = tls(&path_text, "", "").load(true).unwrap_err();
        let key = tls("", &path_text, &path_text).load(true).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(ca.path, "tls.ca");
        assert!(ca.message.contains("no PEM certificate"), "{}", ca.message);
        assert_eq!(key.path, "tls.cert", "the certificate is checked first");
    }
}
