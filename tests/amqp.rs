//! The `amqp` bridge against the machine's RabbitMQ (127.0.0.1:5672, guest/guest), with
//! real clients: lapin and Python's pika on the AMQP side, MQTT 5 clients on the other.
//! Every test uses its own exchange, queues and connection names (process id + test
//! name), so tests can share the broker; a test that cuts a connection cuts only its
//! hub's, found by its connection name.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use support::mqtt::MqttClient;
use support::proxy::TcpProxy;
use support::rabbitmq::{
    close_connection_named, next_delivery, queue_counts, unique, Rabbit, AMQP_TIMEOUT, TOOL_TIMEOUT,
};
use support::{free_port, free_ports, python, run_hub_command, run_with_timeout, Hub};

/// Messages each way in the fault test.
const FAULT_MESSAGES: usize = 10_000;

/// The fault test's publishers send this many messages per [`PACE_TICK`] (4,000 a second
/// each way), so that the cut finds both directions mid-stream: an open-loop load, not a
/// synchronisation.
const PACE_BURST: usize = 100;

/// See [`PACE_BURST`].
const PACE_TICK: Duration = Duration::from_millis(25);

/// `[hub]`, `[admin]` and an embedded MQTT server `local` passing everything both ways.
fn hub_with_mqtt(hub: &str, admin: u16, mqtt: u16) -> String {
    format!(
        r##"
[hub]
name = "{hub}"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.local]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"
client_queue = 50000

[[bridges.local.topics]]
pattern = "#"
direction = "both"
qos = 1
"##
    )
}

fn counter(hub: &Hub, name: &str, bridge: &str) -> f64 {
    hub.metric(&format!("switchyard_{name}{{bridge=\"{bridge}\"}}"))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_keys_and_routing_keys_follow_the_rules() {
    let (exchange, queue, probe) = (unique("keys.x"), unique("keys.q"), unique("keys.probe"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let [admin, mqtt] = free_ports::<2>();
    let config = format!(
        r##"{}
[bridges.rabbit]
type = "amqp"
exchange = "{exchange}"
declare_exchange = true
amqp_queue = {{ name = "{queue}", durable = false, auto_delete = true }}
connection_name = "{queue}"

[[bridges.rabbit.topics]]
pattern = "+/important"
direction = "in"
qos = 1
local_prefix = "site/"

[[bridges.rabbit.topics]]
pattern = "#"
direction = "in"
qos = 1
local_prefix = "fedora/prod/"
remote_prefix = "org.fedoraproject.prod."

[[bridges.rabbit.topics]]
pattern = "esc/#"
direction = "in"
qos = 1

[[bridges.rabbit.topics]]
pattern = "+"
direction = "in"
local_prefix = "coarse/"
remote_prefix = "coarse.pre"

[[bridges.rabbit.topics]]
pattern = "gerrit/#"
direction = "out"
qos = 1

[[bridges.rabbit.topics]]
pattern = "+/status"
direction = "out"
qos = 1
local_prefix = "dev/"
remote_prefix = "devices."
"##,
        hub_with_mqtt("keys", admin, mqtt)
    );
    let hub = Hub::start(&config, admin);
    let check = run_hub_command(&[
        "check",
        "-c",
        hub.config_files()[0].to_str().expect("UTF-8 path"),
    ]);
    let printed = String::from_utf8_lossy(&check.stdout);
    for key in [
        "binding key *.important",
        "binding key org.fedoraproject.prod.#",
        "binding key esc.#",
        "binding key coarse.#",
    ] {
        assert!(printed.contains(key), "`check` shows {key:?}:\n{printed}");
    }

    // In: routing keys become hub topics.
    let mut subscriber = MqttClient::connect(mqtt, "keys-subscriber").await;
    subscriber.subscribe("#", 1).await;
    let published = [
        ("a.important", Some("site/a/important")),
        ("a.b.important", None),
        (
            "org.fedoraproject.prod.git.receive",
            Some("fedora/prod/git/receive"),
        ),
        ("esc.a%2Eb.c", Some("esc/a.b/c")),
        ("coarse.other", None),
        ("coarse.prefix", Some("coarse/fix")),
    ];
    for (key, _) in published {
        rabbit
            .publish(&exchange, key, key.as_bytes(), BasicProperties::default())
            .await;
    }
    let mut expected: HashSet<&str> = published.iter().filter_map(|(_, topic)| *topic).collect();
    while !expected.is_empty() {
        let message = subscriber.next(&format!("one of {expected:?}")).await;
        assert!(
            expected.remove(message.topic.as_str()),
            "unexpected {:?}",
            message.topic
        );
    }
    // `coarse.other` passed the coarse binding but no rule: acknowledged, not counted.
    let received = hub
        .wait_for_metric_async(
            r#"switchyard_messages_received_total{bridge="rabbit"}"#,
            |n| n >= 4.0,
            AMQP_TIMEOUT,
        )
        .await;
    assert_eq!(received, 4.0);
    support::poll_async(AMQP_TIMEOUT, || async {
        match queue_counts(&queue) {
            Some((0, 0)) => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the hub's queue still holds messages: {last:?}"));

    // Out: hub topics become routing keys, escaped.
    let mut consumer = rabbit
        .consume(&probe, &exchange, &["gerrit.#", "devices.#"])
        .await;
    let publisher = MqttClient::connect(mqtt, "keys-publisher").await;
    for topic in [
        "other/ignored",
        "gerrit/openstack/nova/comment-added",
        "dev/a.b/status",
    ] {
        publisher.publish(topic, 1, false, topic.to_owned()).await;
    }
    let mut keys = HashSet::new();
    for _ in 0..2 {
        let delivery = next_delivery(&mut consumer, "a gerrit or device message").await;
        keys.insert(delivery.routing_key.to_string());
    }
    assert_eq!(
        keys,
        HashSet::from([
            "gerrit.openstack.nova.comment-added".to_owned(),
            "devices.a%2Eb.status".to_owned()
        ])
    );
    rabbit.delete(&[&exchange], &[&probe]).await;
}

/// Hub `name` with a `broker` bridge (format json) to `mosquitto_url` and an amqp bridge on
/// `exchange`; `rules` are the rules of both.
fn json_hub(name: &str, admin: u16, mosquitto_url: &str, amqp: &str, rules: &str) -> String {
    format!(
        r##"
[hub]
name = "{name}"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.broker]
type = "mqtt"
url = "{mosquitto_url}"
format = "json"
reconnect = {{ initial = "100ms", max = "1s" }}

[bridges.rabbit]
type = "amqp"
reconnect = {{ initial = "100ms", max = "1s" }}
{amqp}

{rules}
"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_amqp_to_mqtt_keeps_payload_id_and_headers() {
    let (exchange, queue) = (unique("trip.x"), unique("trip.q"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let mosquitto = support::Mosquitto::start();
    // Hub B: AMQP -> MQTT. Started first, so its queue is bound before A publishes.
    let [admin_a, admin_b] = free_ports::<2>();
    let hub_b = Hub::start(
        &json_hub(
            "trip-b",
            admin_b,
            &mosquitto.url(),
            &format!(
                "exchange = \"{exchange}\"\ndeclare_exchange = true\n\
                 amqp_queue = {{ name = \"{queue}\", durable = false, auto_delete = true }}"
            ),
            r##"
[[bridges.rabbit.topics]]
pattern = "#"
direction = "in"
qos = 1
remote_prefix = "rt.out."
local_prefix = "rt/back/"

[[bridges.broker.topics]]
pattern = "rt/back/#"
direction = "out"
qos = 1
"##,
        ),
        admin_b,
    );
    // Hub A: MQTT -> AMQP.
    let hub_a = Hub::start(
        &json_hub(
            "trip-a",
            admin_a,
            &mosquitto.url(),
            &format!("exchange = \"{exchange}\"\ndeclare_exchange = true"),
            r##"
[[bridges.broker.topics]]
pattern = "rt/out/#"
direction = "in"
qos = 1

[[bridges.rabbit.topics]]
pattern = "rt/out/#"
direction = "out"
qos = 1
"##,
        ),
        admin_a,
    );
    let mut client = MqttClient::connect(mosquitto.port(), "trip-client").await;
    client.subscribe("rt/back/#", 1).await;
    let sent = r#"{"topic":"rt/out/x","payload_base64":"AAH/","id":"trip-id-1","headers":{"k":"v","trace":"t-9"}}"#;
    client
        .publish("rt/out/x", 1, false, sent.as_bytes().to_vec())
        .await;
    let back = client
        .until_topic("rt/back/x")
        .await
        .pop()
        .expect("the round trip");
    let envelope: serde_json::Value =
        serde_json::from_slice(&back.payload).expect("a JSON envelope");
    assert_eq!(envelope["payload_base64"], "AAH/", "{envelope}");
    assert_eq!(envelope["id"], "trip-id-1", "{envelope}");
    assert_eq!(envelope["headers"]["k"], "v", "{envelope}");
    assert_eq!(envelope["headers"]["trace"], "t-9", "{envelope}");
    assert_eq!(
        envelope["headers"]["x-switchyard-origin"], "trip-a",
        "{envelope}"
    );
    // Hub A counts the message sent on RabbitMQ's confirm, which may come after B is done.
    let sent = r#"switchyard_messages_sent_total{bridge="rabbit"}"#;
    let received = r#"switchyard_messages_received_total{bridge="rabbit"}"#;
    let one = |n: f64| n == 1.0;
    hub_a.wait_for_metric_async(sent, one, AMQP_TIMEOUT).await;
    hub_b
        .wait_for_metric_async(received, one, AMQP_TIMEOUT)
        .await;
    drop((hub_a, hub_b));
    rabbit.delete(&[&exchange], &[]).await;
}

/// Runs a script of tests/python with the test virtualenv's Python; its stdout.
async fn run_python(script: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let output = run_with_timeout(
            Command::new(python())
                .arg(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/python")
                        .join(script),
                )
                .args(&args),
            TOOL_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "python: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .expect("the Python run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedora_messaging_both_ways_with_pika() {
    let (exchange, queue, probe) = (unique("fm.x"), unique("fm.q"), unique("fm.probe"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    rabbit
        .declare_queue(&probe, &exchange, &["org.fedoraproject.test.#"])
        .await;
    let [admin, mqtt] = free_ports::<2>();
    let config = format!(
        r##"{}
[bridges.rabbit]
type = "amqp"
format = "fedora-messaging"
exchange = "{exchange}"
amqp_queue = {{ name = "{queue}", durable = false, auto_delete = true }}

[[bridges.rabbit.topics]]
pattern = "#"
direction = "in"
qos = 1
local_prefix = "fedora/prod/"
remote_prefix = "org.fedoraproject.prod."

[[bridges.rabbit.topics]]
pattern = "#"
direction = "out"
qos = 1
local_prefix = "fedora/test/"
remote_prefix = "org.fedoraproject.test."
"##,
        hub_with_mqtt("fm", admin, mqtt)
    );
    let hub = Hub::start(&config, admin);
    let mut subscriber = MqttClient::connect(mqtt, "fm-subscriber").await;
    subscriber.subscribe("fedora/prod/#", 1).await;

    // In: what fedora-messaging publishes arrives on MQTT with the body intact.
    let body = r#"{"commit": {"repo": "rpms/kernel", "rev": "a1b2"}, "agent": "jcline"}"#;
    let id = run_python(
        "fedora_messaging_publish.py",
        vec![
            exchange.clone(),
            "org.fedoraproject.prod.git.receive".into(),
            body.into(),
        ],
    )
    .await;
    let message = subscriber.next("the fedora-messaging message").await;
    assert_eq!(message.topic, "fedora/prod/git/receive");
    assert_eq!(message.payload, body.as_bytes());
    let property = |name: &str| {
        message
            .properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(property("fedora_messaging_schema"), Some("base.message"));
    assert_eq!(property("fedora_messaging_severity"), Some("20"));
    assert_eq!(property("fedora_messaging_user_jcline"), Some("true"));
    assert!(property("sent-at").is_some_and(|at| at.ends_with("+00:00")));
    assert!(!id.trim().is_empty());

    // Out: what switchyard publishes has every property and header fedora-messaging sets.
    let publisher = MqttClient::connect(mqtt, "fm-publisher").await;
    let update = r#"{"update": {"alias": "FEDORA-2026-1"}}"#;
    publisher
        .publish("fedora/test/bodhi/update/comment", 1, false, update)
        .await;
    hub.wait_for_metric_async(
        r#"switchyard_messages_sent_total{bridge="rabbit"}"#,
        |n| n >= 1.0,
        AMQP_TIMEOUT,
    )
    .await;
    let seen: serde_json::Value =
        serde_json::from_str(&run_python("fedora_messaging_get.py", vec![probe.clone()]).await)
            .expect("JSON from pika");
    assert_eq!(
        seen["routing_key"], "org.fedoraproject.test.bodhi.update.comment",
        "{seen}"
    );
    assert_eq!(seen["body"], update, "{seen}");
    assert_eq!(seen["content_type"], "application/json", "{seen}");
    assert_eq!(seen["content_encoding"], "utf-8", "{seen}");
    assert_eq!(seen["delivery_mode"], 2, "{seen}");
    assert_eq!(seen["priority"], 0, "{seen}");
    let message_id = seen["message_id"].as_str().expect("a message id");
    assert_eq!(message_id.len(), 36, "a UUID: {message_id}");
    assert_eq!(&message_id[14..15], "4", "a version 4 UUID: {message_id}");
    assert_eq!(
        seen["headers"]["fedora_messaging_schema"], "base.message",
        "{seen}"
    );
    assert_eq!(seen["headers"]["fedora_messaging_severity"], 20, "{seen}");
    assert_eq!(seen["types"]["fedora_messaging_severity"], "int", "{seen}");
    assert_eq!(seen["headers"]["priority"], 0, "{seen}");
    let sent_at = seen["headers"]["sent-at"].as_str().expect("sent-at");
    assert!(
        sent_at.len() == 25 && sent_at.ends_with("+00:00"),
        "RFC 3339 without fraction: {sent_at}"
    );
    rabbit.delete(&[&exchange], &[&probe]).await;
}

/// The distinct sequence numbers in `payloads`, checking that their first occurrences
/// come in order (duplicates, allowed for QoS 1, may repeat earlier numbers).
fn check_in_order(payloads: &[usize], what: &str) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut last = None;
    for &number in payloads {
        if seen.insert(number) {
            assert!(
                last.is_none_or(|previous| number > previous),
                "{what}: {number} arrived after {last:?}"
            );
            last = Some(number);
        }
    }
    seen
}

fn sequence_number(payload: &[u8]) -> usize {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.parse().ok())
        .expect("a sequence number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_connection_mid_stream_loses_nothing() {
    let (exchange, queue, probe) = (unique("fault.x"), unique("fault.q"), unique("fault.probe"));
    let connection_name = unique("fault.hub");
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let mut from_hub = rabbit.consume(&probe, &exchange, &["f.up.#"]).await;
    let [admin, mqtt] = free_ports::<2>();
    let config = format!(
        r##"{}
[bridges.rabbit]
type = "amqp"
exchange = "{exchange}"
declare_exchange = true
amqp_queue = {{ name = "{queue}", durable = false, auto_delete = false }}
connection_name = "{connection_name}"
reconnect = {{ initial = "100ms", max = "1s" }}

[[bridges.rabbit.topics]]
pattern = "f/up/#"
direction = "out"
qos = 1

[[bridges.rabbit.topics]]
pattern = "#"
direction = "in"
qos = 1
remote_prefix = "f.down."
local_prefix = "f/down/"
"##,
        hub_with_mqtt("fault", admin, mqtt)
    );
    let hub = Hub::start(&config, admin);
    let mut to_mqtt = MqttClient::connect(mqtt, "fault-subscriber").await;
    to_mqtt.subscribe("f/down/#", 1).await;
    let mqtt_publisher = MqttClient::connect(mqtt, "fault-publisher").await;

    // Each publisher holds at half way until the cut: on a loaded machine one direction can
    // otherwise finish before the other is under way, and the cut would not be mid-stream.
    let (cut_made, cut) = tokio::sync::watch::channel(false);
    let wait_for_cut_at_half_way = |mut cut: tokio::sync::watch::Receiver<bool>| async move {
        cut.wait_for(|made| *made)
            .await
            .expect("the test still runs");
    };
    let mqtt_cut = cut.clone();
    let mqtt_side = tokio::spawn(async move {
        let mut pace = tokio::time::interval(PACE_TICK);
        for number in 0..FAULT_MESSAGES {
            if number == FAULT_MESSAGES / 2 {
                wait_for_cut_at_half_way(mqtt_cut.clone()).await;
            }
            if number % PACE_BURST == 0 {
                pace.tick().await;
            }
            mqtt_publisher
                .publish("f/up/seq", 1, false, number.to_string())
                .await;
        }
        mqtt_publisher
    });
    let publishing_channel = rabbit.connection.create_channel().await.expect("a channel");
    publishing_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let amqp_exchange = exchange.clone();
    let amqp_side = tokio::spawn(async move {
        let mut pace = tokio::time::interval(PACE_TICK);
        for number in 0..FAULT_MESSAGES {
            if number == FAULT_MESSAGES / 2 {
                wait_for_cut_at_half_way(cut.clone()).await;
            }
            if number % PACE_BURST == 0 {
                pace.tick().await;
            }
            let body = number.to_string();
            let options = BasicPublishOptions::default();
            let properties = BasicProperties::default().with_delivery_mode(2);
            let _confirm = publishing_channel
                .basic_publish(
                    amqp_exchange.as_str().into(),
                    "f.down.seq".into(),
                    options,
                    body.as_bytes(),
                    properties,
                )
                .await
                .expect("publish");
        }
        let returned =
            tokio::time::timeout(AMQP_TIMEOUT, publishing_channel.wait_for_confirms()).await;
        assert!(returned
            .expect("confirms in time")
            .expect("confirms")
            .is_empty());
    });

    // Cut the hub's connection as soon as both directions are under way (on a loaded
    // machine one direction can run far ahead of the other, so neither waits for more).
    let sent = r#"switchyard_messages_sent_total{bridge="rabbit"}"#;
    let received = r#"switchyard_messages_received_total{bridge="rabbit"}"#;
    let (at_cut_sent, at_cut_received) = support::poll_async(AMQP_TIMEOUT, || async {
        let counts = (
            hub.metric_async(sent).await.unwrap_or(0.0),
            hub.metric_async(received).await.unwrap_or(0.0),
        );
        if counts.0 >= 500.0 && counts.1 >= 500.0 {
            Ok(counts)
        } else {
            Err(counts)
        }
    })
    .await
    .unwrap_or_else(|last| panic!("both directions under way; (sent, received) = {last:?}"));
    assert!(
        at_cut_sent < FAULT_MESSAGES as f64 && at_cut_received < FAULT_MESSAGES as f64,
        "the cut comes mid-stream (sent {at_cut_sent}, received {at_cut_received})"
    );
    let name = connection_name.clone();
    let closed = tokio::task::spawn_blocking(move || close_connection_named(&name))
        .await
        .expect("rabbitmqctl");
    assert_eq!(
        closed, 2,
        "exactly the hub's two connections (publishing and consuming) are closed"
    );
    cut_made
        .send(true)
        .expect("the publishers wait for the cut");

    let to_amqp = async {
        let mut payloads = Vec::new();
        let mut distinct = HashSet::new();
        while distinct.len() < FAULT_MESSAGES {
            let delivery = next_delivery(
                &mut from_hub,
                &format!("MQTT -> AMQP, {} so far", distinct.len()),
            )
            .await;
            let number = sequence_number(&delivery.data);
            distinct.insert(number);
            payloads.push(number);
        }
        payloads
    };
    let to_mqtt_side = async {
        let mut payloads = Vec::new();
        let mut distinct = HashSet::new();
        while distinct.len() < FAULT_MESSAGES {
            let message = to_mqtt
                .next(&format!("AMQP -> MQTT, {} so far", distinct.len()))
                .await;
            let number = sequence_number(&message.payload);
            distinct.insert(number);
            payloads.push(number);
        }
        payloads
    };
    let (up, down) = tokio::join!(to_amqp, to_mqtt_side);
    let _publisher = mqtt_side.await.expect("the MQTT publisher");
    amqp_side.await.expect("the AMQP publisher");
    assert_eq!(check_in_order(&up, "MQTT -> AMQP").len(), FAULT_MESSAGES);
    assert_eq!(check_in_order(&down, "AMQP -> MQTT").len(), FAULT_MESSAGES);

    // Every delivery from the broker was acknowledged in the end, none dead-lettered.
    support::poll_async(AMQP_TIMEOUT, || async {
        match queue_counts(&queue) {
            Some((0, 0)) => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the hub's queue still holds messages: {last:?}"));
    let reconnects = counter(&hub, "bridge_reconnects_total", "rabbit");
    assert!(reconnects >= 1.0, "the bridge reconnected");
    println!(
        "fault: cut at sent={at_cut_sent} received={at_cut_received}; MQTT->AMQP {} deliveries \
         ({} duplicates), AMQP->MQTT {} deliveries ({} duplicates); reconnects={reconnects}, \
         sent_total={}, received_total={}, dropped_total={}",
        up.len(),
        up.len() - FAULT_MESSAGES,
        down.len(),
        down.len() - FAULT_MESSAGES,
        counter(&hub, "messages_sent_total", "rabbit"),
        counter(&hub, "messages_received_total", "rabbit"),
        counter(&hub, "messages_dropped_total", "rabbit"),
    );
    rabbit.delete(&[&exchange], &[&probe, &queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_is_waited_for() {
    let (exchange, probe) = (unique("late.x"), unique("late.probe"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let mut from_hub = rabbit.consume(&probe, &exchange, &["late.#"]).await;
    let [admin, mqtt] = free_ports::<2>();
    let broker_port = free_port();
    let config = format!(
        r##"{}
[bridges.rabbit]
type = "amqp"
url = "amqp://guest:guest@127.0.0.1:{broker_port}/%2f"
exchange = "{exchange}"
connection_name = "{probe}"
reconnect = {{ initial = "100ms", max = "500ms" }}

[[bridges.rabbit.topics]]
pattern = "late/#"
direction = "out"
qos = 1
"##,
        hub_with_mqtt("late", admin, mqtt)
    );
    let hub = Hub::builder(admin).config(&config).start_unready();
    hub.wait_for_metric_async(
        r#"switchyard_bridge_reconnects_total{bridge="rabbit"}"#,
        |n| n >= 2.0,
        AMQP_TIMEOUT,
    )
    .await;
    let (status, body) = hub.http_get_async("/readyz").await;
    assert_eq!(
        status, 503,
        "not ready while RabbitMQ is unreachable: {body}"
    );
    let publisher = MqttClient::connect(mqtt, "late-publisher").await;
    publisher
        .publish("late/early", 1, false, "queued while down")
        .await;

    // RabbitMQ becomes reachable: the hub connects, is ready, and sends what waited.
    let proxy = TcpProxy::start(broker_port, "127.0.0.1:5672".parse().expect("address"));
    hub.wait_for_http_async("/readyz", 200, AMQP_TIMEOUT).await;
    let delivery = next_delivery(&mut from_hub, "the message queued while down").await;
    assert_eq!(delivery.routing_key.as_str(), "late.early");

    // Cut and restore: the hub notices, reconnects and publishes again.
    proxy.cut();
    hub.wait_for_metric_async(
        r#"switchyard_bridge_up{bridge="rabbit"}"#,
        |n| n == 0.0,
        AMQP_TIMEOUT,
    )
    .await;
    publisher
        .publish("late/after", 1, false, "sent after the cut")
        .await;
    proxy.pass();
    hub.wait_for_metric_async(
        r#"switchyard_bridge_up{bridge="rabbit"}"#,
        |n| n == 1.0,
        AMQP_TIMEOUT,
    )
    .await;
    let delivery = next_delivery(&mut from_hub, "the message sent after the cut").await;
    assert_eq!(delivery.routing_key.as_str(), "late.after");
    rabbit.delete(&[&exchange], &[&probe]).await;
}
