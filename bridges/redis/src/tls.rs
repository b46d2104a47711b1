//! `rediss://` with the bridge's `tls` settings (`switchyard_api::tls`): the checked files,
//! as the redis crate takes them. The redis crate checks the certificate against the URL's
//! host only, so `server_name` is refused.

use redis::{ClientTlsConfig, TlsCertificates};
use switchyard_api::tls::TlsSettings;
use switchyard_api::SettingError;

/// The certificates for the client library; `None` when nothing is set (the system's
/// authorities, no client certificate). `secure` says whether the URL is `rediss://`: the
/// setting means nothing otherwise.
pub fn certificates(
    settings: &TlsSettings,
    secure: bool,
) -> Result<Option<TlsCertificates>, SettingError> {
    if !settings.is_set() {
        return Ok(None);
    }
    if !secure {
        return Err(SettingError::new(
            "tls",
            "set, but the url is redis://; use rediss:// to connect with TLS",
        ));
    }
    settings.refuse_server_name()?;
    let files = settings.load()?;
    Ok(Some(TlsCertificates {
        root_cert: files.ca,
        client_tls: files.identity.map(|identity| ClientTlsConfig {
            client_cert: identity.cert_chain,
            client_key: identity.key,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_means_system_roots_and_set_needs_rediss() {
        assert!(certificates(&TlsSettings::default(), true)
            .unwrap()
            .is_none());
        let tls = TlsSettings {
            ca: "/ca.pem".into(),
            ..TlsSettings::default()
        };
        assert_eq!(certificates(&tls, false).unwrap_err().path, "tls");
        let named = TlsSettings {
            server_name: "cache.example".into(),
            ..TlsSettings::default()
        };
        assert_eq!(
            certificates(&named, true).unwrap_err().path,
            "tls.server_name"
        );
    }
}
