//! The embedded default configuration, run as a user would (`switchyard run` without -c,
//! ports moved by environment overrides), against independent clients: mosquitto_pub and
//! mosquitto_sub, Python paho-mqtt over WebSocket, and a WebSocket client.

mod support;

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::mqtt::MqttClient;
use support::{free_ports, python, require_command, run_with_timeout, Hub, TestDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

struct Ports {
    mqtt: u16,
    mqtt_ws: u16,
    firehose: u16,
}

fn start_default() -> (Hub, Ports) {
    let [admin, mqtt, mqtt_ws, firehose, gateway, relay] = free_ports::<6>();
    let hub = Hub::builder(admin)
        .env(
            "SWITCHYARD_BRIDGES__GATEWAY__BIND",
            &format!("[\"tcp://127.0.0.1:{gateway}\"]"),
        )
        .env(
            "SWITCHYARD_BRIDGES__RELAY__BIND",
            &format!("[\"tcp://127.0.0.1:{relay}\"]"),
        )
        .env("SWITCHYARD_ADMIN__LISTEN", &format!("127.0.0.1:{admin}"))
        .env(
            "SWITCHYARD_BRIDGES__MQTT__LISTEN",
            &format!("127.0.0.1:{mqtt}"),
        )
        .env(
            "SWITCHYARD_BRIDGES__MQTT__WS_LISTEN",
            &format!("127.0.0.1:{mqtt_ws}"),
        )
        .env(
            "SWITCHYARD_BRIDGES__FIREHOSE__LISTEN",
            &format!("127.0.0.1:{firehose}"),
        )
        .start();
    (
        hub,
        Ports {
            mqtt,
            mqtt_ws,
            firehose,
        },
    )
}

async fn websocket(port: u16, query: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/{query}");
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(&url))
        .await
        .unwrap_or_else(|_| panic!("no WebSocket handshake with {url} within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// The next text frame, parsed, with its raw text.
async fn next_json(ws: &mut Ws, awaited: &str) -> (serde_json::Value, String) {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame ({awaited}) within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the WebSocket closed while awaiting {awaited}"))
            .unwrap_or_else(|e| panic!("WebSocket error while awaiting {awaited}: {e}"));
        if let WsMessage::Text(text) = frame {
            let text = text.to_string();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {text}: {e}"));
            return (value, text);
        }
    }
}

async fn subscribe(ws: &mut Ws, filter: &str) {
    let request = serde_json::json!({"op": "subscribe", "filter": filter}).to_string();
    ws.send(WsMessage::text(request))
        .await
        .expect("send subscribe");
    let (reply, text) = next_json(ws, "the subscribe reply").await;
    assert_eq!(reply["op"], "subscribed", "{text}");
}

/// Starts `mosquitto_sub -C count` and returns once it has its SUBACK.
async fn mosquitto_sub(port: u16, filter: &str, count: usize) -> tokio::process::Child {
    // Line-buffered, so the SUBACK line is seen when it happens, not at exit.
    let mut child = tokio::process::Command::new(require_command("stdbuf"))
        .arg("-oL")
        .arg(require_command("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            filter,
            "-v",
            "-d",
        ])
        .args(["-C", &count.to_string(), "-W", "30"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mosquitto_sub");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read mosquitto_sub") {
            if line.contains("SUBACK") {
                return;
            }
        }
        panic!("mosquitto_sub ended before its SUBACK");
    })
    .await
    .expect("mosquitto_sub subscribed in time");
    // Keep reading the rest from the child's output later.
    child.stdout = None;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn mosquitto_pub(port: u16, topic: &str, message: &[&str]) {
    let program = require_command("mosquitto_pub");
    let output = run_with_timeout(
        std::process::Command::new(program)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                topic,
                "-q",
                "1",
            ])
            .args(message),
        WAIT,
    );
    assert!(output.status.success(), "mosquitto_pub failed: {output:?}");
}

#[tokio::test]
async fn mosquitto_pub_reaches_the_firehose_and_mosquitto_sub_byte_exact() {
    let (hub, ports) = start_default();
    let mut ws = websocket(ports.firehose, "").await;
    subscribe(&mut ws, "tour/#").await;
    let sub = mosquitto_sub(ports.mqtt, "tour/#", 3).await;

    let dir = TestDir::new("binary-payload");
    let binary = dir.write("payload.bin", "");
    std::fs::write(&binary, [0xff_u8, 0x00, 0xfe]).expect("write binary payload");
    let json_payload = r#"{"x": [1, 2.50], "y": "é"}"#;
    mosquitto_pub(ports.mqtt, "tour/json", &["-m", json_payload]);
    mosquitto_pub(ports.mqtt, "tour/text", &["-m", "héllo wörld"]);
    mosquitto_pub(ports.mqtt, "tour/bin", &["-f", binary.to_str().unwrap()]);

    let (json, raw) = next_json(&mut ws, "the JSON message").await;
    assert_eq!(json["topic"], "tour/json");
    assert!(
        raw.contains(&format!("\"payload\":{json_payload}")),
        "a JSON payload is embedded byte for byte: {raw}"
    );
    let (text, raw) = next_json(&mut ws, "the text message").await;
    assert_eq!(text["payload"], "héllo wörld", "{raw}");
    assert_eq!(text["qos"], 1);
    let (binary, raw) = next_json(&mut ws, "the binary message").await;
    assert_eq!(binary["payload_base64"], "/wD+", "{raw}");
    assert!(binary.get("payload").is_none(), "{raw}");

    let output = tokio::time::timeout(WAIT, sub.wait_with_output())
        .await
        .expect("mosquitto_sub got its three messages")
        .expect("mosquitto_sub ran");
    assert!(output.status.success(), "mosquitto_sub: {output:?}");

    assert!(
        hub.metric_async(r#"switchyard_messages_received_total{bridge="mqtt"}"#)
            .await
            >= Some(3.0)
    );
    assert!(
        hub.metric_async(r#"switchyard_messages_sent_total{bridge="firehose"}"#)
            .await
            >= Some(3.0)
    );
    assert!(
        hub.metric_async("switchyard_forward_latency_seconds_count")
            .await
            >= Some(6.0)
    );
    assert_eq!(
        hub.metric_async(r#"switchyard_connections{bridge="firehose"}"#)
            .await,
        Some(1.0)
    );
    let (status, bridges) = hub.http_get_async("/api/bridges").await;
    assert_eq!(status, 200);
    let bridges: serde_json::Value = serde_json::from_str(&bridges).expect("JSON");
    assert_eq!(bridges[0]["name"], "firehose");
    assert_eq!(bridges[0]["state"], "up");
}

#[tokio::test]
async fn paho_speaks_mqtt_over_websocket_in_v311_and_v5() {
    let (_hub, ports) = start_default();
    let script = r##"
import sys, paho.mqtt.client as mqtt
port, version = int(sys.argv[1]), sys.argv[2]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws-" + version,
                     transport="websockets", protocol=protocol)
client.ws_set_options(path="/mqtt")
got = []
def on_connect(c, userdata, flags, reason, properties):
    c.subscribe("paho/#", qos=1)
def on_subscribe(c, userdata, mid, reasons, properties):
    c.publish("paho/hello", "over websocket " + version, qos=1)
def on_message(c, userdata, message):
    got.append(message.payload.decode())
    c.disconnect()
client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
client.connect("127.0.0.1", port, keepalive=10)
client.loop_forever(timeout=1.0)
print("RECEIVED", got[0])
"##;
    for version in ["3", "5"] {
        let output = run_with_timeout(
            std::process::Command::new(python()).args([
                "-c",
                script,
                &ports.mqtt_ws.to_string(),
                version,
            ]),
            WAIT,
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success()
                && stdout.contains(&format!("RECEIVED over websocket {version}")),
            "paho v{version} over WebSocket: {output:?}"
        );
    }
}

#[tokio::test]
async fn garbage_on_every_port_leaves_other_clients_alone() {
    let (hub, ports) = start_default();
    let mut subscriber = MqttClient::connect(ports.mqtt, "steady-subscriber").await;
    subscriber.subscribe("steady/#", 1).await;
    let mut ws = websocket(ports.firehose, "").await;
    subscribe(&mut ws, "steady/#").await;

    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for port in [ports.mqtt, ports.mqtt_ws, ports.firehose] {
        let mut socket = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        // The hub may close the socket while we write; either way it must stay up.
        let _ = socket.write_all(&garbage).await;
        let _ = socket.write_all(b"\x30\xff\xff\xff\xff\x7f").await;
    }
    let publisher = MqttClient::connect(ports.mqtt, "steady-publisher").await;
    publisher
        .publish("steady/after", 1, false, "still here")
        .await;
    assert_eq!(
        subscriber.next("a message after the garbage").await.topic,
        "steady/after"
    );
    let (message, raw) = next_json(&mut ws, "a firehose message after the garbage").await;
    assert_eq!(message["topic"], "steady/after", "{raw}");
    let (status, _) = hub.http_get_async("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn websocket_publishes_reach_mqtt_only_where_an_in_rule_allows() {
    let [admin, mqtt, firehose] = free_ports::<3>();
    let config = format!(
        r##"
[admin]
listen = "127.0.0.1:{admin}"

[bridges.mqtt]
type = "mqtt-server"
listen = "127.0.0.1:{mqtt}"
[[bridges.mqtt.topics]]
pattern = "#"
direction = "both"
qos = 1

[bridges.web]
type = "websocket-server"
listen = "127.0.0.1:{firehose}"
[[bridges.web.topics]]
pattern = "#"
direction = "out"
qos = 1
[[bridges.web.topics]]
pattern = "from-web/#"
direction = "in"
qos = 1
"##
    );
    let hub = Hub::start(&config, admin);
    let mut subscriber = MqttClient::connect(mqtt, "web-listener").await;
    subscriber.subscribe("#", 1).await;
    let mut ws = websocket(firehose, "").await;
    let publish = serde_json::json!({"op": "publish", "topic": "from-web/greeting",
        "payload": {"hello": "mqtt"}, "qos": 1, "id": "w-1"});
    ws.send(WsMessage::text(publish.to_string()))
        .await
        .expect("send publish");
    let (ack, raw) = next_json(&mut ws, "the publish ack").await;
    assert_eq!(
        (ack["op"].as_str(), ack["id"].as_str()),
        (Some("ack"), Some("w-1")),
        "{raw}"
    );
    let received = subscriber.next("the WebSocket publish on MQTT").await;
    assert_eq!(received.topic, "from-web/greeting");
    assert_eq!(&received.payload[..], br#"{"hello":"mqtt"}"#);

    let denied = serde_json::json!({"op": "publish", "topic": "elsewhere", "payload": "x"});
    ws.send(WsMessage::text(denied.to_string()))
        .await
        .expect("send publish");
    let (error, raw) = next_json(&mut ws, "the denial").await;
    assert_eq!(
        (error["op"].as_str(), error["reason"].as_str()),
        (Some("error"), Some("denied")),
        "{raw}"
    );
    assert_eq!(
        hub.metric_async(r#"switchyard_messages_dropped_total{bridge="web",reason="denied"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_closes_clients() {
    let (mut hub, ports) = start_default();
    let mut ws = websocket(ports.firehose, "").await;
    subscribe(&mut ws, "#").await;
    let status = hub.stop_async().await;
    assert!(
        status.success(),
        "the hub exits with 0 on SIGTERM: {status}"
    );
    // The firehose client is told, rather than left hanging on a dead socket.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the WebSocket client saw the connection end"
    );
}
