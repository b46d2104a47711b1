//! The `redis` bridge against private redis-servers that demand credentials or TLS, with
//! redis-cli on the other end: `requirepass` and ACL users (and wrong or missing
//! credentials, which keep the bridge down with a clear error), `database` for streams,
//! and `rediss://` with a CA the test makes (one-way and mutual TLS, and certificates the
//! bridge must refuse).

mod support;

use std::time::Duration;

use support::mqtt::MqttClient;
use support::redis::RedisServer;
use support::tls::{tls_setting, Certificates};
use support::{free_ports, hub_with_broker, poll, Hub, TestDir};

/// How long a test waits for something it polls.
const WAIT: Duration = Duration::from_secs(30);

/// How long a bridge may take to report why it cannot connect.
const BRIDGE_TIMEOUT: Duration = Duration::from_secs(20);

/// A hub with an embedded MQTT broker on `mqtt` (everything both ways, QoS 1) and the
/// bridges in `bridges`.
fn hub_config(admin: u16, mqtt: u16, bridges: &str) -> String {
    hub_with_broker("redis-auth-test", admin, "mqtt", mqtt, bridges)
}

/// A pub/sub `redis` bridge `name` to `url` with `extra` settings: channel `NAME.in` comes
/// in as `NAME/in`, hub topic `NAME/out` goes out (so both of its connections are made).
fn bridge(name: &str, url: &str, extra: &str) -> String {
    format!(
        r##"
[bridges.{name}]
type = "redis"
url = "{url}"
reconnect = {{ initial = "100ms", max = "1s" }}
{extra}

[[bridges.{name}.topics]]
pattern = "{name}/in"
direction = "in"

[[bridges.{name}.topics]]
pattern = "{name}/out"
direction = "out"
qos = 1
"##
    )
}

/// Checks that bridge `name` stays down: its error satisfies `expected` (described by
/// `what`), `switchyard_bridge_up` is 0 and `/readyz` names it.
async fn assert_down(hub: &Hub, name: &str, what: &str, expected: impl Fn(&str) -> bool) {
    let error = hub.wait_for_bridge_error(name, "", BRIDGE_TIMEOUT).await;
    assert!(expected(&error), "{name}: the error {what}: {error}");
    assert_eq!(
        hub.metric_async(&format!(r#"switchyard_bridge_up{{bridge="{name}"}}"#))
            .await,
        Some(0.0),
        "{name} is down"
    );
    let body = hub
        .wait_for_http_async("/readyz", 503, BRIDGE_TIMEOUT)
        .await;
    assert!(body.contains(name), "/readyz names {name}: {body}");
}

/// Waits until bridge `name` is up.
async fn wait_up(hub: &Hub, name: &str) {
    hub.wait_for_metric_async(
        &format!(r#"switchyard_bridge_up{{bridge="{name}"}}"#),
        |up| up == 1.0,
        WAIT,
    )
    .await;
}

/// Both directions of bridge `name` (which must be up): redis-cli (`cli`: its credential
/// and TLS options) publishes to `NAME.in` and a hub client receives it; a hub message on
/// `NAME/out` is accepted by Redis (the bridge counts it sent once Redis answered).
async fn messages_cross(hub: &Hub, redis: &RedisServer, mqtt: u16, name: &str, cli: &[&str]) {
    let mut local = MqttClient::connect(mqtt, &format!("{name}-observer")).await;
    local.subscribe(&format!("{name}/in"), 1).await;
    let channel = format!("{name}.in");
    let publish = [cli, &["PUBLISH", &channel, "through"]].concat();
    let receivers = redis.cli(&publish);
    assert_eq!(receivers.trim(), "1", "{name} is subscribed to {channel}");
    let message = local.next(&format!("{name}/in from Redis")).await;
    assert_eq!(message.topic, format!("{name}/in"));
    assert_eq!(&message.payload[..], b"through");

    let publisher = MqttClient::connect(mqtt, &format!("{name}-publisher")).await;
    publisher
        .publish(&format!("{name}/out"), 1, false, "outward")
        .await;
    hub.wait_for_metric_async(
        &format!(r#"switchyard_messages_sent_total{{bridge="{name}"}}"#),
        |sent| sent == 1.0,
        WAIT,
    )
    .await;
}

/// redis-cli options for the default user with password `secret`.
const DEFAULT_USER: [&str; 3] = ["-a", "secret", "--no-auth-warning"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_acl_user_connect_and_wrong_credentials_keep_the_bridge_down() {
    let redis = RedisServer::start_with(&[
        "--requirepass",
        "secret",
        "--user",
        "alice",
        "on",
        ">wonderland",
        "~*",
        "&*",
        "+@all",
    ]);
    let [admin, mqtt] = free_ports::<2>();
    let url = redis.url();
    // alice's password comes from a file, as a mounted container secret would.
    let secrets = TestDir::new("redis-secrets");
    let alice_password = secrets.write("alice", "wonderland\n");
    let bridges = [
        bridge("by_password", &url, r#"password = "secret""#),
        bridge(
            "by_acl",
            &url,
            &format!(
                "username = \"alice\"\npassword_file = {:?}",
                alice_password.display().to_string()
            ),
        ),
        bridge("wrong_password", &url, r#"password = "not-the-secret""#),
        bridge(
            "wrong_acl",
            &url,
            "username = \"alice\"\npassword = \"not-wonderland\"",
        ),
        bridge("no_password", &url, ""),
    ]
    .concat();
    let hub = Hub::start_unready(&hub_config(admin, mqtt, &bridges), admin);

    wait_up(&hub, "by_password").await;
    wait_up(&hub, "by_acl").await;
    messages_cross(&hub, &redis, mqtt, "by_password", &DEFAULT_USER).await;
    let alice = [
        "--user",
        "alice",
        "--pass",
        "wonderland",
        "--no-auth-warning",
    ];
    messages_cross(&hub, &redis, mqtt, "by_acl", &alice).await;
    // Both of by_acl's connections (pub/sub and publishing) are alice's.
    let clients = redis.cli(&[&DEFAULT_USER[..], &["CLIENT", "LIST"]].concat());
    let as_alice = clients
        .lines()
        .filter(|line| line.contains(" user=alice "))
        .count();
    assert_eq!(as_alice, 2, "CLIENT LIST:\n{clients}");

    for name in ["wrong_password", "wrong_acl"] {
        assert_down(&hub, name, "says the credentials were refused", |error| {
            error.contains("authentication failed")
                && error.contains("check the bridge's username and password")
                && !error.contains("not-")
        })
        .await;
    }
    assert_down(&hub, "no_password", "says a password is needed", |error| {
        error.contains("NOAUTH") && error.contains("check the bridge's username and password")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_read_and_write_the_configured_database() {
    const DATABASE: &str = "3";
    let redis = RedisServer::start();
    let [admin, mqtt] = free_ports::<2>();
    let bridges = format!(
        r##"
[bridges.store]
type = "redis"
url = "{url}"
mode = "streams"
database = {DATABASE}

[[bridges.store.topics]]
pattern = "orders"
direction = "in"
qos = 1
local_prefix = "store/"

[[bridges.store.topics]]
pattern = "receipts"
direction = "out"
qos = 1
"##,
        url = redis.url()
    );
    let _hub = Hub::start(&hub_config(admin, mqtt, &bridges), admin);
    // Ready means the consumer group exists: in database 3, not in 0.
    let groups = redis.cli(&["-n", DATABASE, "XINFO", "GROUPS", "orders"]);
    assert!(groups.contains("switchyard"), "XINFO GROUPS: {groups}");
    assert_eq!(redis.cli(&["-n", "0", "EXISTS", "orders"]).trim(), "0");

    let mut local = MqttClient::connect(mqtt, "store-observer").await;
    local.subscribe("store/#", 1).await;
    redis.cli(&["-n", DATABASE, "XADD", "orders", "*", "payload", "in db 3"]);
    let message = local.next("the entry from database 3").await;
    assert_eq!(message.topic, "store/orders");
    assert_eq!(&message.payload[..], b"in db 3");

    let publisher = MqttClient::connect(mqtt, "store-publisher").await;
    publisher.publish("receipts", 1, false, "paid").await;
    let entries = poll(WAIT, || {
        let length = redis.cli(&["-n", DATABASE, "XLEN", "receipts"]);
        (length.trim() == "1").then_some(()).ok_or(length)
    });
    entries.unwrap_or_else(|length| panic!("receipts in database 3 has {length} entries"));
    assert_eq!(redis.cli(&["-n", "0", "EXISTS", "receipts"]).trim(), "0");
}

/// A redis-server speaking only TLS with the test certificates, trusting the test CA for
/// client certificates, which it demands when `clients_must_present` is true.
fn tls_redis(certificates: &Certificates, clients_must_present: bool) -> RedisServer {
    let auth_clients = if clients_must_present { "yes" } else { "no" };
    RedisServer::start_tls(&[
        "--tls-cert-file",
        &certificates.server_cert,
        "--tls-key-file",
        &certificates.server_key,
        "--tls-ca-cert-file",
        &certificates.ca,
        "--tls-auth-clients",
        auth_clients,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_the_configured_ca_and_refuses_other_certificates() {
    let certificates = Certificates::generate();
    let redis = tls_redis(&certificates, false);
    let [admin, mqtt] = free_ports::<2>();
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let (ca, other_ca) = (certificates.ca.clone(), certificates.other_ca.clone());
    let bridges = [
        bridge("trusting", &url, &tls_setting(&[("ca", &ca)])),
        bridge("system_roots", &url, ""),
        bridge("other_ca", &url, &tls_setting(&[("ca", &other_ca)])),
    ]
    .concat();
    let hub = Hub::start_unready(&hub_config(admin, mqtt, &bridges), admin);

    wait_up(&hub, "trusting").await;
    let cli = ["--tls", "--cacert", ca.as_str()];
    messages_cross(&hub, &redis, mqtt, "trusting", &cli).await;
    for name in ["system_roots", "other_ca"] {
        assert_down(&hub, name, "names the certificate", |error| {
            error.contains("certificate")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let certificates = Certificates::generate();
    let redis = tls_redis(&certificates, true);
    let [admin, mqtt] = free_ports::<2>();
    let url = redis.url();
    let (ca, cert, key) = (
        certificates.ca.clone(),
        certificates.client_cert.clone(),
        certificates.client_key.clone(),
    );
    let bridges = [
        bridge(
            "identified",
            &url,
            &tls_setting(&[("ca", &ca), ("cert", &cert), ("key", &key)]),
        ),
        bridge("anonymous", &url, &tls_setting(&[("ca", &ca)])),
    ]
    .concat();
    let hub = Hub::start_unready(&hub_config(admin, mqtt, &bridges), admin);

    wait_up(&hub, "identified").await;
    let cli = ["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key];
    messages_cross(&hub, &redis, mqtt, "identified", &cli).await;
    // Redis ends the handshake of a client without a certificate with an alert (TLS 1.3's
    // `certificate_required`, RFC 8446 section 6.2).
    assert_down(
        &hub,
        "anonymous",
        "names the missing certificate",
        |error| error.to_lowercase().contains("certificate"),
    )
    .await;
}
