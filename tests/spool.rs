//! `queue.spool`: nothing a source had acknowledged is lost when the hub is killed, a
//! long outage spills to disk instead of growing memory, and a damaged spool is reported
//! without stopping the hub. Real brokers throughout: a private Mosquitto per test, the
//! shared RabbitMQ behind a [`TcpProxy`] the test pauses, and real MQTT and AMQP clients.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use support::mqtt::MqttClient;
use support::proxy::TcpProxy;
use support::rabbitmq::{unique, Rabbit, AMQP_TIMEOUT};
use support::{free_port, free_ports, poll_async, Hub, Mosquitto, TestDir};

/// Messages in each kill test.
const KILL_MESSAGES: usize = 3_000;

/// Messages in the long outage.
const OUTAGE_MESSAGES: usize = 100_000;

/// Payload bytes per message in the long outage (100,000 x 512 B = 51 MB queued).
const OUTAGE_PAYLOAD: usize = 512;

/// QoS 1 messages in flight each way in the long outage: every acknowledgement waits for
/// an fsync, so a wide window is what keeps the spool's group commits large.
const OUTAGE_INFLIGHT: u16 = 1_000;

/// The memory window of the long outage's spooled bridge.
const OUTAGE_WINDOW_BYTES: u64 = 2 << 20;

/// How far the hub's resident memory may grow during the outage: the memory window, the
/// spool's 8 MiB page cache, the index of spilled messages (16 bytes each) and working
/// room. Holding the queued 51 MB in memory instead would exceed it.
const OUTAGE_RSS_GROWTH: u64 = OUTAGE_WINDOW_BYTES + (8 << 20) + 16 * 100_000 + (16 << 20);

/// A publisher sends this many messages per [`PACE_TICK`]: an open-loop load that the
/// kill finds mid-stream, not a synchronisation.
const PACE_BURST: usize = 50;

/// See [`PACE_BURST`].
const PACE_TICK: Duration = Duration::from_millis(10);

/// Bound on waiting for every message after a restart or an outage.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

fn hub_header(hub: &str, admin: u16) -> String {
    format!(
        r##"
[hub]
name = "{hub}"
shutdown_timeout = "1s"

[admin]
listen = "127.0.0.1:{admin}"
"##
    )
}

/// The resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

async fn wait_for_metric_at_least(hub: &Hub, selector: &str, at_least: f64) {
    poll_async(DELIVERY_TIMEOUT, || async {
        match hub.metric_async(selector).await {
            Some(value) if value >= at_least => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("{selector} stayed at {last:?}, below {at_least}"));
}

/// Checks a received stream of indices: every one of `0..count` present, first
/// occurrences in order. Returns the number of duplicates.
fn check_stream(received: &[usize], count: usize) -> usize {
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for &index in received {
        if seen.insert(index) {
            firsts.push(index);
        }
    }
    let missing: Vec<usize> = (0..count).filter(|i| !seen.contains(i)).take(10).collect();
    assert!(missing.is_empty(), "gaps: {missing:?} (of {count})");
    assert!(
        firsts.windows(2).all(|pair| pair[0] < pair[1]),
        "order per source broken: {:?}",
        firsts.windows(2).find(|pair| pair[0] >= pair[1])
    );
    received.len() - count
}

/// Publishes `count` QoS 1 messages `0..count` on `topic`, paced, calling `at` with each
/// index before sending it.
async fn publish_paced(
    publisher: &MqttClient,
    topic: &str,
    range: std::ops::Range<usize>,
    mut at: impl AsyncFnMut(usize),
) {
    let mut tick = tokio::time::interval(PACE_TICK);
    for index in range {
        if index % PACE_BURST == 0 {
            tick.tick().await;
        }
        at(index).await;
        publisher.publish(topic, 1, false, index.to_string()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_mqtt_to_amqp_loses_nothing_acknowledged() {
    let site = Mosquitto::start_with("max_queued_messages 0\nmax_inflight_messages 100\n");
    let (exchange, queue) = (unique("spool.kill.x"), unique("spool.kill.q"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    rabbit.declare_queue(&queue, &exchange, &["#"]).await;
    let proxy = TcpProxy::start(free_port(), "127.0.0.1:5672".parse().unwrap());
    let spool = TestDir::new("spool-kill");
    let admin = free_port();
    let config = format!(
        r##"{header}
[bridges.site]
type = "mqtt"
url = "{site}"
client_id = "spool-kill-{pid}"
clean_session = false
reconnect = {{ initial = "100ms", max = "500ms" }}

[[bridges.site.topics]]
pattern = "kill/#"
direction = "in"
qos = 1

[bridges.central]
type = "amqp"
url = "amqp://guest:guest@{proxy}/%2f"
exchange = "{exchange}"
connection_name = "{queue}"
reconnect = {{ initial = "100ms", max = "500ms" }}
queue = {{ spool = "{spool}", memory_messages = 200 }}

[[bridges.central.topics]]
pattern = "kill/#"
qos = 1
"##,
        header = hub_header("spool-kill", admin),
        site = site.url(),
        pid = std::process::id(),
        proxy = proxy.addr(),
        spool = spool.path().display(),
    );
    let mut hub = Hub::start(&config, admin);
    let publisher = MqttClient::connect(site.port(), "spool-kill-publisher").await;
    let spooled = r#"switchyard_spool_messages{bridge="central"}"#;
    publish_paced(&publisher, "kill/stream", 0..KILL_MESSAGES, async |index| {
        if index == KILL_MESSAGES / 3 {
            // RabbitMQ hangs: what the site sends now waits in the spool.
            proxy.pause();
        }
        if index == 2 * KILL_MESSAGES / 3 {
            wait_for_metric_at_least(&hub, spooled, 200.0).await;
            hub.kill();
            proxy.resume();
        }
    })
    .await;
    hub.restart();

    let received = consume_indices(&rabbit, &queue, KILL_MESSAGES).await;
    let duplicates = check_stream(&received, KILL_MESSAGES);
    eprintln!("mqtt -> amqp after SIGKILL: {KILL_MESSAGES} delivered, {duplicates} duplicate(s)");
    wait_for_metric_at_least(
        &hub,
        r#"switchyard_messages_sent_total{bridge="central"}"#,
        1.0,
    )
    .await;
    rabbit.delete(&[&exchange], &[&queue]).await;
}

/// Consumes from `queue` until every index of `0..count` arrived, then for a short quiet
/// period to count trailing duplicates.
async fn consume_indices(rabbit: &Rabbit, queue: &str, count: usize) -> Vec<usize> {
    let mut consumer = rabbit
        .channel
        .basic_consume(
            queue.into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("consume");
    let mut received = Vec::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let wait = if seen.len() == count {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let Ok(next) = tokio::time::timeout(wait, consumer.next()).await else {
            assert_eq!(seen.len(), count, "only {} of {count} arrived", seen.len());
            return received;
        };
        let delivery = next.expect("consumer open").expect("delivery");
        let index: usize = String::from_utf8_lossy(&delivery.data)
            .parse()
            .expect("an index payload");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        seen.insert(index);
        received.push(index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_amqp_to_mqtt_loses_nothing_acknowledged() {
    let sink = Mosquitto::start_with("max_queued_messages 0\n");
    let proxy = TcpProxy::start(free_port(), sink.addr());
    let (exchange, queue) = (unique("spool.up.x"), unique("spool.up.q"));
    let rabbit = Rabbit::connect().await;
    rabbit.exchange(&exchange).await;
    let spool = TestDir::new("spool-up");
    let admin = free_port();
    let config = format!(
        r##"{header}
[bridges.rabbit]
type = "amqp"
exchange = "{exchange}"
amqp_queue = {{ name = "{queue}", durable = true, auto_delete = false }}
connection_name = "{queue}"
reconnect = {{ initial = "100ms", max = "500ms" }}

[[bridges.rabbit.topics]]
pattern = "up/#"
direction = "in"
qos = 1

[bridges.sink]
type = "mqtt"
url = "mqtt://{proxy}"
reconnect = {{ initial = "100ms", max = "500ms" }}
queue = {{ spool = "{spool}", memory_messages = 200 }}

[[bridges.sink.topics]]
pattern = "up/#"
qos = 1
"##,
        header = hub_header("spool-up", admin),
        proxy = proxy.addr(),
        spool = spool.path().display(),
    );
    let mut hub = Hub::start(&config, admin);
    let mut subscriber = MqttClient::connect_with(sink.port(), "spool-up-subscriber", false).await;
    subscriber.subscribe("up/#", 1).await;
    let spooled = r#"switchyard_spool_messages{bridge="sink"}"#;
    let mut tick = tokio::time::interval(PACE_TICK);
    for index in 0..KILL_MESSAGES {
        if index % PACE_BURST == 0 {
            tick.tick().await;
        }
        if index == KILL_MESSAGES / 3 {
            proxy.pause();
        }
        if index == 2 * KILL_MESSAGES / 3 {
            wait_for_metric_at_least(&hub, spooled, 200.0).await;
            hub.kill();
            proxy.resume();
        }
        rabbit
            .publish(
                &exchange,
                "up.stream",
                index.to_string().as_bytes(),
                Default::default(),
            )
            .await;
    }
    hub.restart();

    let mut received = Vec::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while seen.len() < KILL_MESSAGES || !received.is_empty() {
        let wait = if seen.len() == KILL_MESSAGES {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let Some(message) = subscriber.try_next(wait).await else {
            break;
        };
        let index: usize = String::from_utf8_lossy(&message.payload).parse().unwrap();
        seen.insert(index);
        received.push(index);
    }
    let duplicates = check_stream(&received, KILL_MESSAGES);
    eprintln!("amqp -> mqtt after SIGKILL: {KILL_MESSAGES} delivered, {duplicates} duplicate(s)");
    rabbit.delete(&[&exchange], &[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_spills_to_disk_with_bounded_memory() {
    let sink = Mosquitto::start_with("max_queued_messages 0\nmax_inflight_messages 1000\n");
    let proxy = TcpProxy::start(free_port(), sink.addr());
    let spool = TestDir::new("spool-outage");
    let [admin, mqtt] = free_ports::<2>();
    let config = format!(
        r##"{header}
[bridges.local]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"
max_inflight = {OUTAGE_INFLIGHT}

[[bridges.local.topics]]
pattern = "outage/#"
direction = "in"
qos = 1

[bridges.sink]
type = "mqtt"
url = "mqtt://{proxy}"
max_inflight = {OUTAGE_INFLIGHT}
reconnect = {{ initial = "100ms", max = "500ms" }}
queue = {{ spool = "{spool}", max_messages = 200000, max_bytes = "256MiB", memory_messages = 2000, memory_bytes = {window} }}

[[bridges.sink.topics]]
pattern = "outage/#"
qos = 1
"##,
        header = hub_header("spool-outage", admin),
        proxy = proxy.addr(),
        spool = spool.path().display(),
        window = OUTAGE_WINDOW_BYTES,
    );
    let hub = Hub::start(&config, admin);
    let pid = hub.pid().expect("running");
    let mut subscriber = MqttClient::connect_with(sink.port(), "spool-outage-sub", false).await;
    subscriber.subscribe("outage/#", 1).await;
    let baseline = rss_bytes(pid);
    proxy.pause();
    let publisher =
        MqttClient::wide_publisher(mqtt, "spool-outage-publisher", OUTAGE_INFLIGHT).await;
    let mut payload = vec![b'.'; OUTAGE_PAYLOAD];
    let started = Instant::now();
    let peak = std::cell::Cell::new(baseline);
    for index in 0..OUTAGE_MESSAGES {
        let digits = format!("{index:08}");
        payload[..8].copy_from_slice(digits.as_bytes());
        publisher
            .publish("outage/stream", 1, false, payload.clone())
            .await;
        if index % 5_000 == 0 {
            peak.set(peak.get().max(rss_bytes(pid)));
        }
    }
    let queued = r#"switchyard_queue_messages{bridge="sink"}"#;
    poll_async(DELIVERY_TIMEOUT, || async {
        peak.set(peak.get().max(rss_bytes(pid)));
        match hub.metric_async(queued).await {
            Some(value) if value as usize + 400 >= OUTAGE_MESSAGES => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("{queued} reached only {last:?}"));
    let spooled_in = started.elapsed();
    let peak = peak.get();
    let on_disk = hub
        .metric(r#"switchyard_spool_bytes{bridge="sink"}"#)
        .unwrap_or(0.0);
    eprintln!(
        "long outage: {OUTAGE_MESSAGES} x {OUTAGE_PAYLOAD} B queued in {spooled_in:?} ({:.0} msg/s), \
         spool {:.1} MB, RSS baseline {:.1} MB, peak {:.1} MB",
        OUTAGE_MESSAGES as f64 / spooled_in.as_secs_f64(),
        on_disk / 1e6,
        baseline as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(
        on_disk > (OUTAGE_MESSAGES * OUTAGE_PAYLOAD / 2) as f64,
        "the spool holds the backlog: {on_disk} bytes"
    );
    assert!(
        peak < baseline + OUTAGE_RSS_GROWTH,
        "RSS grew from {baseline} to {peak} bytes, more than {OUTAGE_RSS_GROWTH}"
    );

    proxy.resume();
    let mut next = 0;
    while next < OUTAGE_MESSAGES {
        let message = subscriber.next("the backlog after the outage").await;
        let index: usize = String::from_utf8_lossy(&message.payload[..8])
            .parse()
            .unwrap();
        assert!(index <= next, "gap: expected {next}, got {index}");
        if index == next {
            next += 1;
        }
    }
    hub.wait_for_metric(queued, |v| v == 0.0, DELIVERY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_is_reported_moved_aside_and_what_remains_is_replayed() {
    let sink = Mosquitto::start();
    let proxy = TcpProxy::start(free_port(), sink.addr());
    let spool = TestDir::new("spool-damaged");
    let [admin, mqtt] = free_ports::<2>();
    let config = format!(
        r##"{header}
[bridges.local]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"

[[bridges.local.topics]]
pattern = "dmg/#"
direction = "in"
qos = 1

[bridges.sink]
type = "mqtt"
url = "mqtt://{proxy}"
reconnect = {{ initial = "100ms", max = "500ms" }}
queue = {{ spool = "{spool}" }}

[[bridges.sink.topics]]
pattern = "dmg/#"
qos = 1
"##,
        header = hub_header("spool-damaged", admin),
        proxy = proxy.addr(),
        spool = spool.path().display(),
    );
    let mut hub = Hub::start(&config, admin);
    proxy.cut();
    hub.wait_for_metric(
        r#"switchyard_bridge_up{bridge="sink"}"#,
        |v| v == 0.0,
        DELIVERY_TIMEOUT,
    );
    let publisher = MqttClient::connect(mqtt, "spool-damaged-publisher").await;
    for index in 0..100 {
        publisher
            .publish("dmg/x", 1, false, format!("message-{index:03}"))
            .await;
    }
    hub.wait_for_metric(
        r#"switchyard_spool_messages{bridge="sink"}"#,
        |v| v >= 100.0,
        DELIVERY_TIMEOUT,
    );
    let status = hub.stop();
    assert!(status.success(), "SIGTERM stops the hub cleanly: {status}");

    // Damage one record's payload in place: every copy of it, since redb's copy-on-write
    // pages can leave a stale one beside the live one.
    let file = spool.path().join("sink.spool");
    let mut bytes = std::fs::read(&file).expect("the spool file exists");
    let copies: Vec<usize> = bytes
        .windows(11)
        .enumerate()
        .filter(|(_, w)| *w == b"message-042")
        .map(|(at, _)| at)
        .collect();
    assert!(!copies.is_empty(), "the payload is in the spool file");
    for at in copies {
        bytes[at..at + 11].copy_from_slice(b"DAMAGED-042");
    }
    std::fs::write(&file, &bytes).unwrap();

    let mut subscriber = MqttClient::connect(sink.port(), "spool-damaged-sub").await;
    subscriber.subscribe("dmg/#", 1).await;
    proxy.pass();
    hub.restart();
    let (_, api) = hub.http_get("/api/bridges");
    assert!(
        api.contains("moved to"),
        "damage reported in /api/bridges: {api}"
    );
    assert_eq!(
        hub.metric(r#"switchyard_spool_damaged{bridge="sink"}"#),
        Some(1.0)
    );
    let mut got = Vec::new();
    while got.len() < 99 {
        let message = subscriber.next("replayed records").await;
        got.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    let expected: Vec<String> = (0..100)
        .filter(|i| *i != 42)
        .map(|i| format!("message-{i:03}"))
        .collect();
    assert_eq!(got, expected);
    let aside = std::fs::read_dir(spool.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("sink.spool.corrupt-")
        });
    assert!(aside, "the damaged file is kept aside");
    assert!(hub.logs().contains("was damaged"), "logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_never_share_a_spool() {
    let spool = TestDir::new("spool-shared");
    let [first_admin, second_admin] = free_ports::<2>();
    let config = |admin: u16| {
        format!(
            r##"{header}
[bridges.out]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
required = false
queue = {{ spool = "{spool}" }}

[[bridges.out.topics]]
pattern = "x/#"
"##,
            header = hub_header("spool-shared", admin),
            port = free_port(),
            spool = spool.path().display(),
        )
    };
    let _first = Hub::start(&config(first_admin), first_admin);
    let mut second = Hub::builder(second_admin)
        .config(&config(second_admin))
        .spawn();
    let status = second.wait_exit(AMQP_TIMEOUT);
    assert_eq!(status.code(), Some(78), "{}", second.logs());
    assert!(
        second.logs().contains("bridges.out.queue.spool") && second.logs().contains("in use"),
        "{}",
        second.logs()
    );
}
