//! The `redis` bridge against private redis-server processes, with redis-py and
//! redis-cli on the other end: pub/sub in and out (literal and wildcard rules, overlapping
//! subscriptions, glob characters in names), a Redis restart in pub/sub mode, and streams
//! that lose nothing when the hub is killed.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use support::mqtt::{MqttClient, Received};
use support::redis::RedisServer;
use support::{free_ports, poll, Hub};

/// How long a test waits for something it polls.
const WAIT: Duration = Duration::from_secs(30);

/// A hub with an embedded MQTT broker on `mqtt` (everything both ways, QoS 1) and the
/// bridges in `bridges`.
fn hub_config(admin: u16, mqtt: u16, bridges: &str) -> String {
    format!(
        r##"
[hub]
name = "redis-test"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"
client_queue = 50000

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"
qos = 1

{bridges}
"##
    )
}

fn text(message: &Received) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_in_and_out_with_literal_wildcard_and_glob_names() {
    let redis = RedisServer::start();
    let [admin, mqtt] = free_ports::<2>();
    let bridges = format!(
        r##"
[bridges.cache]
type = "redis"
url = "{url}"

[[bridges.cache.topics]]
pattern = "sensors/#"
direction = "in"
local_prefix = "redis/"

[[bridges.cache.topics]]
pattern = "sensors/hall/temp"
direction = "in"
local_prefix = "redis/"

[[bridges.cache.topics]]
pattern = "+/temp"
direction = "in"
local_prefix = "redis/"

[[bridges.cache.topics]]
pattern = "#"
direction = "in"
local_prefix = "weird/"
remote_prefix = "odd*[x]?."

[[bridges.cache.topics]]
pattern = "lit*[1]?"
direction = "in"
local_prefix = "redis/"

[[bridges.cache.topics]]
pattern = "cmd/#"
direction = "out"
qos = 1
"##,
        url = redis.url()
    );
    let hub = Hub::start(&hub_config(admin, mqtt, &bridges), admin);
    let (_, check) = hub.http_get("/api/bridges");
    assert!(check.contains("cache"), "{check}");
    let patterns = redis.cli(&["PUBSUB", "NUMPAT"]);
    assert_eq!(
        patterns.trim(),
        "3",
        "sensors*, *, odd\\*\\[x\\]\\?.* are PSUBSCRIBEd"
    );

    let mut local = MqttClient::connect(mqtt, "local-observer").await;
    local.subscribe("redis/#", 1).await;
    local.subscribe("weird/#", 1).await;

    // redis-py publishes; every channel matches one to three subscriptions.
    redis.python(
        r#"
import os, redis
client = redis.Redis(port=int(os.environ["REDIS_PORT"]))
for channel, payload in [
    ("sensors.hall.temp", "21.5"),   # SUBSCRIBE + sensors* + *
    ("sensors.hall.hum", "40"),      # sensors* + *
    ("attic.temp", "30"),            # * only
    ("sensorsX", "not a level"),     # sensors* matches, the rule does not
    ("oddZZxQ.a", "glob would match"),
    ("odd*[x]?.a", "escaped"),       # odd\*\[x\]\?.* + *
    ("litA[1]B", "not literal"),
    ("lit*[1]?", "literal"),         # SUBSCRIBE + *
    ("end.temp", "marker"),
]:
    client.publish(channel, payload)
"#,
    );
    let seen = local.until_topic("redis/end/temp").await;
    let got: Vec<(String, String)> = seen.iter().map(|m| (m.topic.clone(), text(m))).collect();
    let expected: Vec<(String, String)> = [
        ("redis/sensors/hall/temp", "21.5"),
        ("redis/sensors/hall/hum", "40"),
        ("redis/attic/temp", "30"),
        ("weird/a", "escaped"),
        ("redis/lit*[1]?", "literal"),
        ("redis/end/temp", "marker"),
    ]
    .iter()
    .map(|(topic, payload)| (topic.to_string(), payload.to_string()))
    .collect();
    assert_eq!(got, expected, "each message once, glob characters literal");
    assert_eq!(
        hub.metric(r#"switchyard_messages_received_total{bridge="cache"}"#),
        Some(6.0)
    );

    // Out: an MQTT publish becomes a PUBLISH that redis-py receives.
    let subscriber = redis.subscriber(&["cmd.reboot", "cmd.halt"]);
    let publisher = MqttClient::connect(mqtt, "local-publisher").await;
    publisher.publish("cmd/reboot", 1, false, "now").await;
    publisher.publish("other/x", 1, false, "stays").await;
    publisher.publish("cmd/halt", 0, false, "later").await;
    let first = tokio::task::spawn_blocking(move || {
        let first = subscriber.next("cmd.reboot");
        let second = subscriber.next("cmd.halt");
        (first, second)
    })
    .await
    .expect("the subscriber thread");
    assert_eq!(
        first,
        (
            ("cmd.reboot".to_owned(), "now".to_owned()),
            ("cmd.halt".to_owned(), "later".to_owned())
        )
    );
    hub.wait_for_metric_async(
        r#"switchyard_messages_sent_total{bridge="cache"}"#,
        |sent| sent == 2.0,
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_in_pubsub_mode_resubscribes_and_counts_the_gap() {
    const COUNT: u32 = 3000;
    let mut redis = RedisServer::start();
    let [admin, mqtt] = free_ports::<2>();
    let bridges = format!(
        r##"
[bridges.cache]
type = "redis"
url = "{url}"
reconnect = {{ initial = "100ms", max = "500ms" }}

[[bridges.cache.topics]]
pattern = "feed/#"
direction = "in"
"##,
        url = redis.url()
    );
    let hub = Hub::start(&hub_config(admin, mqtt, &bridges), admin);
    let mut local = MqttClient::connect(mqtt, "feed-observer").await;
    local.subscribe("feed/#", 1).await;

    // redis-py publishes a numbered stream, riding over the restart (a publish that fails
    // while Redis is away is skipped), then an end marker until someone receives it.
    let port = redis.port();
    let publisher = tokio::task::spawn_blocking(move || {
        let program = format!(
            r#"
import os, time, redis
client = redis.Redis(port={port}, socket_timeout=2)
for number in range({COUNT}):
    try:
        client.publish("feed.numbers", str(number))
    except (redis.ConnectionError, redis.TimeoutError):
        pass
    time.sleep(0.002)
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if client.publish("feed.end", "end") > 0:
            break
    except (redis.ConnectionError, redis.TimeoutError):
        pass
    time.sleep(0.05)
"#
        );
        support::run_with_timeout(
            std::process::Command::new(support::python()).args(["-c", &program]),
            Duration::from_secs(120),
        )
    });
    let mut numbers = Vec::new();
    while numbers.len() < 200 {
        let message = local.next("the first part of the stream").await;
        numbers.push(text(&message).parse::<u32>().expect("a number"));
    }
    redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .expect("restart redis");
    let rest = local.until_topic("feed/end").await;
    numbers.extend(
        rest.iter()
            .filter(|m| m.topic == "feed/numbers")
            .map(|m| text(m).parse::<u32>().expect("a number")),
    );
    let output = publisher.await.expect("the publisher thread");
    assert!(output.status.success(), "{output:?}");

    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "no duplicates, in order"
    );
    assert!(
        numbers.last().copied() > Some(200),
        "messages after the restart arrive: {:?}",
        numbers.last()
    );
    let lagged = hub
        .wait_for_metric_async(
            r#"switchyard_messages_dropped_total{bridge="cache",reason="lagged"}"#,
            |gaps| gaps >= 1.0,
            WAIT,
        )
        .await;
    let reconnects = hub
        .metric_async(r#"switchyard_bridge_reconnects_total{bridge="cache"}"#)
        .await;
    assert!(reconnects >= Some(1.0), "reconnects {reconnects:?}");
    assert!(hub.logs().contains("Pub/sub gap"), "the gap is logged");
    eprintln!(
        "pubsub restart: {} of {COUNT} delivered, {lagged} gap(s), {reconnects:?} reconnect(s)",
        numbers.len()
    );
    drop(redis);
}

/// Entries of `key` as (id, payload) pairs, read with redis-cli.
fn stream_payloads(redis: &RedisServer, key: &str) -> Vec<String> {
    redis
        .python(&format!(
            r#"
import os, redis
client = redis.Redis(port=int(os.environ["REDIS_PORT"]))
for entry_id, fields in client.xrange("{key}"):
    print(fields.get(b"payload", b"").decode())
"#
        ))
        .stdout
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

/// How many entries of `key` are pending in group `switchyard` (redis-cli XPENDING).
fn pending(redis: &RedisServer, key: &str) -> u64 {
    let summary = redis.cli(&["XPENDING", key, "switchyard"]);
    summary
        .lines()
        .next()
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_lose_nothing_when_the_hub_is_killed() {
    const BATCH: u32 = 200;
    let source = RedisServer::start();
    let mut sink = RedisServer::start();
    let [admin, mqtt] = free_ports::<2>();
    let bridges = format!(
        r##"
[bridges.source]
type = "redis"
url = "{source}"
mode = "streams"
# A consumer name stable across restarts: the restarted hub reads its own pending entries
# at once (the default name contains the process id).
streams = {{ consumer = "orders-copier" }}
reconnect = {{ initial = "100ms", max = "500ms" }}

[[bridges.source.topics]]
pattern = "orders"
direction = "in"
qos = 1
local_prefix = "copy/"

[bridges.sink]
type = "redis"
url = "{sink}"
mode = "streams"
reconnect = {{ initial = "100ms", max = "500ms" }}
streams = {{ maxlen = 100000 }}

[[bridges.sink.topics]]
pattern = "#"
direction = "out"
qos = 1
"##,
        source = source.url(),
        sink = sink.url()
    );
    let mut hub = Hub::start(&hub_config(admin, mqtt, &bridges), admin);

    // Out: an MQTT message becomes an entry with its topic, id, ts and headers.
    let publisher = MqttClient::connect(mqtt, "stream-publisher").await;
    publisher.publish("events/e1", 1, false, "hello").await;
    let fields = poll(WAIT, || {
        let output = sink.python(
            r#"
import json, os, redis
client = redis.Redis(port=int(os.environ["REDIS_PORT"]))
entries = client.xrange("events.e1")
if entries:
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    print(json.dumps(fields))
"#,
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        serde_json::from_str::<serde_json::Value>(&text).map_err(|_| text)
    })
    .expect("the entry in events.e1");
    assert_eq!(fields["topic"], "events/e1");
    assert_eq!(fields["payload"], "hello");
    assert!(fields["ts"]
        .as_str()
        .is_some_and(|ts| ts.parse::<u64>().is_ok()));
    let headers: serde_json::Value =
        serde_json::from_str(fields["headers"].as_str().expect("headers")).expect("JSON");
    assert_eq!(headers["x-switchyard-origin"], "redis-test");
    assert_eq!(headers["x-switchyard-hops"], "1");

    // In and out: redis-py appends to `orders`; the hub copies each entry to `copy.orders`.
    let add = |from: u32, to: u32| {
        format!(
            r#"
import os, redis
client = redis.Redis(port=int(os.environ["REDIS_PORT"]))
pipe = client.pipeline()
for number in range({from}, {to}):
    pipe.xadd("orders", {{"payload": str(number), "id": "order-%d" % number}})
pipe.execute()
"#
        )
    };
    source.python(&add(0, BATCH));
    source.cli(&["XADD", "orders", "*", "temp", "21"]);
    poll(WAIT, || {
        let copied = stream_payloads(&sink, "copy.orders").len();
        (copied == BATCH as usize + 1).then_some(()).ok_or(copied)
    })
    .expect("the first batch copied");
    let copied = stream_payloads(&sink, "copy.orders");
    assert_eq!(
        copied[BATCH as usize], r#"{"temp":"21"}"#,
        "a foreign entry"
    );

    // The sink goes away: the next batch is read, routed, and waits unacknowledged.
    sink.stop();
    source.python(&add(BATCH, 2 * BATCH));
    poll(WAIT, || {
        let waiting = pending(&source, "orders");
        (waiting == u64::from(BATCH)).then_some(()).ok_or(waiting)
    })
    .expect("the second batch pending in the group");
    assert!(hub.kill().code().is_none(), "killed by SIGKILL");

    // Everything comes back up: the second batch is delivered from the pending list.
    sink.resume();
    hub.restart();
    source.python(&add(2 * BATCH, 3 * BATCH));
    let delivered = poll(WAIT, || {
        let copied: HashSet<String> = stream_payloads(&sink, "copy.orders").into_iter().collect();
        let missing: BTreeSet<u32> = (BATCH..3 * BATCH)
            .filter(|n| !copied.contains(&n.to_string()))
            .collect();
        missing.is_empty().then_some(copied.len()).ok_or(missing)
    })
    .expect("every entry after the kill delivered");
    poll(WAIT, || {
        let waiting = pending(&source, "orders");
        (waiting == 0).then_some(()).ok_or(waiting)
    })
    .expect("every entry acknowledged");
    eprintln!("streams kill: {delivered} distinct entries in the sink after the restart");
}

#[test]
fn check_shows_the_redis_subscriptions_and_refuses_wildcard_streams() {
    let dir = support::TestDir::new("redis-check");
    let good = dir.write(
        "good.toml",
        r##"
[bridges.cache]
type = "redis"

[[bridges.cache.topics]]
pattern = "sensors/+"
direction = "in"

[[bridges.cache.topics]]
pattern = "a/b"
direction = "in"
"##,
    );
    let output = support::run_hub_command(&["check", "-c", good.to_str().expect("UTF-8")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("PSUBSCRIBE sensors.*"), "{stdout}");
    assert!(stdout.contains("SUBSCRIBE a.b"), "{stdout}");

    let bad = dir.write(
        "bad.toml",
        r##"
[bridges.cache]
type = "redis"
mode = "streams"

[[bridges.cache.topics]]
pattern = "sensors/+"
direction = "in"
"##,
    );
    let output = support::run_hub_command(&["check", "-c", bad.to_str().expect("UTF-8")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("bridges.cache.topics[0].pattern"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_pending_by_a_dead_consumer_are_claimed() {
    let redis = RedisServer::start();
    // A consumer of the group read three entries and died without acknowledging them.
    redis.cli(&["XGROUP", "CREATE", "orders", "switchyard", "$", "MKSTREAM"]);
    for number in 0..3 {
        redis.cli(&["XADD", "orders", "*", "payload", &format!("lost-{number}")]);
    }
    redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "switchyard",
        "dead",
        "COUNT",
        "10",
        "STREAMS",
        "orders",
        ">",
    ]);
    assert_eq!(pending(&redis, "orders"), 3);

    let [admin, mqtt] = free_ports::<2>();
    let bridges = format!(
        r##"
[bridges.cache]
type = "redis"
url = "{url}"
mode = "streams"
streams = {{ claim_idle = "200ms", consumer = "alive" }}

[[bridges.cache.topics]]
pattern = "orders"
direction = "in"
qos = 1
local_prefix = "copy/"

# Another bridge to the same server (a message never leaves by the bridge it came in by).
[bridges.sink]
type = "redis"
url = "{url}"
mode = "streams"

[[bridges.sink.topics]]
pattern = "copy/#"
direction = "out"
qos = 1
"##,
        url = redis.url()
    );
    let _hub = Hub::start(&hub_config(admin, mqtt, &bridges), admin);
    let copied = poll(WAIT, || {
        let copied = stream_payloads(&redis, "copy.orders");
        (copied.len() >= 3).then_some(copied.clone()).ok_or(copied)
    })
    .expect("the dead consumer's entries copied");
    assert_eq!(copied, ["lost-0", "lost-1", "lost-2"]);
    poll(WAIT, || {
        let waiting = pending(&redis, "orders");
        (waiting == 0).then_some(()).ok_or(waiting)
    })
    .expect("the claimed entries acknowledged");
}
