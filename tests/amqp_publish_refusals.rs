//! The `amqp` bridge's publishing side (hub → RabbitMQ, `out` rules) when the broker
//! refuses, returns or cannot take what the hub sends, and at the edges of its settings:
//! unroutable messages with `mandatory`, `basic.nack` from a full queue, a missing or
//! mismatched exchange, a wrong password, `confirms = false`, bodies larger than a frame,
//! and one confirm in flight.
//!
//! Every test runs a hub with an embedded MQTT server (`local`) that feeds an `amqp`
//! bridge (`rabbit`) publishing `out/#` as routing keys `out.…`, against the machine's
//! RabbitMQ (127.0.0.1:5672, guest/guest). Only what is visible from outside is checked:
//! deliveries, `/metrics`, `/api/bridges`, `/healthz` and `/readyz`. Exchanges, queues and
//! connection names are unique per test and process, so the tests can share the broker.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Consumer, ExchangeKind};
use support::mqtt::MqttClient;
use support::rabbitmq::{next_delivery, queue_counts, unique, Rabbit, AMQP_TIMEOUT};
use support::{free_ports, hub_with_broker, poll_async, Hub};

/// The MQTT topic the tests publish numbered messages on; the bridge publishes it with
/// routing key [`SEQUENCE_KEY`].
const SEQUENCE_TOPIC: &str = "out/seq";

/// The routing key of [`SEQUENCE_TOPIC`].
const SEQUENCE_KEY: &str = "out.seq";

/// The bridge's metric of messages dropped because the broker returned them unroutable.
const UNROUTABLE: &str =
    r#"switchyard_messages_dropped_total{bridge="rabbit",reason="unroutable"}"#;

/// The bridge's metric of messages the broker took.
const SENT: &str = r#"switchyard_messages_sent_total{bridge="rabbit"}"#;

/// Whether the bridge is connected (1) or not (0).
const UP: &str = r#"switchyard_bridge_up{bridge="rabbit"}"#;

/// Bound on the nack test: the hub retries refused messages after a pause (one second
/// today), possibly several times while the test drains the queue.
const NACK_TIMEOUT: Duration = Duration::from_secs(60);

/// A hub named after `test`, with the embedded MQTT server `local` on `mqtt` and the
/// `amqp` bridge `rabbit` publishing `out/#` to `exchange`. `settings` are further keys of
/// the bridge's table (`confirms = false`, `url = "..."`, ...). The connection is named
/// after the test; reconnection is quick (at most 1 s), so recoveries show soon.
fn hub_config(test: &str, admin: u16, mqtt: u16, exchange: &str, settings: &str) -> String {
    let connection_name = unique(test);
    hub_with_broker(
        test,
        admin,
        "local",
        mqtt,
        &format!(
            r##"
[bridges.rabbit]
type = "amqp"
exchange = "{exchange}"
connection_name = "{connection_name}"
reconnect = {{ initial = "100ms", max = "1s" }}
{settings}

[[bridges.rabbit.topics]]
pattern = "out/#"
direction = "out"
qos = 1
"##
        ),
    )
}

/// Starts the hub of [`hub_config`]; waits for `/readyz` when `ready`, else only for
/// `/healthz` (the bridge is expected to stay down). Returns it and its MQTT port.
fn start_hub(test: &str, exchange: &str, settings: &str, ready: bool) -> (Hub, u16) {
    let [admin, mqtt] = free_ports::<2>();
    let builder = Hub::builder(admin).config(&hub_config(test, admin, mqtt, exchange, settings));
    let hub = if ready {
        builder.start()
    } else {
        builder.start_unready()
    };
    (hub, mqtt)
}

/// Publishes `numbers` as decimal payloads on [`SEQUENCE_TOPIC`] at QoS 1, in order.
/// Keep the returned client alive until the messages have arrived: it sends them from
/// its own task.
async fn publish_numbers(
    mqtt: u16,
    client_id: &str,
    numbers: impl IntoIterator<Item = usize>,
) -> MqttClient {
    let publisher = MqttClient::connect(mqtt, client_id).await;
    for number in numbers {
        publisher
            .publish(SEQUENCE_TOPIC, 1, false, number.to_string())
            .await;
    }
    publisher
}

/// Consumes (and acknowledges) deliveries until `expected` distinct numbers arrived;
/// every delivery's number, duplicates included, in arrival order.
async fn receive_numbers(consumer: &mut Consumer, expected: usize) -> Vec<usize> {
    let (mut received, mut distinct) = (Vec::new(), HashSet::new());
    while distinct.len() < expected {
        let awaited = format!("number {} of {expected}", distinct.len());
        let delivery = next_delivery(consumer, &awaited).await;
        assert_eq!(delivery.routing_key.as_str(), SEQUENCE_KEY);
        let number = std::str::from_utf8(&delivery.data)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("not a number: {:?}", delivery.data));
        distinct.insert(number);
        received.push(number);
    }
    received
}

/// The numbers in `received` in the order they first arrived (duplicates left out).
fn first_occurrences(received: &[usize]) -> Vec<usize> {
    let mut seen = HashSet::new();
    received
        .iter()
        .copied()
        .filter(|number| seen.insert(*number))
        .collect()
}

/// Waits for bridge `rabbit`'s error about `exchange`: it names the exchange and holds
/// every one of `says` (the broker's reason and the hint); then checks that the bridge
/// stays down while the hub stays up.
async fn assert_exchange_refused(hub: &Hub, exchange: &str, says: &[&str]) {
    let error = hub.wait_for_bridge_error("rabbit", "", AMQP_TIMEOUT).await;
    assert!(
        error.contains(exchange),
        "the error names the exchange: {error}"
    );
    for expected in says {
        assert!(
            error.contains(expected),
            "the error says {expected:?}: {error}"
        );
    }
    assert_down_but_hub_up(hub).await;
}

/// Checks that the bridge stays down while the hub lives on: it has retried at least
/// twice, is still down, `/healthz` answers 200 and `/readyz` 503 naming the bridge.
async fn assert_down_but_hub_up(hub: &Hub) {
    hub.wait_for_metric_async(
        r#"switchyard_bridge_reconnects_total{bridge="rabbit"}"#,
        |n| n >= 2.0,
        AMQP_TIMEOUT,
    )
    .await;
    assert_eq!(hub.metric_async(UP).await, Some(0.0), "rabbit stays down");
    let (status, body) = hub.http_get_async("/healthz").await;
    assert_eq!(status, 200, "the hub stays up: {body}");
    let (status, body) = hub.http_get_async("/readyz").await;
    assert_eq!(status, 503, "not ready without rabbit: {body}");
    assert!(body.contains("rabbit"), "/readyz names the bridge: {body}");
}

/// Declares a durable exchange of `kind` with `arguments`, where [`Rabbit::exchange`] (a
/// plain topic exchange) does not fit.
async fn declare_exchange(rabbit: &Rabbit, name: &str, kind: ExchangeKind, arguments: FieldTable) {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    rabbit
        .channel
        .exchange_declare(name.into(), kind, options, arguments)
        .await
        .unwrap_or_else(|e| panic!("declare exchange {name}: {e}"));
}

/// Waits until the bridge reports itself up.
async fn wait_up(hub: &Hub) {
    hub.wait_for_metric_async(UP, |n| n == 1.0, AMQP_TIMEOUT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_are_counted_and_dropped_until_a_queue_is_bound() {
    const DROPPED: usize = 20;
    const DELIVERED: usize = 20;
    let (exchange, queue) = (unique("unroutable.x"), unique("unroutable.q"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let (hub, mqtt) = start_hub("unroutable", &exchange, "", true);

    let early = publish_numbers(mqtt, "unroutable-early", 0..DROPPED).await;
    hub.wait_for_metric_async(UNROUTABLE, |n| n >= DROPPED as f64, AMQP_TIMEOUT)
        .await;
    assert_eq!(hub.metric_async(UP).await, Some(1.0), "the bridge stays up");
    // The hub's own drop line (not lapin's) names key and exchange, and is rate-limited.
    let drop_lines = hub
        .log_lines_containing(r#"reason="unroutable""#)
        .into_iter()
        .filter(|line| line.contains(SEQUENCE_KEY) && line.contains(&exchange))
        .count();
    assert!(
        (1..DROPPED).contains(&drop_lines),
        "the drops are logged, not once each ({drop_lines} lines):\n{}",
        hub.logs()
    );
    drop(early);

    // With a queue bound, later messages arrive, and none of the dropped ones.
    let mut consumer = rabbit.consume(&queue, &exchange, &["out.#"]).await;
    let _late = publish_numbers(mqtt, "unroutable-late", DROPPED..DROPPED + DELIVERED).await;
    let received = receive_numbers(&mut consumer, DELIVERED).await;
    assert_eq!(
        first_occurrences(&received),
        (DROPPED..DROPPED + DELIVERED).collect::<Vec<_>>(),
        "only the messages published after the bind, in order"
    );
    hub.wait_for_metric_async(SENT, |n| n == DELIVERED as f64, AMQP_TIMEOUT)
        .await;
    assert_eq!(
        hub.metric_async(UNROUTABLE).await,
        Some(DROPPED as f64),
        "routed messages are not counted as unroutable"
    );
    rabbit.delete(&[&exchange], &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_full_queue_refuses_are_published_again() {
    const MESSAGES: usize = 30;
    const MAX_LENGTH: u64 = 5;
    let (exchange, queue) = (unique("nack.x"), unique("nack.q"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    // A full queue makes RabbitMQ nack further publishes instead of dropping its head.
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(MAX_LENGTH as i64),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    rabbit
        .channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .expect("declare the bounded queue");
    rabbit
        .channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "out.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the bounded queue");
    let (hub, mqtt) = start_hub("nack", &exchange, "", true);
    let _publisher = publish_numbers(mqtt, "nack-publisher", 0..MESSAGES).await;

    // The queue fills up and the broker refuses the rest; the hub keeps them.
    poll_async(AMQP_TIMEOUT, || async {
        let counts = tokio::task::spawn_blocking({
            let queue = queue.clone();
            move || queue_counts(&queue)
        })
        .await
        .expect("rabbitmqctl");
        match counts {
            Some((ready, 0)) if ready == MAX_LENGTH => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the queue did not fill up: (ready, unacked) = {last:?}"));
    // What the broker nacked is not counted as sent.
    let sent = hub
        .wait_for_metric_async(SENT, |n| n >= MAX_LENGTH as f64, AMQP_TIMEOUT)
        .await;
    assert_eq!(sent, MAX_LENGTH as f64, "only what the queue took is sent");

    // Draining the queue lets the refused messages in: all arrive, first ones in order.
    let consuming = rabbit.channel.basic_consume(
        queue.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    let mut consumer = consuming.await.expect("consume the bounded queue");
    let received = tokio::time::timeout(NACK_TIMEOUT, receive_numbers(&mut consumer, MESSAGES))
        .await
        .unwrap_or_else(|_| panic!("not all {MESSAGES} messages arrived in {NACK_TIMEOUT:?}"));
    assert_eq!(
        first_occurrences(&received),
        (0..MESSAGES).collect::<Vec<_>>()
    );
    hub.wait_for_metric_async(SENT, |n| n >= MESSAGES as f64, AMQP_TIMEOUT)
        .await;
    assert_eq!(hub.metric_async(UNROUTABLE).await, Some(0.0));
    println!(
        "nack: {} deliveries for {MESSAGES} messages ({} duplicates)",
        received.len(),
        received.len() - MESSAGES
    );
    rabbit.delete(&[&exchange], &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_keeps_the_bridge_down_until_it_is_declared() {
    let (exchange, queue) = (unique("missing.x"), unique("missing.q"));
    let rabbit = Rabbit::connect().await;
    let (hub, mqtt) = start_hub("missing", &exchange, "declare_exchange = false", false);

    assert_exchange_refused(&hub, &exchange, &["NOT_FOUND", "declare_exchange"]).await;
    let _while_down = publish_numbers(mqtt, "missing-early", [0]).await;
    hub.wait_for_bridge_queue("rabbit", 1, AMQP_TIMEOUT).await;

    // Once the exchange exists, the next attempt succeeds and what waited is sent. It
    // appears with the test's queue already behind it (bound to its alternate exchange),
    // so no publish can find it without a queue and be dropped as unroutable.
    let fallback = unique("missing.ae");
    rabbit.exchange(&fallback).await;
    let mut consumer = rabbit.consume(&queue, &fallback, &["out.#"]).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(fallback.as_str().into()),
    );
    declare_exchange(&rabbit, &exchange, ExchangeKind::Topic, arguments).await;
    wait_up(&hub).await;
    hub.wait_for_http_async("/readyz", 200, AMQP_TIMEOUT).await;
    let _when_up = publish_numbers(mqtt, "missing-late", [1]).await;
    let received = receive_numbers(&mut consumer, 2).await;
    assert_eq!(first_occurrences(&received), [0, 1]);
    rabbit.delete(&[&exchange, &fallback], &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_the_bridge_down_and_out_of_messages() {
    let exchange = unique("password.x");
    let password = format!("not-the-password-{}", std::process::id());
    let url = format!("url = \"amqp://guest:{password}@127.0.0.1:5672/%2f\"");
    let (hub, _mqtt) = start_hub("password", &exchange, &url, false);

    let error = hub.wait_for_bridge_error("rabbit", "", AMQP_TIMEOUT).await;
    assert!(
        error.contains("ACCESS_REFUSED") || error.contains("ACCESS-REFUSED"),
        "the error says the broker refused the login: {error}"
    );
    assert!(
        error.contains("127.0.0.1:5672"),
        "the error names the broker: {error}"
    );
    assert_down_but_hub_up(&hub).await;
    assert!(
        !error.contains(&password) && !hub.logs().contains(&password),
        "the password stays out of errors and logs: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_confirms_messages_still_arrive() {
    arrive_in_order("noconfirm", "confirms = false", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_a_frame_arrive_intact() {
    // RabbitMQ's default frame_max is 131072 bytes (rabbitmq.conf `frame_max`), so these
    // bodies go out as several body frames; 1 MiB is the MQTT server's default max_payload.
    let sizes = [300 * 1024, 1024 * 1024];
    let (exchange, queue) = (unique("large.x"), unique("large.q"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let mut consumer = rabbit.consume(&queue, &exchange, &["out.#"]).await;
    let (_hub, mqtt) = start_hub("large", &exchange, "", true);

    let publisher = MqttClient::connect(mqtt, "large-publisher").await;
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&size| (0..size).map(|i| (i * 31 + i / 251) as u8).collect())
        .collect();
    for (size, body) in sizes.iter().zip(&bodies) {
        publisher
            .publish(&format!("out/large/{size}"), 1, false, body.clone())
            .await;
    }
    for (size, body) in sizes.iter().zip(&bodies) {
        let delivery = next_delivery(&mut consumer, &format!("the {size}-byte body")).await;
        assert_eq!(delivery.routing_key.as_str(), format!("out.large.{size}"));
        assert_eq!(delivery.data.len(), *size, "the body's length");
        assert!(
            delivery.data == *body,
            "the {size}-byte body is byte-identical"
        );
    }
    rabbit.delete(&[&exchange], &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_of_another_type_is_reported_not_redeclared() {
    let exchange = unique("mismatch.x");
    let rabbit = Rabbit::connect().await;
    declare_exchange(
        &rabbit,
        &exchange,
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await;
    let (hub, _mqtt) = start_hub("mismatch", &exchange, "declare_exchange = true", false);

    assert_exchange_refused(&hub, &exchange, &["PRECONDITION_FAILED", "same type"]).await;
    // Declaring it again as it was succeeds only if the hub left it a fanout exchange.
    declare_exchange(
        &rabbit,
        &exchange,
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await;
    rabbit.delete(&[&exchange], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_confirm_in_flight_keeps_every_message_in_order() {
    arrive_in_order("inflight", "max_in_flight = 1", 200).await;
}

/// A bridge with `setting` publishes `messages` messages; all arrive exactly in order and
/// are counted as sent.
async fn arrive_in_order(test: &str, setting: &str, messages: usize) {
    let (exchange, queue) = (unique(&format!("{test}.x")), unique(&format!("{test}.q")));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let mut consumer = rabbit.consume(&queue, &exchange, &["out.#"]).await;
    let (hub, mqtt) = start_hub(test, &exchange, setting, true);

    let _publisher = publish_numbers(mqtt, &format!("{test}-publisher"), 0..messages).await;
    let received = receive_numbers(&mut consumer, messages).await;
    assert_eq!(received, (0..messages).collect::<Vec<_>>());
    hub.wait_for_metric_async(SENT, |n| n == messages as f64, AMQP_TIMEOUT)
        .await;
    rabbit.delete(&[&exchange], &[&queue]).await;
}
