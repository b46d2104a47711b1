//! The `amqp` bridge over TLS (`amqps://`) against a private RabbitMQ node with a TLS
//! listener (the shared broker on 5672 has none and is left alone). Both of the bridge's
//! connections are covered: the publishing one (`out` rules, switchyard's own client on
//! tokio-rustls) and the consuming one (`in` rules, lapin's TLS).
//!
//! Certificates are made by `openssl` for each test (support::tls): a CA, a server
//! certificate for localhost/127.0.0.1, a client certificate, and an unrelated CA. The
//! hub connects to `amqps://...@localhost:TLS_PORT`; the test's own lapin client uses the
//! node's plain listener, so what it sees does not depend on the code under test's TLS.
//!
//! Each test starts its own node (five to ten seconds): nextest runs every test in a
//! process of its own, so a node shared through a static would be started once per test
//! anyway.

mod support;

use std::time::Duration;

use support::mqtt::MqttClient;
use support::rabbitmq::{next_delivery, Rabbit};
use support::rabbitmq_node::RabbitNode;
use support::tls::{tls_setting, Certificates};
use support::{free_port, free_ports, hub_with_broker, Hub};

/// The exchange every bridge here publishes to and binds to (declared by the bridges and
/// by the test; the node is private, so no name clash with other tests is possible).
const EXCHANGE: &str = "switchyard.tls";

/// How long a bridge may take to connect, or to report why it cannot (its connection
/// attempts are bounded by 10 s, and reconnect after at most 1 s here).
const BRIDGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A private node with a TLS listener, and the certificates it was made with.
struct TlsBroker {
    /// The node (plain listener for the test's client, TLS listener for the hub).
    node: RabbitNode,
    /// The TLS listener's port.
    tls_port: u16,
    /// CA, server and client certificates, and an unrelated CA.
    certificates: Certificates,
}

impl TlsBroker {
    /// Starts a node whose TLS listener verifies client certificates against the test CA,
    /// and refuses clients without one when `require_client_certificate`.
    fn start(require_client_certificate: bool) -> TlsBroker {
        let certificates = Certificates::generate();
        let tls_port = free_port();
        let node = RabbitNode::builder()
            .tls_listener(tls_port, &certificates, require_client_certificate)
            .start();
        TlsBroker {
            node,
            tls_port,
            certificates,
        }
    }

    /// `amqps://guest:guest@localhost:TLS_PORT/%2f`: a DNS name the server certificate
    /// carries (guest may log in over loopback only, which this is).
    fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.tls_port)
    }

    /// The test's own client, on the plain listener.
    async fn client(&self) -> Rabbit {
        let rabbit = Rabbit::connect_to(&self.node.amqp_url()).await;
        rabbit.exchange(EXCHANGE).await;
        rabbit
    }
}

/// An `amqp` bridge `name` to `url` with `tls` (a `tls_setting`), publishing `out/#` when
/// `out`, consuming `in/#` (from a queue the broker names) when `inbound`.
fn amqp_bridge(name: &str, url: &str, tls: &str, out: bool, inbound: bool) -> String {
    let mut table = format!(
        r##"
[bridges.{name}]
type = "amqp"
url = "{url}"
{tls}
exchange = "{EXCHANGE}"
declare_exchange = true
reconnect = {{ initial = "100ms", max = "1s" }}
"##
    );
    for (wanted, pattern, direction) in [(out, "out/#", "out"), (inbound, "in/#", "in")] {
        if wanted {
            table.push_str(&format!(
                "\n[[bridges.{name}.topics]]\npattern = \"{pattern}\"\ndirection = \"{direction}\"\nqos = 1\n"
            ));
        }
    }
    table
}

/// Starts a hub (embedded MQTT server `local`, then `bridges`) with extra environment
/// `env`; waits for `/readyz` when `ready`, else only for `/healthz`. Returns it and its
/// MQTT port.
fn start_hub(test: &str, bridges: &str, ready: bool, env: &[(&str, &str)]) -> (Hub, u16) {
    let [admin, mqtt] = free_ports::<2>();
    let mut builder =
        Hub::builder(admin).config(&hub_with_broker(test, admin, "local", mqtt, bridges));
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let hub = match ready {
        true => builder.start(),
        false => builder.start_unready(),
    };
    (hub, mqtt)
}

/// Message `index`'s payload: its number, then bytes that are not UTF-8, so that any
/// re-encoding on the way shows.
fn payload(index: usize) -> Vec<u8> {
    let mut bytes = format!("{index:05}:").into_bytes();
    bytes.extend((0..48).map(|offset| (index * 7 + offset * 37) as u8 | 0x80));
    bytes
}

/// Publishes `count` numbered payloads on `topic` at QoS 1, in order, through the hub's
/// MQTT server. Keep the client until they arrived: it sends them from its own task.
async fn publish_to_hub(mqtt: u16, client_id: &str, topic: &str, count: usize) -> MqttClient {
    let publisher = MqttClient::connect(mqtt, client_id).await;
    for index in 0..count {
        publisher.publish(topic, 1, false, payload(index)).await;
    }
    publisher
}

/// Checks the next `count` deliveries of `consumer`: routing key `key`, [`payload`]s in
/// order.
async fn expect_deliveries(consumer: &mut lapin::Consumer, key: &str, count: usize) {
    for index in 0..count {
        let delivery = next_delivery(consumer, &format!("message {index} of {count}")).await;
        assert_eq!(delivery.routing_key.as_str(), key);
        assert!(
            delivery.data == payload(index),
            "message {index} of {count} arrived as {:?}, expected {:?}",
            delivery.data,
            payload(index)
        );
    }
}

/// Checks that an MQTT subscriber gets `count` messages on `topic`, exactly as [`payload`]
/// made them, in order.
async fn expect_on_hub(subscriber: &mut MqttClient, topic: &str, count: usize) {
    for index in 0..count {
        let message = subscriber
            .next(&format!("message {index} of {count} on {topic}"))
            .await;
        assert_eq!(message.topic, topic);
        assert!(
            message.payload[..] == payload(index)[..],
            "message {index} of {count} arrived as {:?}, expected {:?}",
            message.payload,
            payload(index)
        );
    }
}

/// Checks that bridge `name` stays down (it retried at least twice and is still down)
/// while the hub serves: `/healthz` 200, `/readyz` 503 naming the bridge.
async fn assert_stays_down(hub: &Hub, name: &str) {
    hub.wait_for_metric_async(
        &format!(r#"switchyard_bridge_reconnects_total{{bridge="{name}"}}"#),
        |attempts| attempts >= 2.0,
        BRIDGE_TIMEOUT,
    )
    .await;
    let up = format!(r#"switchyard_bridge_up{{bridge="{name}"}}"#);
    assert_eq!(hub.metric_async(&up).await, Some(0.0), "{name} stays down");
    let (status, body) = hub.http_get_async("/healthz").await;
    assert_eq!(status, 200, "the hub stays up: {body}");
    let (status, body) = hub.http_get_async("/readyz").await;
    assert_eq!(status, 503, "not ready without {name}: {body}");
    assert!(body.contains(name), "/readyz names {name}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_rules_publish_over_amqps_byte_identical_and_in_order() {
    const MESSAGES: usize = 200;
    let broker = TlsBroker::start(false);
    let rabbit = broker.client().await;
    let mut consumer = rabbit.consume("published", EXCHANGE, &["out.#"]).await;
    let tls = tls_setting(&[("ca", &broker.certificates.ca)]);
    let bridge = amqp_bridge("rabbit", &broker.amqps_url(), &tls, true, false);
    let (hub, mqtt) = start_hub("amqps-out", &bridge, true, &[]);

    let _publisher = publish_to_hub(mqtt, "amqps-out-publisher", "out/tls/seq", MESSAGES).await;
    expect_deliveries(&mut consumer, "out.tls.seq", MESSAGES).await;
    hub.wait_for_metric_async(
        r#"switchyard_messages_sent_total{bridge="rabbit"}"#,
        |sent| sent == MESSAGES as f64,
        BRIDGE_TIMEOUT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_and_out_rules_both_run_over_amqps() {
    const MESSAGES: usize = 100;
    let broker = TlsBroker::start(false);
    let rabbit = broker.client().await;
    let mut consumer = rabbit.consume("published", EXCHANGE, &["out.#"]).await;
    let tls = tls_setting(&[("ca", &broker.certificates.ca)]);
    let bridge = amqp_bridge("rabbit", &broker.amqps_url(), &tls, true, true);
    // Ready means both connections are open and the bridge's queue is bound.
    let (_hub, mqtt) = start_hub("amqps-both", &bridge, true, &[]);

    let mut subscriber = MqttClient::connect(mqtt, "amqps-both-subscriber").await;
    subscriber.subscribe("in/#", 1).await;
    for index in 0..MESSAGES {
        let properties = lapin::BasicProperties::default();
        rabbit
            .publish(EXCHANGE, "in.tls.seq", &payload(index), properties)
            .await;
    }
    expect_on_hub(&mut subscriber, "in/tls/seq", MESSAGES).await;

    let _publisher = publish_to_hub(mqtt, "amqps-both-publisher", "out/tls/seq", MESSAGES).await;
    expect_deliveries(&mut consumer, "out.tls.seq", MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_or_for_another_name_keeps_both_connections_down() {
    let broker = TlsBroker::start(false);
    let url = broker.amqps_url();
    let wrong = tls_setting(&[("ca", &broker.certificates.other_ca)]);
    let right = tls_setting(&[("ca", &broker.certificates.ca)]);
    // `server_name` replaces the host as the name the certificate must carry, on both
    // connections: a name it does not carry is refused, and "localhost" is accepted when
    // connecting by address.
    let misnamed = tls_setting(&[
        ("ca", &broker.certificates.ca),
        ("server_name", "elsewhere.example"),
    ]);
    let named = tls_setting(&[
        ("ca", &broker.certificates.ca),
        ("server_name", "localhost"),
    ]);
    // The publishing connection alone and the consuming one alone, with the unrelated CA
    // and with none (the system's authorities, which do not include the test CA); and on
    // the same hub a control bridge with the right CA, connecting by address (the server
    // certificate names 127.0.0.1 too).
    let by_address = format!("amqps://guest:guest@127.0.0.1:{}/%2f", broker.tls_port);
    let bridges = [
        amqp_bridge("publisher", &url, &wrong, true, false),
        amqp_bridge("consumer", &url, &wrong, false, true),
        amqp_bridge("system_publisher", &url, "", true, false),
        amqp_bridge("system_consumer", &url, "", false, true),
        amqp_bridge("control", &by_address, &right, true, true),
        amqp_bridge("misnamed", &url, &misnamed, true, true),
        amqp_bridge("named", &by_address, &named, true, true),
    ]
    .concat();
    let (hub, mqtt) = start_hub("amqps-wrong-ca", &bridges, false, &[]);

    let refused = [
        "publisher",
        "consumer",
        "system_publisher",
        "system_consumer",
    ];
    let address = format!("localhost:{}", broker.tls_port);
    for name in refused {
        // The client refuses the certificate during the handshake: every attempt says so.
        let error = hub.wait_for_bridge_error(name, "", BRIDGE_TIMEOUT).await;
        assert!(
            error.to_lowercase().contains("certificate"),
            "{name}'s error says the certificate was refused: {error}"
        );
        assert!(
            error.contains("UnknownIssuer") || error.to_lowercase().contains("unknown issuer"),
            "{name}'s error says who issued it is unknown: {error}"
        );
        assert!(
            error.contains(&address),
            "{name}'s error names {address}: {error}"
        );
    }
    let error = hub
        .wait_for_bridge_error("misnamed", "", BRIDGE_TIMEOUT)
        .await;
    assert!(
        error.contains("NotValidForName") || error.to_lowercase().contains("not valid for name"),
        "misnamed's error says the certificate is not for elsewhere.example: {error}"
    );
    for name in refused.iter().chain(&["misnamed"]) {
        assert_stays_down(&hub, name).await;
    }
    for name in ["control", "named"] {
        hub.wait_for_metric_async(
            &format!(r#"switchyard_bridge_up{{bridge="{name}"}}"#),
            |up| up == 1.0,
            BRIDGE_TIMEOUT,
        )
        .await;
    }
    // The hub's own MQTT server still carries messages.
    let mut subscriber = MqttClient::connect(mqtt, "wrong-ca-subscriber").await;
    subscriber.subscribe("local/#", 1).await;
    let _publisher = publish_to_hub(mqtt, "wrong-ca-publisher", "local/check", 1).await;
    expect_on_hub(&mut subscriber, "local/check", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_requires_client_certificates_admits_only_bridges_with_one() {
    const MESSAGES: usize = 50;
    let broker = TlsBroker::start(true);
    let rabbit = broker.client().await;
    let mut consumer = rabbit.consume("published", EXCHANGE, &["out.#"]).await;
    let certificates = &broker.certificates;
    let url = broker.amqps_url();
    let with_certificate = tls_setting(&[
        ("ca", &certificates.ca),
        ("cert", &certificates.client_cert),
        ("key", &certificates.client_key),
    ]);
    let without = tls_setting(&[("ca", &certificates.ca)]);
    let bridges = [
        amqp_bridge("mutual", &url, &with_certificate, true, true),
        amqp_bridge("anonymous_publisher", &url, &without, true, false),
        amqp_bridge("anonymous_consumer", &url, &without, false, true),
    ]
    .concat();
    let (hub, mqtt) = start_hub("amqps-mutual", &bridges, false, &[]);

    // In TLS 1.3 the broker refuses a client without a certificate after the client
    // finished its handshake and started talking AMQP: the error is the broker's
    // `certificate_required` alert, except when the broker's close overtakes the alert and
    // the client sees only a reset (about one attempt in four on the test machine). So
    // the test waits for an attempt whose error names the certificate.
    for name in ["anonymous_publisher", "anonymous_consumer"] {
        let error = hub
            .wait_for_bridge_error(name, "CertificateRequired", BRIDGE_TIMEOUT)
            .await;
        assert!(
            error.contains(&format!("localhost:{}", broker.tls_port)),
            "{name}'s error names the broker: {error}"
        );
    }
    for name in ["anonymous_publisher", "anonymous_consumer"] {
        assert_stays_down(&hub, name).await;
    }

    // Both of `mutual`'s connections presented the client certificate.
    hub.wait_for_metric_async(
        r#"switchyard_bridge_up{bridge="mutual"}"#,
        |up| up == 1.0,
        BRIDGE_TIMEOUT,
    )
    .await;
    let mut subscriber = MqttClient::connect(mqtt, "mutual-subscriber").await;
    subscriber.subscribe("in/#", 1).await;
    for index in 0..MESSAGES {
        let properties = lapin::BasicProperties::default();
        rabbit
            .publish(EXCHANGE, "in.mutual", &payload(index), properties)
            .await;
    }
    expect_on_hub(&mut subscriber, "in/mutual", MESSAGES).await;
    let _publisher = publish_to_hub(mqtt, "mutual-publisher", "out/mutual", MESSAGES).await;
    expect_deliveries(&mut consumer, "out.mutual", MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_file_both_connections_trust_the_system_authorities() {
    const MESSAGES: usize = 20;
    let broker = TlsBroker::start(false);
    let rabbit = broker.client().await;
    let mut consumer = rabbit.consume("published", EXCHANGE, &["out.#"]).await;
    // The hub's "system" authorities are the test CA: SSL_CERT_FILE replaces the system
    // bundle for rustls-native-certs, which both connections' verifiers read.
    let system = [("SSL_CERT_FILE", broker.certificates.ca.as_str())];
    let bridge = amqp_bridge("rabbit", &broker.amqps_url(), "", true, true);
    // Ready means both connections are open and the bridge's queue is bound.
    let (_hub, mqtt) = start_hub("amqps-system", &bridge, true, &system);

    let mut subscriber = MqttClient::connect(mqtt, "system-subscriber").await;
    subscriber.subscribe("in/#", 1).await;
    for index in 0..MESSAGES {
        let properties = lapin::BasicProperties::default();
        rabbit
            .publish(EXCHANGE, "in.system", &payload(index), properties)
            .await;
    }
    expect_on_hub(&mut subscriber, "in/system", MESSAGES).await;
    let _publisher = publish_to_hub(mqtt, "system-publisher", "out/system", MESSAGES).await;
    expect_deliveries(&mut consumer, "out.system", MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_replaces_the_system_authorities_on_both_connections() {
    // README: `ca` is "the authorities to trust", not extra ones. lapin's own TLS setup
    // adds `ca` to the platform's roots, so the consuming connection uses the bridge's
    // rustls configuration instead. Here the "system" authorities are the test CA
    // (SSL_CERT_FILE) and `ca` is the unrelated one: both connections must refuse the
    // broker.
    let broker = TlsBroker::start(false);
    let system = [("SSL_CERT_FILE", broker.certificates.ca.as_str())];
    let url = broker.amqps_url();
    let pinned = tls_setting(&[("ca", &broker.certificates.other_ca)]);
    let bridges = [
        amqp_bridge("publisher", &url, &pinned, true, false),
        amqp_bridge("consumer", &url, &pinned, false, true),
    ]
    .concat();
    let (hub, _mqtt) = start_hub("amqps-pinned", &bridges, false, &system);
    for name in ["publisher", "consumer"] {
        let error = hub
            .wait_for_bridge_error(name, "UnknownIssuer", BRIDGE_TIMEOUT)
            .await;
        assert!(error.contains("certificate"), "{name}: {error}");
        assert_stays_down(&hub, name).await;
    }
}
