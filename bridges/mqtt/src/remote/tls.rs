//! TLS for `mqtts://` and `wss://`: the bridge's `tls = { ... }` settings become one rustls
//! client configuration ([`client_config`]), read once when the bridge is built, and
//! every address of the failover list that needs it gets it.

use std::sync::Arc;

use switchyard_api::tls::TlsSettings;
use switchyard_api::tls_client::client_config;
use switchyard_api::SettingError;

use super::connection::Endpoint;

use super::config::BrokerAddress;

/// Pairs every address with its TLS configuration, if it uses TLS; the configuration is
/// built (and its files read) only when an address needs it.
pub fn endpoints(
    settings: &TlsSettings,
    addresses: Vec<BrokerAddress>,
) -> Result<Vec<Endpoint>, SettingError> {
    let tls = if addresses.iter().any(|address| address.tls) {
        Some(Arc::new(client_config(settings)?))
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
        .map(|address| Endpoint {
            tls: tls.clone().filter(|_| address.tls),
            address,
        })
        .collect())
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
        let kinds: Vec<(bool, bool)> = endpoints
            .iter()
            .map(|endpoint| {
                let websocket = endpoint.address.websocket_url.is_some();
                (endpoint.tls.is_some(), websocket)
            })
            .collect();
        let expected = [(false, false), (false, true), (true, false), (true, true)];
        assert_eq!(kinds, expected);
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
