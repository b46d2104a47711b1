//! The `mqtt` bridge over TLS (`mqtts://`, `wss://`, mutual TLS) and over plain WebSockets,
//! against a private Mosquitto with extra listeners. The certificates are made by the
//! `openssl` command for each test: a CA, a server certificate for 127.0.0.1/localhost, a
//! client certificate, and an unrelated CA that must not be trusted.

mod support;

use std::time::Duration;

use support::mqtt::MqttClient;
use support::tls::{tls_setting, Certificates};
use support::{free_ports, hub_with_broker, wait_for_port, Hub, Mosquitto};

/// How long a bridge may take to connect, or to report why it cannot.
const BRIDGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long Mosquitto's extra listeners may take to accept after its first one does.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(10);

/// Mosquitto configuration lines for a TLS listener on `port` with the test certificates;
/// `require_certificate` asks clients for one signed by the test CA.
fn tls_listener(port: u16, certificates: &Certificates, require_certificate: bool) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         cafile {}\n\
         certfile {}\n\
         keyfile {}\n\
         require_certificate {require_certificate}\n",
        certificates.ca, certificates.server_cert, certificates.server_key
    )
}

/// A Mosquitto whose configuration adds `extra_listeners`, waiting until `port` (one of
/// them) accepts too.
fn mosquitto_with(extra_listeners: &str, port: u16) -> Mosquitto {
    let broker = Mosquitto::start_with(extra_listeners);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_for_port(addr, LISTENER_TIMEOUT),
        "mosquitto's extra listener on {addr} did not accept within {LISTENER_TIMEOUT:?}"
    );
    broker
}

/// A hub named `site` with an embedded broker on `local`, and `bridges` (TOML tables).
fn hub_config(admin: u16, local: u16, bridges: &str) -> String {
    hub_with_broker("site", admin, "local", local, bridges)
}

/// An `mqtt` bridge `name` to `url` passing `crossing/#` both ways at QoS 1, with `extra`
/// settings.
fn bridge(name: &str, url: &str, extra: &str) -> String {
    format!(
        r##"
[bridges.{name}]
type = "mqtt"
url = "{url}"
reconnect = {{ initial = "100ms", max = "1s" }}
{extra}

[[bridges.{name}.topics]]
pattern = "crossing/#"
direction = "both"
qos = 1
"##
    )
}

/// Starts a hub whose bridge `central` connects to `remote` by `url`, and checks that
/// messages cross both ways: hub to remote, then remote to hub.
async fn messages_cross_both_ways(remote: &Mosquitto, url: &str, extra: &str) {
    // The bridge publishes its state after subscribing: once the state is seen, the
    // remote broker has the bridge's subscription.
    let mut remote_state = MqttClient::connect(remote.port(), "state-watcher").await;
    remote_state
        .subscribe("switchyard/site/bridges/central/state", 1)
        .await;
    let [admin, local] = free_ports::<2>();
    let hub = Hub::start(
        &hub_config(admin, local, &bridge("central", url, extra)),
        admin,
    );
    let state = remote_state.next("the bridge's state on the remote").await;
    assert_eq!(&state.payload[..], b"1");

    let mut on_remote = MqttClient::connect(remote.port(), "remote-observer").await;
    on_remote.subscribe("crossing/#", 1).await;
    let mut on_hub = MqttClient::connect(local, "hub-observer").await;
    on_hub.subscribe("crossing/#", 1).await;

    let hub_publisher = MqttClient::connect(local, "hub-publisher").await;
    hub_publisher
        .publish("crossing/up", 1, false, "from the hub")
        .await;
    let seen = on_remote.until_topic("crossing/up").await;
    assert_eq!(seen.len(), 1, "the remote saw {seen:?}");
    assert_eq!(&seen[0].payload[..], b"from the hub");

    let remote_publisher = MqttClient::connect(remote.port(), "remote-publisher").await;
    remote_publisher
        .publish("crossing/down", 1, false, "from the remote")
        .await;
    let seen = on_hub.until_topic("crossing/down").await;
    assert_eq!(
        &seen
            .last()
            .map(|message| message.payload.clone())
            .unwrap_or_default()[..],
        b"from the remote"
    );
    assert_eq!(
        hub.metric(r#"switchyard_bridge_up{bridge="central"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn mqtts_with_the_test_ca_carries_messages_both_ways() {
    let certificates = Certificates::generate();
    let [tls_port] = free_ports::<1>();
    let remote = mosquitto_with(&tls_listener(tls_port, &certificates, false), tls_port);
    messages_cross_both_ways(
        &remote,
        &format!("mqtts://127.0.0.1:{tls_port}"),
        &tls_setting(&[("ca", &certificates.ca)]),
    )
    .await;
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate_over_mqtt_3_1_1() {
    let certificates = Certificates::generate();
    let [tls_port] = free_ports::<1>();
    let remote = mosquitto_with(&tls_listener(tls_port, &certificates, true), tls_port);
    // Also checks the name override: the host is an address, the name checked is localhost.
    let extra = format!(
        "protocol = \"v4\"\n{}",
        tls_setting(&[
            ("ca", &certificates.ca),
            ("cert", &certificates.client_cert),
            ("key", &certificates.client_key),
            ("server_name", "localhost"),
        ])
    );
    messages_cross_both_ways(&remote, &format!("mqtts://127.0.0.1:{tls_port}"), &extra).await;
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_keeps_the_bridge_down() {
    let certificates = Certificates::generate();
    let [tls_port, admin, local] = free_ports::<3>();
    let remote = mosquitto_with(&tls_listener(tls_port, &certificates, true), tls_port);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let (cert, key) = (
        certificates.client_cert.as_str(),
        certificates.client_key.as_str(),
    );
    let bridges = [
        bridge(
            "wrong_ca",
            &url,
            &tls_setting(&[("ca", &certificates.other_ca), ("cert", cert), ("key", key)]),
        ),
        bridge(
            "wrong_name",
            &url,
            &tls_setting(&[
                ("ca", &certificates.ca),
                ("cert", cert),
                ("key", key),
                ("server_name", "elsewhere.example"),
            ]),
        ),
        bridge(
            "no_client_cert",
            &url,
            &format!(
                "required = false\n{}",
                tls_setting(&[("ca", &certificates.ca)])
            ),
        ),
    ]
    .concat();
    let hub = Hub::start_unready(&hub_config(admin, local, &bridges), admin);

    for name in ["wrong_ca", "wrong_name"] {
        let error = hub.wait_for_bridge_error(name, "", BRIDGE_TIMEOUT).await;
        assert!(
            error.contains("certificate"),
            "{name}: the error names the certificate: {error}"
        );
        assert_eq!(
            hub.metric(&format!(r#"switchyard_bridge_up{{bridge="{name}"}}"#)),
            Some(0.0)
        );
    }
    // Mosquitto refuses the connection with a "certificate required" alert.
    let error = hub
        .wait_for_bridge_error("no_client_cert", "", BRIDGE_TIMEOUT)
        .await;
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the missing certificate: {error}"
    );
    let body = hub
        .wait_for_http_async("/readyz", 503, Duration::from_secs(5))
        .await;
    assert!(body.contains("wrong_ca"), "readyz names the bridge: {body}");
    assert!(
        !body.contains("no_client_cert"),
        "a bridge that is not required is not waited for: {body}"
    );
    drop(remote);
}

#[tokio::test]
async fn websocket_urls_carry_messages_both_ways() {
    let [ws_port] = free_ports::<1>();
    let remote = mosquitto_with(
        &format!("listener {ws_port} 127.0.0.1\nprotocol websockets\n"),
        ws_port,
    );
    messages_cross_both_ways(&remote, &format!("ws://127.0.0.1:{ws_port}/mqtt"), "").await;
}

#[tokio::test]
async fn secure_websocket_urls_carry_messages_both_ways() {
    let certificates = Certificates::generate();
    let [wss_port] = free_ports::<1>();
    let listener = tls_listener(wss_port, &certificates, false);
    let remote = mosquitto_with(&format!("{listener}protocol websockets\n"), wss_port);
    messages_cross_both_ways(
        &remote,
        &format!("wss://127.0.0.1:{wss_port}/mqtt"),
        &tls_setting(&[("ca", &certificates.ca)]),
    )
    .await;
}
