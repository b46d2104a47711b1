//! Live reload (SIGHUP and `POST /api/reload`) while QoS 1 messages flow: unchanged bridges
//! keep their connections and lose nothing, an added bridge starts, a changed one restarts
//! with its new rules, a removed one stops, and a broken configuration is refused while the
//! old one keeps running.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::mqtt::MqttClient;
use support::{free_ports, poll_async, Hub, Mosquitto};

/// Messages of the stream that crosses the reload.
const STREAM: usize = 3000;

/// How long a reload may take to show in `/api/bridges` or the log.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// A hub with an embedded broker `local` and one `mqtt` bridge to `url` per entry of
/// `remotes` (name, `out` pattern); `extra` is appended.
fn config(admin: u16, local: u16, url: &str, remotes: &[(&str, &str)], extra: &str) -> String {
    let mut toml = format!(
        r##"
[hub]
name = "reload"
shutdown_timeout = "3s"

[admin]
listen = "127.0.0.1:{admin}"

[bridges.local]
type = "mqtt-server"
listen = "127.0.0.1:{local}"
client_queue = 50000
topics = [{{ pattern = "#", direction = "both", qos = 1 }}]
"##
    );
    for (name, pattern) in remotes {
        toml.push_str(&format!(
            r##"
[bridges.{name}]
type = "mqtt"
url = "{url}"
reconnect = {{ initial = "100ms", max = "1s" }}
topics = [{{ pattern = "{pattern}", direction = "out", qos = 1 }}]
"##
        ));
    }
    toml.push_str(extra);
    toml
}

/// Names listed by `/api/bridges`.
async fn bridge_names(hub: &Hub) -> Vec<String> {
    let (status, body) = hub.http_get_async("/api/bridges").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON bridge list");
    list.as_array()
        .expect("an array")
        .iter()
        .map(|bridge| bridge["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// How many times Mosquitto saw a client with this id connect.
fn connects(broker: &Mosquitto, client_id: &str) -> usize {
    broker.logs().matches(&format!(" as {client_id} ")).count()
}

/// Waits until `/api/bridges` lists exactly `expected`.
async fn wait_for_bridges(hub: &Hub, expected: &[&str]) {
    let found = poll_async(RELOAD_TIMEOUT, || async {
        let names = bridge_names(hub).await;
        if names == expected {
            Ok(())
        } else {
            Err(names)
        }
    });
    if let Err(names) = found.await {
        panic!("/api/bridges lists {names:?}, expected {expected:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_bridges_and_refuses_a_broken_configuration() {
    let remote = Mosquitto::start();
    let url = remote.url();
    let [admin, local] = free_ports::<2>();
    let before = config(
        admin,
        local,
        &url,
        &[("up", "flow/#"), ("side", "side/#"), ("gone", "gone/#")],
        "",
    );
    let after = config(
        admin,
        local,
        &url,
        &[("up", "flow/#"), ("side", "other/#"), ("added", "added/#")],
        "",
    );
    let hub = Hub::builder(admin).config(&before).start();
    wait_for_bridges(&hub, &["gone", "local", "side", "up"]).await;

    let mut collector = MqttClient::connect(remote.port(), "reload-collector").await;
    for filter in ["flow/#", "other/#", "added/#", "side/#"] {
        collector.subscribe(filter, 1).await;
    }
    collector
        .subscribe("switchyard/reload/bridges/gone/state", 1)
        .await;

    // A QoS 1 stream through `local` and `up`, neither of which changes.
    let publisher = MqttClient::connect(local, "reload-publisher").await;
    let published = Arc::new(AtomicUsize::new(0));
    let stream = {
        let published = Arc::clone(&published);
        tokio::spawn(async move {
            for index in 0..STREAM {
                publisher
                    .publish(&format!("flow/{index}"), 1, false, index.to_string())
                    .await;
                published.store(index + 1, Ordering::SeqCst);
                if index % 50 == 49 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            publisher
        })
    };
    poll_async(RELOAD_TIMEOUT, || async {
        (published.load(Ordering::SeqCst) >= STREAM / 3)
            .then_some(())
            .ok_or(())
    })
    .await
    .expect("a third of the stream was published");

    hub.rewrite_config(0, &after);
    hub.signal(libc::SIGHUP);
    wait_for_bridges(&hub, &["added", "local", "side", "up"]).await;
    assert!(
        published.load(Ordering::SeqCst) < STREAM,
        "the reload happened while the stream was still being published"
    );
    let publisher = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("the stream was published")
        .expect("the publisher task");

    // The changed bridge runs with its new rule, the added one works.
    publisher.publish("other/x", 1, false, "changed").await;
    publisher.publish("added/x", 1, false, "added").await;
    let mut flow = BTreeSet::new();
    let mut seen_other = false;
    let mut seen_added = false;
    let mut gone_state = Vec::new();
    while flow.len() < STREAM || !seen_other || !seen_added || !gone_state.contains(&"0".to_owned())
    {
        let Some(message) = collector.try_next(Duration::from_secs(20)).await else {
            panic!(
                "the collector stopped receiving: {} of {STREAM} stream messages, other {seen_other}, added {seen_added}, gone state {gone_state:?}",
                flow.len()
            );
        };
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        match message.topic.as_str() {
            "other/x" => seen_other = true,
            "added/x" => seen_added = true,
            "switchyard/reload/bridges/gone/state" => gone_state.push(payload),
            topic if topic.starts_with("flow/") => {
                flow.insert(payload.parse::<usize>().expect("a numbered payload"));
            }
            other => panic!("unexpected message on {other}"),
        }
    }
    assert_eq!(flow.len(), STREAM, "every stream message arrived");
    assert_eq!(
        hub.metric_async(r#"switchyard_bridge_reconnects_total{bridge="up"}"#)
            .await,
        Some(0.0)
    );
    assert_eq!(
        hub.metric_async(r#"switchyard_connections{bridge="local"}"#)
            .await,
        Some(1.0),
        "the publisher and nobody else: its connection was never dropped"
    );
    assert_eq!(
        connects(&remote, "switchyard-reload-up"),
        1,
        "`up` kept its connection"
    );
    assert_eq!(
        connects(&remote, "switchyard-reload-side"),
        2,
        "`side` restarted"
    );
    assert_eq!(connects(&remote, "switchyard-reload-added"), 1);
    assert!(
        remote
            .logs()
            .contains("Client switchyard-reload-gone disconnected"),
        "the removed bridge disconnected cleanly"
    );
    let logs = hub.logs();
    assert!(
        logs.contains(
            "added: added; changed (restarted): side; removed: gone; unchanged: local, up"
        ),
        "the reload is logged with what changed:\n{logs}"
    );

    // A broken configuration is refused, by SIGHUP and by POST, and the old one runs on.
    let broken = config(
        admin,
        local,
        &url,
        &[("up", "flow/#"), ("side", "other/#"), ("added", "added/#")],
        "\n[bridges.broken]\ntype = \"mqtt\"\nbogus_key = 1\n",
    );
    hub.rewrite_config(0, &broken);
    hub.signal(libc::SIGHUP);
    poll_async(RELOAD_TIMEOUT, || async {
        hub.logs()
            .contains("The new configuration is refused")
            .then_some(())
            .ok_or(())
    })
    .await
    .expect("the refused SIGHUP reload is logged");
    assert!(hub.logs().contains("bridges.broken"), "{}", hub.logs());
    let (status, body) = hub.http_post_async("/api/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("bridges.broken") && body.contains("bogus_key"),
        "the reply names the key: {body}"
    );
    assert_eq!(
        bridge_names(&hub).await,
        ["added", "local", "side", "up"],
        "the previous configuration keeps running"
    );
    publisher.publish("flow/after", 1, false, "after").await;
    let seen = collector.until_topic("flow/after").await;
    assert_eq!(
        String::from_utf8_lossy(&seen.last().unwrap().payload),
        "after"
    );

    // POST with a valid configuration: nothing changed, nothing restarted.
    hub.rewrite_config(0, &after);
    let (status, body) = hub.http_post_async("/api/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("unchanged: added, local, side, up"), "{body}");
    assert_eq!(connects(&remote, "switchyard-reload-side"), 2);
}
