//! The `zmq` bridge against independent peers: the real fedmsg library (`fedmsg-logger`
//! through the relay inlet, a passive fedmsg publisher the hub connects to), pyzmq
//! PUB/SUB and PUSH/PULL sockets both ways in both framings, bad input, and restarts of
//! either side (DESIGN.md scenario 2).
//!
//! ZeroMQ's slow joiner: a SUB receives only what is published after its subscription
//! reached the publisher, so every test first sends probes until one arrives (bounded).

mod support;
mod zmq_peer;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::mqtt::{MqttClient, Received};
use support::{free_ports, Hub, TestDir};
use zmq_peer::{fedmsg_config, fedmsg_logger, FedmsgPublisher, ZmqPeer};

/// How long a test keeps probing a path before giving up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one probe waits for its echo before the next is sent.
const PROBE_WAIT: Duration = Duration::from_millis(250);

fn endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// Sends probes (`$send`, with the probe's number in `$k`) until `$arrived` is true,
/// for at most PROBE_TIMEOUT.
macro_rules! probe {
    ($what:expr, |$k:ident| $send:expr, $arrived:expr) => {{
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let mut $k: u32 = 0;
        loop {
            $send;
            if $arrived {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no probe arrived within {PROBE_TIMEOUT:?}",
                $what
            );
            $k += 1;
        }
    }};
}

/// A pyzmq message within PROBE_WAIT, if any.
fn zmq_within(peer: &mut ZmqPeer) -> Option<Vec<Vec<u8>>> {
    tokio::task::block_in_place(|| peer.recv(PROBE_WAIT))
}

/// The next MQTT message within PROBE_WAIT, if any.
async fn mqtt_within(client: &mut MqttClient) -> Option<Received> {
    tokio::time::timeout(PROBE_WAIT, client.next("a probe"))
        .await
        .ok()
}

/// MQTT messages until one on `topic` (returned), bounded by PROBE_TIMEOUT.
async fn mqtt_until(client: &mut MqttClient, topic: &str) -> Received {
    let found = tokio::time::timeout(PROBE_TIMEOUT, async {
        loop {
            let message = client.next(topic).await;
            if message.topic == topic {
                return message;
            }
        }
    });
    found
        .await
        .unwrap_or_else(|_| panic!("no MQTT message on {topic} within {PROBE_TIMEOUT:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fedmsg_hub_config(admin: u16, mqtt: u16, publisher: u16, relay: u16, gateway: u16) -> String {
    format!(
        r##"
[hub]
name = "fedmsg-hub"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"

[bridges.fedmsg]
type = "zmq"
socket = "sub"
connect = ["tcp://127.0.0.1:{publisher}"]
format = "fedmsg"
reconnect_ivl_max = "500ms"

[[bridges.fedmsg.topics]]
pattern = "#"
direction = "in"
remote_prefix = "org.fedoraproject.prod."
local_prefix = "fedora/prod/"

[bridges.relay]
type = "zmq"
socket = "sub"
bind = ["tcp://127.0.0.1:{relay}"]
format = "fedmsg"

[[bridges.relay.topics]]
pattern = "#"
direction = "in"
remote_prefix = "org.fedoraproject.prod."
local_prefix = "fedora/prod/"

[bridges.gateway]
type = "zmq"
socket = "pub"
bind = ["tcp://127.0.0.1:{gateway}"]
format = "fedmsg"

[[bridges.gateway.topics]]
pattern = "#"
direction = "out"
local_prefix = "fedora/prod/"
remote_prefix = "org.fedoraproject.prod."
"##
    )
}

/// Checks one gateway message: `[topic, envelope]`, compact JSON with sorted keys.
fn gateway_envelope(frames: &[Vec<u8>]) -> (String, Value) {
    assert_eq!(frames.len(), 2, "two frames: {frames:?}");
    let topic = text(&frames[0]);
    let body = text(&frames[1]);
    let envelope: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    assert!(
        !body.contains(": ") && !body.contains(", "),
        "compact: {body}"
    );
    let positions: Vec<usize> = [
        "\"i\":",
        "\"msg\":",
        "\"msg_id\":",
        "\"timestamp\":",
        "\"topic\":",
        "\"username\":",
    ]
    .iter()
    .map(|key| body.find(key).unwrap_or_else(|| panic!("{key} in {body}")))
    .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "sorted keys: {body}"
    );
    assert_eq!(envelope["topic"].as_str(), Some(topic.as_str()), "{body}");
    (topic, envelope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedmsg_publishers_reach_mqtt_and_the_gateway_serves_envelopes() {
    let [admin, mqtt, publisher, relay, gateway] = free_ports::<5>();
    let hub = Hub::start(
        &fedmsg_hub_config(admin, mqtt, publisher, relay, gateway),
        admin,
    );
    let mut subscriber = MqttClient::connect(mqtt, "fedora-watcher").await;
    subscriber.subscribe("fedora/#", 0).await;
    let mut tail = ZmqPeer::start("sub", &[], &[endpoint(gateway)], &["org.fedoraproject."]);

    // A passive fedmsg publisher: fedmsg binds, the hub connects and subscribes.
    let dir = TestDir::new("fedmsg");
    let config = fedmsg_config(&dir, &endpoint(publisher), &endpoint(relay));
    let mut source = FedmsgPublisher::start(&config);
    let first = mqtt_until(&mut subscriber, "fedora/prod/switchyard/count").await;
    let payload = text(&first.payload);
    let n: u64 = payload
        .strip_prefix("{\"n\":")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("the exact bytes of msg, {{\"n\":N}}: {payload}"));
    let username = first
        .properties
        .iter()
        .find(|(key, _)| key == "fedmsg-username")
        .map(|(_, value)| value.clone());
    assert!(
        username.is_some(),
        "envelope fields as headers: {:?}",
        first.properties
    );

    // The gateway re-publishes them as envelopes of this hub, msg_id kept, i counting up.
    let mut last_i = 0;
    for _ in 0..3 {
        let frames = tail
            .recv(PROBE_TIMEOUT)
            .expect("an envelope from the gateway");
        let (topic, envelope) = gateway_envelope(&frames);
        assert_eq!(topic, "org.fedoraproject.prod.switchyard.count");
        assert_eq!(envelope["username"], "fedmsg-hub", "{envelope}");
        let i = envelope["i"].as_u64().expect("i");
        assert!(i > last_i, "i increases: {i} after {last_i}");
        last_i = i;
        let n = envelope["msg"]["n"].as_u64().expect("msg.n");
        assert_eq!(envelope["msg_id"].as_str(), Some(source.msg_id(n).as_str()));
        assert!(envelope["timestamp"].as_u64().is_some(), "{envelope}");
    }
    assert!(n >= 1);
    // One peer on each side: the gateway's subscriber, and the publisher the hub reached.
    for bridge in ["gateway", "fedmsg"] {
        hub.wait_for_metric_async(
            &format!(r#"switchyard_connections{{bridge="{bridge}"}}"#),
            |n| n == 1.0,
            PROBE_TIMEOUT,
        )
        .await;
    }
    drop(source);
    hub.wait_for_metric_async(
        r#"switchyard_connections{bridge="fedmsg"}"#,
        |n| n == 0.0,
        PROBE_TIMEOUT,
    )
    .await;

    // fedmsg-logger, as an ephemeral script, through the relay inlet.
    let deadline = Instant::now() + PROBE_TIMEOUT * 2;
    let mut attempt = 0;
    let relayed = loop {
        attempt += 1;
        let message = format!(r#"{{"b": [1, 2], "a": "x", "attempt": {attempt}}}"#);
        tokio::task::block_in_place(|| fedmsg_logger(&config, "git", "receive", &message));
        let arrived = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let message = subscriber.next("the relayed message").await;
                if message.topic == "fedora/prod/git/receive" {
                    return message;
                }
            }
        })
        .await;
        if let Ok(message) = arrived {
            break message;
        }
        assert!(Instant::now() < deadline, "fedmsg-logger never got through");
    };
    let payload = text(&relayed.payload);
    assert!(
        payload.starts_with(r#"{"a":"x","attempt":"#) && payload.ends_with(r#","b":[1,2]}"#),
        "msg byte for byte as fedmsg wrote it: {payload}"
    );
    assert!(
        relayed.properties.contains(&(
            "fedmsg-topic".to_owned(),
            "org.fedoraproject.prod.git.receive".to_owned()
        )),
        "{:?}",
        relayed.properties
    );
    let relayed_count = hub
        .metric(r#"switchyard_messages_received_total{bridge="relay"}"#)
        .unwrap_or(0.0);
    assert!(relayed_count >= 1.0, "relay received {relayed_count}");
}

fn pattern_hub_config(admin: u16, mqtt: u16, ports: [u16; 4]) -> String {
    let [pub_peer, pull_bind, pub_bind, pull_peer] = ports;
    format!(
        r##"
[hub]
name = "pattern-hub"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"

[bridges.sub_in]
type = "zmq"
socket = "sub"
connect = ["tcp://127.0.0.1:{pub_peer}"]
reconnect_ivl_max = "500ms"

[[bridges.sub_in.topics]]
pattern = "#"
direction = "in"
local_prefix = "from-sub/"

[bridges.pull_in]
type = "zmq"
socket = "pull"
bind = ["tcp://127.0.0.1:{pull_bind}"]
framing = "single"

[[bridges.pull_in.topics]]
pattern = "#"
direction = "in"
local_prefix = "from-pull/"

[bridges.pub_out]
type = "zmq"
socket = "pub"
bind = ["tcp://127.0.0.1:{pub_bind}"]

[[bridges.pub_out.topics]]
pattern = "#"
direction = "out"
local_prefix = "to-zmq/"

[bridges.push_out]
type = "zmq"
socket = "push"
connect = ["tcp://127.0.0.1:{pull_peer}"]
framing = "single"

[[bridges.push_out.topics]]
pattern = "#"
direction = "out"
local_prefix = "to-zmq/"
"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyzmq_pub_sub_and_push_pull_both_ways_in_either_framing() {
    let [admin, mqtt, pub_peer, pull_bind, pub_bind, pull_peer] = free_ports::<6>();
    let ports = [pub_peer, pull_bind, pub_bind, pull_peer];
    let hub = Hub::start(&pattern_hub_config(admin, mqtt, ports), admin);
    let mut watcher = MqttClient::connect(mqtt, "zmq-watcher").await;
    watcher.subscribe("from-sub/#", 0).await;
    watcher.subscribe("from-pull/#", 0).await;
    let binary: &[u8] = b"\x00\xffbinary \x01";

    // PUB -> hub SUB (multipart), byte for byte.
    let mut publisher = ZmqPeer::start("pub", &[endpoint(pub_peer)], &[], &[]);
    probe!(
        "pyzmq PUB -> hub SUB -> MQTT",
        |_k| publisher
            .send(&[b"sensors.hall", binary])
            .expect("PUB never waits"),
        matches!(mqtt_within(&mut watcher).await,
            Some(m) if m.topic == "from-sub/sensors/hall" && &m.payload[..] == binary)
    );

    // PUSH -> hub PULL (single frame: topic, space, body).
    let mut pusher = ZmqPeer::start("push", &[], &[endpoint(pull_bind)], &[]);
    pusher
        .send(&[b"door.front OPEN now \x01"])
        .expect("PUSH queues for its peer");
    let pulled = mqtt_until(&mut watcher, "from-pull/door/front").await;
    assert_eq!(&pulled.payload[..], b"OPEN now \x01");

    // Hub PUB (multipart) -> pyzmq SUB, and hub PUSH (single) -> pyzmq PULL.
    let mut puller = ZmqPeer::start("pull", &[endpoint(pull_peer)], &[], &[]);
    let mut sub = ZmqPeer::start("sub", &[], &[endpoint(pub_bind)], &["lab."]);
    let feeder = MqttClient::connect(mqtt, "zmq-feeder").await;
    probe!(
        "MQTT -> hub PUB -> pyzmq SUB",
        |_k| feeder.publish("to-zmq/lab/temp", 0, false, "21.5").await,
        match zmq_within(&mut sub) {
            Some(frames) => {
                assert_eq!(frames, vec![b"lab.temp".to_vec(), b"21.5".to_vec()]);
                true
            }
            None => false,
        }
    );
    let pushed = tokio::task::block_in_place(|| puller.recv(PROBE_TIMEOUT))
        .expect("the hub's PUSH delivers to the pyzmq PULL");
    assert_eq!(pushed, vec![b"lab.temp 21.5".to_vec()]);

    for bridge in ["sub_in", "pull_in"] {
        let received = hub
            .metric(&format!(
                r#"switchyard_messages_received_total{{bridge="{bridge}"}}"#
            ))
            .unwrap_or(0.0);
        assert!(received >= 1.0, "{bridge} received {received}");
    }
    for bridge in ["pub_out", "push_out"] {
        let sent = hub
            .metric(&format!(
                r#"switchyard_messages_sent_total{{bridge="{bridge}"}}"#
            ))
            .unwrap_or(0.0);
        assert!(sent >= 1.0, "{bridge} sent {sent}");
    }
}

fn guard_hub_config(admin: u16, mqtt: u16, relay: u16, gateway: u16) -> String {
    format!(
        r##"
[hub]
name = "guard-hub"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"

[bridges.relay]
type = "zmq"
socket = "sub"
bind = ["tcp://127.0.0.1:{relay}"]
format = "fedmsg"
max_message = "64KiB"

[[bridges.relay.topics]]
pattern = "#"
direction = "in"

[bridges.gateway]
type = "zmq"
socket = "pub"
bind = ["tcp://127.0.0.1:{gateway}"]
format = "fedmsg"

[[bridges.gateway.topics]]
pattern = "#"
direction = "out"
"##
    )
}

fn envelope(topic: &str, msg: &str, username: &str, msg_id: &str) -> Vec<u8> {
    format!(
        r#"{{"i":1,"msg":{msg},"msg_id":"{msg_id}","timestamp":1700000000,"topic":"{topic}","username":"{username}"}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_the_bridge_keeps_running() {
    let [admin, mqtt, relay, gateway] = free_ports::<4>();
    let hub = Hub::start(&guard_hub_config(admin, mqtt, relay, gateway), admin);
    let mut watcher = MqttClient::connect(mqtt, "guard-watcher").await;
    watcher.subscribe("#", 0).await;
    let mut script = ZmqPeer::start("pub", &[], &[endpoint(relay)], &[]);
    probe!(
        "pyzmq PUB -> relay -> MQTT",
        |k| {
            let body = envelope("probe.x", "{}", "someone", &format!("probe-{k}"));
            script.send(&[b"probe.x", &body]).expect("PUB never waits");
        },
        matches!(mqtt_within(&mut watcher).await, Some(m) if m.topic == "probe/x")
    );

    let huge = envelope(
        "big.one",
        &format!("\"{}\"", "x".repeat(100 * 1024)),
        "someone",
        "big",
    );
    let looped = envelope("loop.x", "{}", "guard-hub", "looped");
    let bad: [&[&[u8]]; 6] = [
        &[b"only.one.frame"],
        &[b"three", b"frames", b"here"],
        &[b"bad.json", b"{not json"],
        &[b"not.object", b"[1,2]"],
        &[b"big.one", &huge],
        &[b"loop.x", &looped],
    ];
    for frames in bad {
        script.send(frames).expect("PUB never waits");
    }
    let after = envelope("after.bad", r#"{"still":"running"}"#, "someone", "after");
    script
        .send(&[b"after.bad", &after])
        .expect("PUB never waits");
    let message = mqtt_until(&mut watcher, "after/bad").await;
    assert_eq!(&message.payload[..], br#"{"still":"running"}"#);

    // A payload that is not JSON cannot be a fedmsg envelope's msg: dropped on the way out.
    let feeder = MqttClient::connect(mqtt, "guard-feeder").await;
    feeder.publish("plain/text", 0, false, "not json").await;

    let selector = |reason: &str, bridge: &str| {
        format!(r#"switchyard_messages_dropped_total{{bridge="{bridge}",reason="{reason}"}}"#)
    };
    let wait = Duration::from_secs(10);
    hub.wait_for_metric_async(&selector("invalid", "relay"), |n| n >= 4.0, wait)
        .await;
    hub.wait_for_metric_async(&selector("too_large", "relay"), |n| n >= 1.0, wait)
        .await;
    hub.wait_for_metric_async(&selector("loop", "relay"), |n| n >= 1.0, wait)
        .await;
    hub.wait_for_metric_async(&selector("invalid", "gateway"), |n| n >= 1.0, wait)
        .await;
    assert_eq!(
        hub.metric_async(r#"switchyard_bridge_up{bridge="relay"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        hub.metric_async(r#"switchyard_bridge_reconnects_total{bridge="relay"}"#)
            .await
            .unwrap_or(0.0),
        0.0
    );
}

fn restart_hub_config(admin: u16, mqtt: u16, publisher: u16, gateway: u16) -> String {
    format!(
        r##"
[hub]
name = "restart-hub"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"

[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"

[bridges.bus]
type = "zmq"
socket = "sub"
connect = ["tcp://127.0.0.1:{publisher}"]
reconnect_ivl_max = "500ms"

[[bridges.bus.topics]]
pattern = "#"
direction = "in"
local_prefix = "bus/"

[bridges.gateway]
type = "zmq"
socket = "pub"
bind = ["tcp://127.0.0.1:{gateway}"]

[[bridges.gateway.topics]]
pattern = "#"
direction = "out"
local_prefix = "out/"
"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_publisher_and_a_restarting_hub_resume_by_themselves() {
    let [admin, mqtt, publisher_port, gateway] = free_ports::<4>();
    let mut hub = Hub::start(
        &restart_hub_config(admin, mqtt, publisher_port, gateway),
        admin,
    );
    let mut watcher = MqttClient::connect(mqtt, "restart-watcher").await;
    watcher.subscribe("bus/#", 0).await;

    // The publisher the hub connects to goes away and comes back on the same port.
    for run in ["first", "second"] {
        let mut publisher = ZmqPeer::start("pub", &[endpoint(publisher_port)], &[], &[]);
        probe!(
            format!("{run} publisher -> hub SUB"),
            |_k| publisher
                .send(&[b"news.item", run.as_bytes()])
                .expect("PUB never waits"),
            matches!(mqtt_within(&mut watcher).await, Some(m) if &m.payload[..] == run.as_bytes())
        );
    }

    // A SUB connected to the hub's PUB sees the stream again after the hub restarts.
    let mut sub = ZmqPeer::start("sub", &[], &[endpoint(gateway)], &[""]);
    for run in ["before", "after"] {
        if run == "after" {
            tokio::task::block_in_place(|| hub.restart());
        }
        let feeder = MqttClient::connect(mqtt, &format!("restart-feeder-{run}")).await;
        probe!(
            format!("hub PUB -> the same pyzmq SUB, {run} the hub restarts"),
            |_k| feeder.publish("out/ping", 0, false, run).await,
            matches!(zmq_within(&mut sub),
                Some(frames) if frames == vec![b"ping".to_vec(), run.as_bytes().to_vec()])
        );
    }
}
