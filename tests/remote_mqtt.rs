//! The `mqtt` bridge against real Mosquitto brokers started by the tests: a site hub
//! forwarding to a central broker and taking commands back (DESIGN.md scenario 1).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::mqtt::{MqttClient, Received};
use support::{free_ports, Hub, Mosquitto};

/// A hub with an embedded broker on `local` and a bridge `central` to `remote_url`.
fn hub_config(admin: u16, local: u16, remote_url: &str, bridge_extra: &str, rules: &str) -> String {
    format!(
        r##"
[hub]
name = "site"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.local]
type = "mqtt-server"
listen = "127.0.0.1:{local}"
client_queue = 50000

[[bridges.local.topics]]
pattern = "#"
direction = "both"
qos = 1

[[bridges.local.topics]]
pattern = "$SYS/switchyard/#"
direction = "out"
qos = 1

[bridges.central]
type = "mqtt"
url = "{remote_url}"
reconnect = {{ initial = "100ms", max = "1s" }}
{bridge_extra}

{rules}
"##
    )
}

fn payload_text(message: &Received) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

#[tokio::test]
async fn rules_remap_topics_both_ways_with_qos_and_retained() {
    let remote = Mosquitto::start();
    let publisher = MqttClient::connect(remote.port(), "retained-publisher").await;
    publisher
        .publish("central/commands/config", 1, true, "v1")
        .await;
    let mut probe = MqttClient::connect(remote.port(), "retained-probe").await;
    probe.subscribe("central/commands/config", 1).await;
    assert_eq!(payload_text(&probe.next("the retained config").await), "v1");

    let [admin, local] = free_ports::<2>();
    let rules = r##"
[[bridges.central.topics]]
pattern = "+/important"
direction = "out"
qos = 1
local_prefix = "site/"
remote_prefix = "dc1/"

[[bridges.central.topics]]
pattern = "commands/#"
direction = "in"
qos = 1
remote_prefix = "central/"

[[bridges.central.topics]]
pattern = "shared/#"
direction = "both"
qos = 0
"##;
    let mut remote_state = MqttClient::connect(remote.port(), "state-watcher").await;
    remote_state
        .subscribe("switchyard/site/bridges/central/state", 1)
        .await;
    let hub = Hub::start(&hub_config(admin, local, &remote.url(), "", rules), admin);
    let state = remote_state
        .next("the bridge's state on the remote broker")
        .await;
    assert_eq!((payload_text(&state).as_str(), state.retain), ("1", false));

    let mut central = MqttClient::connect(remote.port(), "central-observer").await;
    central.subscribe("dc1/#", 1).await;
    central.subscribe("shared/#", 0).await;
    let mut site = MqttClient::connect(local, "site-observer").await;
    site.subscribe("commands/#", 1).await;
    site.subscribe("shared/#", 0).await;
    let site_publisher = MqttClient::connect(local, "site-publisher").await;

    // Out, with both prefixes, QoS 1 kept; a topic the pattern does not pass stays home.
    site_publisher
        .publish("site/a/trivial", 1, false, "stays")
        .await;
    site_publisher
        .publish("site/a/important", 1, false, "up")
        .await;
    let seen = central.until_topic("dc1/a/important").await;
    assert_eq!(seen.len(), 1, "only the important topic crossed: {seen:?}");
    assert_eq!((payload_text(&seen[0]).as_str(), seen[0].qos), ("up", 1));

    // In, with the remote prefix stripped.
    publisher
        .publish("central/commands/reboot", 1, false, "now")
        .await;
    publisher
        .publish("central/elsewhere", 1, false, "ignored")
        .await;
    let seen = site.until_topic("commands/reboot").await;
    assert_eq!(payload_text(seen.last().unwrap()), "now");
    assert!(seen
        .iter()
        .all(|m| m.topic != "central/elsewhere" && m.topic != "elsewhere"));

    // Both ways at QoS 0.
    site_publisher
        .publish("shared/from-site", 0, false, "s")
        .await;
    assert_eq!(
        central
            .until_topic("shared/from-site")
            .await
            .last()
            .unwrap()
            .qos,
        0
    );
    publisher
        .publish("shared/from-central", 1, false, "c")
        .await;
    let from_central = site.until_topic("shared/from-central").await;
    assert_eq!(
        from_central.last().unwrap().qos,
        0,
        "the rule caps QoS at 0"
    );

    // The retained command that was on the central broker before the hub started is
    // served by the hub to a late local subscriber.
    let mut late = MqttClient::connect(local, "late-subscriber").await;
    late.subscribe("commands/config", 1).await;
    let retained = late.next("the retained config through the hub").await;
    assert_eq!(
        (
            retained.topic.as_str(),
            payload_text(&retained).as_str(),
            retained.retain
        ),
        ("commands/config", "v1", true)
    );

    // Local clients see the bridge's state on the hub's own $SYS topic.
    let mut watcher = MqttClient::connect(local, "sys-watcher").await;
    watcher
        .subscribe("$SYS/switchyard/site/bridges/central/state", 1)
        .await;
    assert_eq!(
        payload_text(&watcher.next("the local state topic").await),
        "1"
    );

    let received = hub
        .metric(r#"switchyard_messages_received_total{bridge="central"}"#)
        .unwrap_or(0.0);
    let sent = hub
        .metric(r#"switchyard_messages_sent_total{bridge="central"}"#)
        .unwrap_or(0.0);
    assert!(received >= 3.0, "central received {received}");
    assert!(sent >= 2.0, "central sent {sent}");
    assert_eq!(
        hub.metric(r#"switchyard_bridge_up{bridge="central"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn two_hubs_on_one_broker_neither_echo_nor_storm() {
    let broker = Mosquitto::start();
    let rules = r##"
[[bridges.central.topics]]
pattern = "chat/#"
direction = "both"
qos = 1
"##;
    let [admin_a, local_a, admin_b, local_b] = free_ports::<4>();
    let config_a = hub_config(admin_a, local_a, &broker.url(), "", rules)
        .replace("name = \"site\"", "name = \"hub-a\"");
    let config_b = hub_config(admin_b, local_b, &broker.url(), "", rules)
        .replace("name = \"site\"", "name = \"hub-b\"");
    let hub_a = Hub::start(&config_a, admin_a);
    let hub_b = Hub::start(&config_b, admin_b);

    let mut on_broker = MqttClient::connect(broker.port(), "broker-observer").await;
    on_broker.subscribe("chat/#", 1).await;
    let mut on_a = MqttClient::connect(local_a, "a-observer").await;
    on_a.subscribe("chat/#", 1).await;
    let mut on_b = MqttClient::connect(local_b, "b-observer").await;
    on_b.subscribe("chat/#", 1).await;
    let speaker = MqttClient::connect(local_a, "speaker").await;

    speaker.publish("chat/hello", 1, false, "hi").await;
    speaker.publish("chat/marker", 1, false, "end").await;
    for (place, observer) in [
        ("broker", &mut on_broker),
        ("hub A", &mut on_a),
        ("hub B", &mut on_b),
    ] {
        let seen = observer.until_topic("chat/marker").await;
        let hellos = seen.iter().filter(|m| m.topic == "chat/hello").count();
        assert_eq!(hellos, 1, "{place} saw {seen:?}");
        assert_eq!(seen.len(), 2, "{place} saw {seen:?}");
    }
    // And nothing comes back later either: a second marker arrives with nothing before it.
    speaker.publish("chat/marker2", 1, false, "end").await;
    for (place, observer) in [("broker", &mut on_broker), ("hub B", &mut on_b)] {
        let seen = observer.until_topic("chat/marker2").await;
        assert_eq!(seen.len(), 1, "{place} saw an echo: {seen:?}");
    }
    assert_eq!(
        hub_a.metric(r#"switchyard_messages_received_total{bridge="central"}"#),
        Some(0.0)
    );
    assert_eq!(
        hub_b.metric(r#"switchyard_messages_sent_total{bridge="central"}"#),
        Some(0.0)
    );
}

/// Adds QoS 1 stream messages (payload = sequence number) to `sequence` until all `count`
/// numbers are in it, or until none arrives for a while (the caller then reports what is
/// missing).
async fn collect_stream(client: &mut MqttClient, mut sequence: Vec<u32>, count: u32) -> Vec<u32> {
    let mut distinct: HashSet<u32> = sequence.iter().copied().collect();
    while distinct.len() < count as usize {
        let Some(message) = client.try_next(Duration::from_secs(20)).await else {
            break;
        };
        let number: u32 = payload_text(&message).parse().expect("numeric payload");
        distinct.insert(number);
        sequence.push(number);
    }
    sequence
}

/// The numbers below `count` that never arrived.
fn missing(sequence: &[u32], count: u32) -> Vec<u32> {
    let seen: HashSet<u32> = sequence.iter().copied().collect();
    (0..count).filter(|n| !seen.contains(n)).collect()
}

/// A short description of what is missing: how many, and the first few.
fn describe_missing(sequence: &[u32], count: u32) -> String {
    let gone = missing(sequence, count);
    let first: Vec<u32> = gone.iter().copied().take(10).collect();
    format!("{} missing, first {first:?}", gone.len())
}

/// Every number arrived, and duplicates aside, in the order it was published.
fn assert_complete_in_order(sequence: &[u32], count: u32, direction: &str) {
    let mut seen = HashSet::new();
    let firsts: Vec<u32> = sequence
        .iter()
        .copied()
        .filter(|n| seen.insert(*n))
        .collect();
    assert_eq!(
        firsts.len(),
        count as usize,
        "{direction}: {}",
        describe_missing(sequence, count)
    );
    let out_of_order = firsts.windows(2).filter(|pair| pair[0] > pair[1]).count();
    assert_eq!(
        out_of_order, 0,
        "{direction}: first deliveries out of order"
    );
}

/// The central broker restarts while the hub moves 10,000 QoS 1 messages each way: up
/// (site clients -> hub -> central) and down (a backlog queued on central for the hub's
/// persistent session -> hub -> a second, stable "sink" broker). The test's own
/// publishers never see the restart: the down stream is on the central broker (an observer
/// proves it) before the hub drains it, and the up publisher talks to the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_qos1_message() {
    const COUNT: u32 = 10_000;
    let mut central =
        Mosquitto::start_with("max_queued_messages 100000\nmax_inflight_messages 100\n");
    let sink = Mosquitto::start();
    let [admin, local] = free_ports::<2>();
    let rules = format!(
        r##"
[[bridges.central.topics]]
pattern = "up/#"
direction = "out"
qos = 1

[[bridges.central.topics]]
pattern = "down/#"
direction = "in"
qos = 1

[bridges.sink]
type = "mqtt"
url = "{}"
reconnect = {{ initial = "100ms", max = "1s" }}

[[bridges.sink.topics]]
pattern = "down/#"
direction = "out"
qos = 1
"##,
        sink.url()
    );
    let config = hub_config(
        admin,
        local,
        &central.url(),
        "clean_session = false",
        &rules,
    );
    let mut hub = Hub::start(&config, admin);
    let mut sink_view = MqttClient::connect(sink.port(), "sink-observer").await;
    sink_view.subscribe("down/#", 1).await;
    let mut remote_sub = MqttClient::connect_with(central.port(), "remote-sub", false).await;
    remote_sub.subscribe("up/#", 1).await;

    // The down stream waits on the central broker for the hub's session.
    hub.stop_async().await;
    let mut central_view = MqttClient::connect_with(central.port(), "down-observer", false).await;
    central_view.subscribe("down/#", 1).await;
    let remote_pub = MqttClient::connect(central.port(), "remote-pub").await;
    for number in 0..COUNT {
        remote_pub
            .publish("down/stream", 1, false, number.to_string())
            .await;
    }
    let on_central = collect_stream(&mut central_view, Vec::new(), COUNT).await;
    assert!(
        missing(&on_central, COUNT).is_empty(),
        "the central broker holds the whole down stream: {}",
        describe_missing(&on_central, COUNT)
    );
    // Whatever the central broker delivers of the up stream to an independent subscriber:
    // if the test's subscriber misses more than this one, the loss is not the hub's.
    let mut up_view = MqttClient::connect_with(central.port(), "up-observer", false).await;
    up_view.subscribe("up/#", 1).await;

    tokio::task::block_in_place(|| hub.restart());
    let local_pub = MqttClient::connect(local, "local-pub").await;
    let up_publisher = tokio::spawn(async move {
        for number in 0..COUNT {
            local_pub
                .publish("up/stream", 1, false, number.to_string())
                .await;
        }
        local_pub
    });
    // Restart the central broker once a fifth of the down stream has crossed.
    let down = collect_stream_until(&mut sink_view, (COUNT / 5) as usize).await;
    central = tokio::task::spawn_blocking(move || {
        central.restart();
        central
    })
    .await
    .expect("restart the central broker");

    let (up, down, up_observed) = tokio::join!(
        collect_stream(&mut remote_sub, Vec::new(), COUNT),
        collect_stream(&mut sink_view, down, COUNT),
        collect_stream(&mut up_view, Vec::new(), COUNT),
    );
    let _local_pub = up_publisher.await.expect("the up publisher finished");
    let sent = hub
        .metric_async(r#"switchyard_messages_sent_total{bridge="central"}"#)
        .await;
    eprintln!(
        "up: subscriber {}, observer {}; hub sent {sent:?} to central",
        describe_missing(&up, COUNT),
        describe_missing(&up_observed, COUNT)
    );
    assert_complete_in_order(&up, COUNT, "site -> central");
    assert_complete_in_order(&down, COUNT, "central -> hub -> sink");
    let reconnects = hub
        .wait_for_metric_async(
            r#"switchyard_bridge_reconnects_total{bridge="central"}"#,
            |v| v >= 1.0,
            Duration::from_secs(10),
        )
        .await;
    eprintln!(
        "fault test: up {} deliveries for {COUNT} messages, down {} deliveries, {reconnects} reconnect(s)",
        up.len(),
        down.len()
    );
    drop(central);
}

/// The first `count` stream numbers a subscriber receives.
async fn collect_stream_until(client: &mut MqttClient, count: usize) -> Vec<u32> {
    let mut sequence = Vec::with_capacity(count);
    while sequence.len() < count {
        let message = client.next("the first part of the stream").await;
        sequence.push(payload_text(&message).parse().expect("numeric payload"));
    }
    sequence
}

#[tokio::test]
async fn an_unreachable_broker_at_start_is_waited_for() {
    let mut broker = Mosquitto::start();
    broker.stop();
    let [admin, local] = free_ports::<2>();
    let rules = r##"
[[bridges.central.topics]]
pattern = "x/#"
direction = "both"
"##;
    let hub = Hub::start_unready(&hub_config(admin, local, &broker.url(), "", rules), admin);
    let body = hub
        .wait_for_http_async("/readyz", 503, Duration::from_secs(10))
        .await;
    assert!(
        body.contains("central"),
        "readyz names the bridge it waits for: {body}"
    );
    assert_eq!(
        hub.metric_async(r#"switchyard_bridge_up{bridge="central"}"#)
            .await,
        Some(0.0)
    );
    let broker = tokio::task::spawn_blocking(move || {
        broker.resume();
        broker
    })
    .await
    .expect("start the broker");
    hub.wait_for_http_async("/readyz", 200, Duration::from_secs(20))
        .await;
    assert_eq!(
        hub.metric_async(r#"switchyard_bridge_up{bridge="central"}"#)
            .await,
        Some(1.0)
    );
    drop(broker);
}
