//! The `amqp` bridge under RabbitMQ's flow control: a memory alarm makes the broker block
//! publishing connections (`connection.blocked`), and clearing it unblocks them
//! (`connection.unblocked`; <https://www.rabbitmq.com/connection-blocked.html>). While
//! blocked, the bridge's publisher must hold messages in the hub's queue without losing,
//! reordering or reconnecting, and its consuming connection must keep delivering.
//!
//! The alarm is node-wide, so the test runs a private node (support::rabbitmq_node) and
//! leaves the shared broker on 5672 alone. `set_vm_memory_high_watermark absolute 1` (one
//! byte; RabbitMQ 3.10 accepts it and raises the alarm at once) triggers it, and `0.4`
//! (the default fraction) clears it.
//!
//! The broker blocks a connection only when it publishes with the alarm on: it first
//! marks every connection `blocking`, and a `blocking` connection that publishes becomes
//! `blocked`, gets `connection.blocked`, and is no longer read from (rabbit_reader), so
//! the rest of that publish (its body frame) waits unread in the socket. The test
//! therefore waits until the bridge's publishing connection is `blocking`, sends one MQTT
//! message (the trigger), and waits until the connection is `blocked` and the bridge
//! logged it. Only then does it send the rest, which must all wait in the bridge's queue;
//! the trigger is the one message in flight, and arrives first once the alarm clears.
//!
//! The consuming direction is shown with messages the broker itself moves during the
//! alarm, since any AMQP publisher of the test's would be blocked too. Before the alarm the
//! test parks them in a queue whose dead-letter exchange is the bridge's exchange; during
//! the alarm it rejects them (`basic.reject` is no publish, so it is not blocked), the
//! broker dead-letters them to the bridge's `in` binding, and they must reach the hub's
//! MQTT subscriber while the published messages still wait. The test's own AMQP
//! connections have fixed roles for the same reason: `observer` declares and consumes
//! only, `feeder` publishes, and only before the alarm.
//!
//! The second test has the bridge connect during the alarm with a backlog far larger than
//! what its publisher encodes ahead of the socket (1 MiB): it blocks the connection with a
//! series of large messages the same way, then closes the publishing connection on the
//! broker (`rabbitmqctl close_connection`). The new connection must take the broker's
//! `connection.blocked` while it writes, and wait: a publisher that only writes would
//! fill the socket, never read the block, and after two heartbeat intervals take the
//! broker for dead and reconnect, again and again for as long as the alarm lasts.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Consumer};
use support::mqtt::MqttClient;
use support::rabbitmq::{
    counts_in_listing, next_delivery, Rabbit, AMQP_TIMEOUT, LIST_QUEUE_COUNTS,
};
use support::rabbitmq_node::RabbitNode;
use support::{free_ports, hub_with_broker, poll_async, Hub};

/// The exchange the bridge publishes to and binds its queue to (the node is private, so
/// fixed names cannot clash).
const EXCHANGE: &str = "switchyard.flow";

/// The test's queue of what the bridge publishes (`out.#`).
const PUBLISHED_QUEUE: &str = "published";

/// The queue whose messages the test dead-letters into the bridge's `in` binding while
/// the alarm is on.
const PARKED_QUEUE: &str = "parked";

/// The routing key the parked messages are dead-lettered with; the bridge's `in` rule
/// turns it into MQTT topic [`PARKED_TOPIC`].
const PARKED_KEY: &str = "in.flow.parked";

/// The MQTT topic of the parked messages.
const PARKED_TOPIC: &str = "in/flow/parked";

/// The hub's name.
const HUB_NAME: &str = "amqp-flow";

/// The name both AMQP connections of the bridge carry (`switchyard/<hub>/<bridge>`).
const CONNECTION_NAME: &str = "switchyard/amqp-flow/rabbit";

/// What the bridge's publishing connection calls itself in its client properties; its
/// consuming connection is lapin's ([`CONSUMING`]).
const PUBLISHING: &str = "switchyard";

/// What the bridge's consuming connection calls itself.
const CONSUMING: &str = "lapin";

/// Messages sent each way before the alarm.
const BASELINE: usize = 5;

/// MQTT messages published to `out/flow/<tag>` while the alarm is on: the first (the
/// trigger) blocks the publishing connection, the rest wait in the hub.
struct Series {
    /// Names the series in its topic and payloads.
    tag: &'static str,
    /// How many messages.
    count: usize,
    /// Each payload's size: its tag and index, padded with dots.
    size: usize,
}

/// The first test's series: small messages, more than the MQTT server's default
/// `max_inflight`.
const BLOCKED: Series = Series {
    tag: "blocked",
    count: 200,
    size: 0,
};

/// The second test's backlog: 400 × 64 KiB, about 26 MB, far over the 1 MiB the publisher
/// encodes ahead of the socket (and below the queue's default 64 MiB and the MQTT server's
/// default 1 MiB `max_payload`).
const BACKLOG: Series = Series {
    tag: "backlog",
    count: 400,
    size: 64 * 1024,
};

impl Series {
    /// The MQTT topic.
    fn topic(&self) -> String {
        format!("out/flow/{}", self.tag)
    }

    /// The AMQP routing key the bridge turns the topic into.
    fn routing_key(&self) -> String {
        format!("out.flow.{}", self.tag)
    }

    /// Message `index`.
    fn payload(&self, index: usize) -> Vec<u8> {
        let mut body = payload(self.tag, index);
        body.resize(body.len().max(self.size), b'.');
        body
    }
}

/// Messages dead-lettered into the bridge's `in` binding while the alarm is on.
const PARKED: usize = 20;

/// The embedded MQTT server's `max_inflight`: QoS 1 messages of one client that may wait
/// for the hub's confirmation. At its default (100, below either series) the server stops
/// reading from the publisher, PINGREQs included, and drops it for a keepalive timeout
/// while the alarm lasts; this test is about the AMQP side, so it gives room for all.
const MQTT_MAX_INFLIGHT: u16 = 1000;

/// The bridge's AMQP heartbeat: short, so that the block outlasts several intervals.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long the block lasts at least: three heartbeat intervals, beyond the two after
/// which either side would call a silent connection dead.
const MIN_BLOCK: Duration = Duration::from_secs(6);

/// Bound on the node and the hub reacting to the alarm (`rabbitmqctl` takes a second or
/// two per call on the test machine, more under load).
const ALARM_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the bridge is connected (1) or not (0).
const UP: &str = r#"switchyard_bridge_up{bridge="rabbit"}"#;

/// Times the bridge connected again.
const RECONNECTS: &str = r#"switchyard_bridge_reconnects_total{bridge="rabbit"}"#;

/// Messages the broker confirmed.
const SENT: &str = r#"switchyard_messages_sent_total{bridge="rabbit"}"#;

/// Messages waiting in the bridge's queue.
const QUEUED: &str = r#"switchyard_queue_messages{bridge="rabbit"}"#;

/// The start of the hub's log line when the broker blocks the publisher.
const BLOCKED_LINE: &str = "The broker blocked publishing on this connection (low on memory)";

/// The hub's log line when the broker unblocks it.
const UNBLOCKED_LINE: &str = "The broker unblocked publishing on this connection.";

/// What the hub logs when the publisher takes a blocked broker for a dead one: the error of
/// a write that made no progress for two heartbeats, and of bytes the broker never took.
const DEAD_BROKER_LINES: [&str; 2] = ["write to the broker", "took none of our bytes"];

/// Message `index` of series `tag`.
fn payload(tag: &str, index: usize) -> Vec<u8> {
    format!("{tag}-{index:05}").into_bytes()
}

/// The index of a [`payload`] of series `tag` (padded or not, see [`Series::payload`]).
fn index_of(tag: &str, body: &[u8]) -> usize {
    let index = std::str::from_utf8(body).ok().and_then(|text| {
        let index = text.strip_prefix(tag)?.strip_prefix('-')?;
        index.trim_end_matches('.').parse().ok()
    });
    index.unwrap_or_else(|| {
        let start = String::from_utf8_lossy(&body[..body.len().min(40)]);
        panic!("not a {tag} message: {} bytes, {start:?}...", body.len())
    })
}

/// The indexes in `received` in the order they first arrived (duplicates left out).
fn first_occurrences(received: &[usize]) -> Vec<usize> {
    let mut seen = HashSet::new();
    received
        .iter()
        .copied()
        .filter(|index| seen.insert(*index))
        .collect()
}

/// `rabbitmqctl -n NODE ARGS`, without stalling the runtime's other worker.
fn ctl(node: &RabbitNode, args: &[&str]) -> String {
    tokio::task::block_in_place(|| node.ctl(args))
}

/// The process id and state (`running`, `blocking`, `blocked`, ...) of each of the
/// bridge's connections whose client calls itself `product` ([`PUBLISHING`] or
/// [`CONSUMING`]).
fn connections(node: &RabbitNode, product: &str) -> Vec<(String, String)> {
    let listing = ctl(
        node,
        &[
            "list_connections",
            "pid",
            "state",
            "client_properties",
            "-q",
            "--no-table-headers",
        ],
    );
    let name = format!("{{\"connection_name\",\"{CONNECTION_NAME}\"}}");
    let product = format!("{{\"product\",\"{product}\"}}");
    listing
        .lines()
        .filter(|line| line.contains(&name) && line.contains(&product))
        .filter_map(|line| {
            let mut fields = line.split('\t').map(str::to_owned);
            Some((fields.next()?, fields.next()?))
        })
        .collect()
}

/// The state of the bridge's `product` connection.
fn connection_state(node: &RabbitNode, product: &str) -> Option<String> {
    let mut found = connections(node, product).into_iter();
    found.next().map(|(_, state)| state)
}

/// Waits until the bridge's `product` connection is in `state`.
async fn wait_connection_state(node: &RabbitNode, product: &str, state: &str) {
    let reached = poll_async(ALARM_TIMEOUT, || async {
        match connection_state(node, product) {
            Some(found) if found == state => Ok(()),
            other => Err(other),
        }
    });
    reached.await.unwrap_or_else(|last| {
        panic!("the bridge's {product} connection was not {state} within {ALARM_TIMEOUT:?} (last: {last:?})")
    });
}

/// Ready and unacknowledged messages of `queue` on the node.
fn queue_counts(node: &RabbitNode, queue: &str) -> Option<(u64, u64)> {
    counts_in_listing(&ctl(node, &LIST_QUEUE_COUNTS), queue)
}

/// Waits until bridge `rabbit`'s queue holds `messages`, in `/api/bridges` and in
/// `/metrics`.
async fn wait_queued(hub: &Hub, messages: u64) {
    hub.wait_for_bridge_queue("rabbit", messages, AMQP_TIMEOUT)
        .await;
    assert_eq!(hub.metric_async(QUEUED).await, Some(messages as f64));
}

/// Checks that the bridge is up, reconnected `reconnects` times (once per cut), never
/// took the broker for dead, and has sent `sent` messages.
async fn assert_steady(hub: &Hub, reconnects: usize, sent: usize) {
    assert_eq!(hub.metric_async(UP).await, Some(1.0), "the bridge stays up");
    assert_eq!(
        hub.metric_async(RECONNECTS).await,
        Some(reconnects as f64),
        "reconnects"
    );
    for text in DEAD_BROKER_LINES {
        let lines = hub.log_lines_containing(text);
        assert!(lines.is_empty(), "the broker taken for dead: {lines:?}");
    }
    assert_eq!(hub.metric_async(SENT).await, Some(sent as f64), "sent");
}

/// Starts the hub: the embedded MQTT server `local` on `mqtt` and the `amqp` bridge
/// `rabbit` to `url`, publishing `out/#` and consuming `in/#` at QoS 1.
fn start_hub(url: &str, admin: u16, mqtt: u16) -> Hub {
    let heartbeat = HEARTBEAT.as_secs();
    let bridge = format!(
        r##"
[bridges.rabbit]
type = "amqp"
url = "{url}"
exchange = "{EXCHANGE}"
declare_exchange = true
heartbeat = "{heartbeat}s"
reconnect = {{ initial = "100ms", max = "1s" }}

[[bridges.rabbit.topics]]
pattern = "out/#"
direction = "out"
qos = 1

[[bridges.rabbit.topics]]
pattern = "in/#"
direction = "in"
qos = 1
"##
    );
    // A second file, merged over the first, since `hub_with_broker` writes `local`'s table.
    let local = format!("[bridges.local]\nmax_inflight = {MQTT_MAX_INFLIGHT}\n");
    Hub::builder(admin)
        .config(&hub_with_broker(HUB_NAME, admin, "local", mqtt, &bridge))
        .config(&local)
        .start()
}

/// The node, the hub and the test's clients. Fields drop in order: clients, hub, node.
struct Rig {
    /// Subscribed to `in/#` on the hub.
    subscriber: MqttClient,
    /// Consumes [`PUBLISHED_QUEUE`] on `observer`'s channel.
    published: Consumer,
    /// Declares and consumes; never publishes, so the alarm never blocks it.
    observer: Rabbit,
    /// Publishes, before the alarm only.
    feeder: Rabbit,
    /// The hub under test.
    hub: Hub,
    /// Its MQTT port.
    mqtt: u16,
    /// Times the test closed the bridge's publishing connection: each is one reconnect,
    /// and one more block.
    cuts: usize,
    /// The private RabbitMQ node.
    node: RabbitNode,
}

impl Rig {
    /// Starts the node, declares the test's queues, starts the hub (ready means both of
    /// the bridge's connections are open and its queue is bound) and subscribes.
    async fn start() -> Rig {
        let node = RabbitNode::builder().start();
        let url = node.amqp_url();
        let observer = Rabbit::connect_to(&url).await;
        observer.exchange(EXCHANGE).await;
        let published = observer
            .consume(PUBLISHED_QUEUE, EXCHANGE, &["out.#"])
            .await;
        let mut arguments = FieldTable::default();
        for (key, value) in [
            ("x-dead-letter-exchange", EXCHANGE),
            ("x-dead-letter-routing-key", PARKED_KEY),
        ] {
            arguments.insert(key.into(), AMQPValue::LongString(value.into()));
        }
        observer
            .channel
            .queue_declare(
                PARKED_QUEUE.into(),
                QueueDeclareOptions::default(),
                arguments,
            )
            .await
            .expect("declare the parked queue");
        let feeder = Rabbit::connect_to(&url).await;
        let [admin, mqtt] = free_ports::<2>();
        let hub = start_hub(&url, admin, mqtt);
        let mut subscriber = MqttClient::connect(mqtt, "flow-subscriber").await;
        subscriber.subscribe("in/#", 1).await;
        Rig {
            subscriber,
            published,
            observer,
            feeder,
            hub,
            mqtt,
            cuts: 0,
            node,
        }
    }

    /// [`assert_steady`] with the reconnects the test caused.
    async fn assert_steady(&self, sent: usize) {
        assert_steady(&self.hub, self.cuts, sent).await;
    }

    /// Checks that the subscriber gets messages `0..count` of series `tag` on `topic`, in
    /// order.
    async fn expect_on_hub(&mut self, topic: &str, tag: &str, count: usize) {
        for index in 0..count {
            let awaited = format!("{tag} message {index} of {count} on {topic}");
            let message = self.subscriber.next(&awaited).await;
            assert_eq!(message.topic, topic);
            assert_eq!(index_of(tag, &message.payload), index, "{tag} in order");
        }
    }

    /// Consumes (and acknowledges) deliveries with routing key `key` until messages
    /// `0..count` of series `tag` all arrived; every index, duplicates included, in
    /// arrival order.
    async fn receive_published(&mut self, key: &str, tag: &str, count: usize) -> Vec<usize> {
        let (mut received, mut distinct) = (Vec::new(), HashSet::new());
        while distinct.len() < count {
            let awaited = format!("{tag} message {} of {count}", distinct.len());
            let delivery = next_delivery(&mut self.published, &awaited).await;
            assert_eq!(delivery.routing_key.as_str(), key);
            let index = index_of(tag, &delivery.data);
            assert!(index < count, "{tag} message {index} was never sent");
            distinct.insert(index);
            received.push(index);
        }
        received
    }

    /// Step 1: messages go both ways; then the parked messages go into their queue,
    /// while publishing still works.
    async fn baseline(&mut self) {
        let publisher = MqttClient::connect(self.mqtt, "flow-baseline").await;
        for index in 0..BASELINE {
            let body = payload("before", index);
            publisher.publish("out/flow/before", 1, false, body).await;
        }
        let received = self
            .receive_published("out.flow.before", "before", BASELINE)
            .await;
        assert_eq!(received, (0..BASELINE).collect::<Vec<_>>());
        for index in 0..BASELINE {
            let properties = BasicProperties::default();
            let body = payload("in", index);
            self.feeder
                .publish(EXCHANGE, "in.flow.before", &body, properties)
                .await;
        }
        self.expect_on_hub("in/flow/before", "in", BASELINE).await;
        self.hub
            .wait_for_metric_async(SENT, |sent| sent == BASELINE as f64, AMQP_TIMEOUT)
            .await;
        for index in 0..PARKED {
            let properties = BasicProperties::default();
            let body = payload("parked", index);
            self.feeder
                .publish("", PARKED_QUEUE, &body, properties)
                .await;
        }
    }

    /// Steps 2 and 3: raises the alarm, blocks the publishing connection with the first of
    /// `series` and sends the rest, which wait in the hub. Returns the publisher (it must
    /// live until its messages are confirmed) and when the connection was blocked.
    async fn block(&mut self, series: &Series) -> (MqttClient, Instant) {
        ctl(
            &self.node,
            &["set_vm_memory_high_watermark", "absolute", "1"],
        );
        wait_connection_state(&self.node, PUBLISHING, "blocking").await;
        let publisher =
            MqttClient::wide_publisher(self.mqtt, "flow-publisher", MQTT_MAX_INFLIGHT).await;
        let topic = series.topic();
        publisher.publish(&topic, 1, false, series.payload(0)).await;
        self.hub.wait_for_log(BLOCKED_LINE, 1, ALARM_TIMEOUT).await;
        let blocked_at = Instant::now();
        wait_connection_state(&self.node, PUBLISHING, "blocked").await;
        for index in 1..series.count {
            publisher
                .publish(&topic, 1, false, series.payload(index))
                .await;
        }
        wait_queued(&self.hub, (series.count - 1) as u64).await;
        self.assert_steady(BASELINE).await;
        (publisher, blocked_at)
    }

    /// Closes the blocked publishing connection on the broker, as a network failure
    /// would: the bridge reconnects during the alarm with the whole series to publish, and
    /// its new connection must be blocked in turn. Returns when it was.
    async fn cut(&mut self) -> Instant {
        let found = connections(&self.node, PUBLISHING);
        let [(old, _)] = &found[..] else {
            panic!("one publishing connection: {found:?}");
        };
        let reason = "the test cuts the publishing connection";
        ctl(&self.node, &["close_connection", old, reason]);
        self.cuts += 1;
        let cuts = self.cuts as f64;
        let reconnected = |reconnects: f64| reconnects == cuts;
        let hub = &self.hub;
        hub.wait_for_metric_async(RECONNECTS, reconnected, ALARM_TIMEOUT)
            .await;
        hub.wait_for_log(BLOCKED_LINE, self.cuts + 1, ALARM_TIMEOUT)
            .await;
        let blocked_at = Instant::now();
        let replaced = poll_async(ALARM_TIMEOUT, || async {
            match &connections(&self.node, PUBLISHING)[..] {
                [(new, state)] if new != old && state == "blocked" => Ok(()),
                other => Err(other.to_vec()),
            }
        });
        replaced.await.unwrap_or_else(|last| {
            panic!("no new, blocked publishing connection within {ALARM_TIMEOUT:?}: {last:?}")
        });
        let line = hub
            .log_lines_containing(BLOCKED_LINE)
            .pop()
            .unwrap_or_default();
        assert!(line.contains("WARN"), "logged as a warning: {line}");
        self.assert_steady(BASELINE).await;
        blocked_at
    }

    /// Step 4: while the publisher is blocked, the broker dead-letters the parked
    /// messages to the bridge's binding and the bridge delivers them, in order.
    async fn consume_while_blocked(&mut self) {
        let channel = self.observer.connection.create_channel().await;
        let channel = channel.expect("open a channel");
        let consuming = channel.basic_consume(
            PARKED_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let mut parked = consuming.await.expect("consume the parked queue");
        for index in 0..PARKED {
            let delivery = tokio::time::timeout(AMQP_TIMEOUT, parked.next())
                .await
                .unwrap_or_else(|_| panic!("parked message {index} within {AMQP_TIMEOUT:?}"))
                .expect("the consumer is open")
                .expect("a delivery");
            assert_eq!(index_of("parked", &delivery.data), index);
            let reject = delivery.reject(BasicRejectOptions { requeue: false });
            reject.await.expect("reject");
        }
        self.expect_on_hub(PARKED_TOPIC, "parked", PARKED).await;
        let states = (
            connection_state(&self.node, PUBLISHING),
            connection_state(&self.node, CONSUMING),
        );
        let expected = (Some("blocked".to_owned()), Some("blocking".to_owned()));
        assert_eq!(
            states, expected,
            "(publishing, consuming) connection states"
        );
    }

    /// Holds the block until it lasted [`MIN_BLOCK`], checking all along that the bridge
    /// stays up without reconnecting and, when `queued` is given, that the queue keeps
    /// that many; then checks that nothing was published.
    async fn hold_block(&mut self, blocked_at: Instant, queued: Option<usize>) {
        let held = poll_async(ALARM_TIMEOUT, || async {
            if let Some(queued) = queued {
                wait_queued(&self.hub, queued as u64).await;
            }
            self.assert_steady(BASELINE).await;
            match blocked_at.elapsed() >= MIN_BLOCK {
                true => Ok(()),
                false => Err(()),
            }
        });
        held.await.expect("MIN_BLOCK is shorter than ALARM_TIMEOUT");
        // Whatever the broker had routed would be in the queue or with the consumer.
        let counts = queue_counts(&self.node, PUBLISHED_QUEUE);
        assert_eq!(
            counts,
            Some((0, 0)),
            "(ready, unacked) of {PUBLISHED_QUEUE}"
        );
        let early = self.published.next().now_or_never();
        assert!(early.is_none(), "a delivery while blocked: {early:?}");
        let blocks = self.hub.log_lines_containing(BLOCKED_LINE).len();
        assert_eq!(blocks, self.cuts + 1, "one block per connection");
        assert!(
            self.hub.log_lines_containing(UNBLOCKED_LINE).is_empty(),
            "not unblocked"
        );
    }

    /// Step 5: clears the alarm; every message of `series` arrives, the trigger first.
    async fn unblock(&mut self, series: &Series) {
        ctl(&self.node, &["set_vm_memory_high_watermark", "0.4"]);
        let (key, count) = (series.routing_key(), series.count);
        let received = self.receive_published(&key, series.tag, count).await;
        println!(
            "after the alarm: {} deliveries of {count} messages ({} duplicates)",
            received.len(),
            received.len() - count
        );
        assert_eq!(
            first_occurrences(&received),
            (0..count).collect::<Vec<_>>(),
            "in order"
        );
        self.hub
            .wait_for_log(UNBLOCKED_LINE, 1, ALARM_TIMEOUT)
            .await;
        let total = (BASELINE + count) as f64;
        self.hub
            .wait_for_metric_async(SENT, |sent| sent == total, AMQP_TIMEOUT)
            .await;
        wait_queued(&self.hub, 0).await;
        self.assert_steady(BASELINE + count).await;
        // Blocked once per connection; a connection that was cut was never unblocked.
        for (text, times) in [(BLOCKED_LINE, self.cuts + 1), (UNBLOCKED_LINE, 1)] {
            let lines = self.hub.log_lines_containing(text);
            assert_eq!(lines.len(), times, "logged {times} times: {lines:?}");
            println!("hub: {}", lines[times - 1]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_holds_published_messages_in_the_hub_while_consuming_goes_on() {
    let mut rig = Rig::start().await;
    rig.baseline().await;
    let (_publisher, blocked_at) = rig.block(&BLOCKED).await;
    rig.consume_while_blocked().await;
    rig.hold_block(blocked_at, Some(BLOCKED.count - 1)).await;
    println!("blocked for {:.1?}", blocked_at.elapsed());
    rig.unblock(&BLOCKED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_during_a_memory_alarm_waits_blocked_with_a_large_backlog() {
    let mut rig = Rig::start().await;
    rig.baseline().await;
    let (_publisher, _) = rig.block(&BACKLOG).await;
    let blocked_at = rig.cut().await;
    // What the publisher took from the queue before the block is no longer counted there.
    rig.hold_block(blocked_at, None).await;
    println!("blocked again for {:.1?}", blocked_at.elapsed());
    rig.unblock(&BACKLOG).await;
}
