//! The embedded broker's hazards (issue 10, DESIGN.md "The embedded broker"), each a
//! regression test against the real binary: no client can crash, stall or silently starve
//! the hub. Independent clients where it matters: Python paho-mqtt (MQTT 3.1.1 and 5, TCP
//! and WebSocket), mosquitto_pub and mosquitto_sub, rumqttc ([`MqttClient`]), and raw TCP
//! sockets for what no well-behaved client does (bad client ids, silence, never reading).

mod support;

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{json, Value};
use support::mqtt::MqttClient;
use support::{free_ports, python, require_command, run_with_timeout, Hub};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(20);

const LAGGED: &str = r#"switchyard_messages_dropped_total{bridge="mqtt",reason="lagged"}"#;
const DROPPED: &str = r#"switchyard_messages_dropped_total{bridge="mqtt"}"#;
const CONNECTIONS: &str = r#"switchyard_connections{bridge="mqtt"}"#;

/// A hub whose only bridge is an `mqtt-server` called `mqtt` (TCP and WebSocket), passing
/// every topic both ways; `extra` adds keys to the bridge's table.
struct Broker {
    hub: Hub,
    tcp: u16,
    ws: u16,
}

impl Broker {
    fn start(extra: &str) -> Broker {
        let [admin, tcp, ws] = free_ports::<3>();
        let config = format!(
            r##"
            [hub]
            name = "hazards"
            [admin]
            listen = "127.0.0.1:{admin}"
            [bridges.mqtt]
            type = "mqtt-server"
            listen = "127.0.0.1:{tcp}"
            ws_listen = "127.0.0.1:{ws}"
            {extra}
            [[bridges.mqtt.topics]]
            pattern = "#"
            direction = "both"
            qos = 1
            "##
        );
        Broker {
            hub: Hub::start(&config, admin),
            tcp,
            ws,
        }
    }

    async fn metric(&self, selector: &str) -> f64 {
        self.hub.metric_async(selector).await.unwrap_or(0.0)
    }

    /// The hub process is alive, its admin API answers and the bridge is up.
    async fn assert_up(&self) {
        assert_eq!(self.hub.http_get_async("/healthz").await.0, 200);
        let up = r#"switchyard_bridge_up{bridge="mqtt"}"#;
        assert_eq!(
            self.hub.metric_async(up).await,
            Some(1.0),
            "the bridge is up"
        );
    }
}

// ---- raw MQTT 3.1.1 over TCP -----------------------------------------------------------

/// A raw MQTT 3.1.1 connection: packets written by hand, read only when the test says so.
struct RawClient {
    stream: TcpStream,
    input: BytesMut,
}

impl RawClient {
    /// Connects and sends CONNECT for `client_id` (no keepalive), without waiting.
    async fn connect(port: u16, client_id: &str) -> RawClient {
        RawClient::connect_with(TcpStream::connect(("127.0.0.1", port)).await, client_id).await
    }

    async fn connect_with(stream: std::io::Result<TcpStream>, client_id: &str) -> RawClient {
        RawClient::connect_keeping_alive(stream, client_id, 0).await
    }

    /// Connects and sends CONNECT asking for a keepalive of `keep_alive` seconds.
    async fn connect_keeping_alive(
        stream: std::io::Result<TcpStream>,
        client_id: &str,
        keep_alive: u16,
    ) -> RawClient {
        let mut client = RawClient {
            stream: stream.expect("connect to the broker"),
            input: BytesMut::new(),
        };
        let mut connect = rumqttc::Connect::new(client_id);
        connect.keep_alive = keep_alive;
        client.send(rumqttc::Packet::Connect(connect)).await;
        client
    }

    async fn send(&mut self, packet: rumqttc::Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, usize::MAX).expect("encode");
        self.stream
            .write_all(&bytes)
            .await
            .expect("write to broker");
    }

    /// The next packet; `None` once the server closed the connection.
    async fn read(&mut self) -> Option<rumqttc::Packet> {
        let read = async {
            loop {
                match rumqttc::Packet::read(&mut self.input, 1 << 20) {
                    Ok(packet) => return Some(packet),
                    Err(rumqttc::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("unreadable packet from the broker: {error}"),
                }
                match self.stream.read_buf(&mut self.input).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no packet from the broker within {WAIT:?}"))
    }

    /// The CONNACK's return code.
    async fn connack(&mut self) -> rumqttc::ConnectReturnCode {
        match self.read().await {
            Some(rumqttc::Packet::ConnAck(connack)) => connack.code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Subscribes at QoS 0 and waits for SUBACK.
    async fn subscribe(&mut self, filter: &str) {
        let subscribe = rumqttc::Subscribe::new(filter, rumqttc::QoS::AtMostOnce);
        self.send(rumqttc::Packet::Subscribe(subscribe)).await;
        match self.read().await {
            Some(rumqttc::Packet::SubAck(suback)) => assert_eq!(
                suback.return_codes,
                [rumqttc::SubscribeReasonCode::Success(
                    rumqttc::QoS::AtMostOnce
                )]
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Whether the server closed the connection (after whatever it still had to send).
    async fn closed_by_server(&mut self) -> bool {
        while self.read().await.is_some() {}
        true
    }
}

// ---- Python paho-mqtt ------------------------------------------------------------------

/// A paho-mqtt client driven by JSON lines on stdin, reporting events as JSON lines.
const PAHO_AGENT: &str = r#"
import json, sys
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()

options = json.loads(sys.argv[1])
v5 = options["version"] == 5
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=options["id"],
                     protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                     transport=options["transport"])
if options["transport"] == "websockets":
    client.ws_set_options(path="/mqtt")

def on_connect(client, userdata, flags, reason_code, properties):
    emit(event="connected", code=reason_code.value)

def on_subscribe(client, userdata, mid, reason_codes, properties):
    emit(event="subscribed", codes=[code.value for code in reason_codes])

def on_publish(client, userdata, mid, reason_code, properties):
    emit(event="published", mid=mid)

def on_message(client, userdata, message):
    properties = getattr(message.properties, "UserProperty", None) or []
    emit(event="message", topic=message.topic, payload=message.payload.decode("utf-8", "replace"),
         qos=message.qos, retain=bool(message.retain), properties=[list(p) for p in properties])

def on_disconnect(client, userdata, flags, reason_code, properties):
    emit(event="disconnected", code=reason_code.value)

client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_publish = on_publish
client.on_message = on_message
client.on_disconnect = on_disconnect
client.connect("127.0.0.1", options["port"], keepalive=options["keepalive"])
client.loop_start()
for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "subscribe":
        client.subscribe(command["filter"], qos=command["qos"])
    elif command["op"] == "publish":
        properties = None
        if command["properties"]:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [tuple(p) for p in command["properties"]]
        client.publish(command["topic"], command["payload"], qos=command["qos"],
                       retain=command["retain"], properties=properties)
client.disconnect()
client.loop_stop()
"#;

/// A running paho-mqtt client.
struct Paho {
    name: String,
    _child: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
    /// Events read while awaiting another kind, oldest first (a message may arrive
    /// before the PUBACK of the publish that caused it).
    backlog: VecDeque<Value>,
}

impl Paho {
    /// Connects (MQTT `version` 4 or 5, `transport` "tcp" or "websockets") and waits for
    /// a successful CONNACK.
    async fn connect(port: u16, id: &str, version: u8, transport: &str) -> Paho {
        Paho::connect_keeping_alive(port, id, version, transport, 30).await
    }

    /// [`Paho::connect`] with a keepalive of `keep_alive` seconds.
    async fn connect_keeping_alive(
        port: u16,
        id: &str,
        version: u8,
        transport: &str,
        keep_alive: u16,
    ) -> Paho {
        let options = json!({"id": id, "port": port, "version": version, "transport": transport,
                             "keepalive": keep_alive});
        let mut child = Command::new(python())
            .args(["-c", PAHO_AGENT, &options.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the paho-mqtt client");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut paho = Paho {
            name: format!("paho {id} (MQTT {version} over {transport})"),
            _child: child,
            stdin,
            events: BufReader::new(stdout).lines(),
            backlog: VecDeque::new(),
        };
        let connected = paho.next("connected").await;
        assert_eq!(connected["code"], 0, "{}: {connected}", paho.name);
        paho
    }

    async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to paho");
    }

    /// The oldest unseen event of kind `wanted`; other kinds are kept for later. Any
    /// disconnection fails the test.
    async fn next(&mut self, wanted: &str) -> Value {
        if let Some(index) = self
            .backlog
            .iter()
            .position(|event| event["event"] == wanted)
        {
            return self.backlog.remove(index).expect("index in range");
        }
        let name = self.name.clone();
        let next = async {
            loop {
                let line = self.events.next_line().await.expect("read paho's output");
                let line = line.unwrap_or_else(|| panic!("{name} exited awaiting {wanted}"));
                let event: Value = serde_json::from_str(&line).expect("paho event");
                match event["event"].as_str() {
                    Some(kind) if kind == wanted => return event,
                    Some("disconnected") => panic!("{name} was disconnected: {event}"),
                    _ => self.backlog.push_back(event),
                }
            }
        };
        timeout(WAIT, next)
            .await
            .unwrap_or_else(|_| panic!("{name}: no {wanted} within {WAIT:?}"))
    }

    /// Subscribes; returns the SUBACK codes.
    async fn subscribe(&mut self, filter: &str, qos: u8) -> Value {
        self.command(json!({"op": "subscribe", "filter": filter, "qos": qos}))
            .await;
        self.next("subscribed").await["codes"].clone()
    }

    /// Publishes and, for QoS 1, waits for PUBACK.
    async fn publish(&mut self, topic: &str, payload: &str, qos: u8, retain: bool, props: Value) {
        let command = json!({"op": "publish", "topic": topic, "payload": payload, "qos": qos,
                             "retain": retain, "properties": props});
        self.command(command).await;
        if qos > 0 {
            self.next("published").await;
        }
    }

    /// The client still has a working connection: it subscribes to a topic of its own,
    /// publishes there at QoS 1 and receives the message back, with no disconnection.
    async fn assert_alive(&mut self) {
        let topic = format!("alive/{}", self.name.replace(' ', "_"));
        assert_eq!(self.subscribe(&topic, 1).await, json!([1]));
        self.publish(&topic, "ping", 1, false, json!([])).await;
        let echo = self.next("message").await;
        assert_eq!(echo["topic"], topic.as_str(), "{}: {echo}", self.name);
    }
}

// ---- mosquitto clients -----------------------------------------------------------------

fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let output = run_with_timeout(
        std::process::Command::new(require_command("mosquitto_pub")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ]),
        WAIT,
    );
    assert!(output.status.success(), "mosquitto_pub failed: {output:?}");
}

/// `mosquitto_sub -V 311` on `filters`, started and subscribed; yields its output lines
/// (`topic payload`).
async fn mosquitto_sub(
    port: u16,
    filters: &[&str],
    count: usize,
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut command = Command::new(require_command("stdbuf"));
    command
        .arg("-oL")
        .arg(require_command("mosquitto_sub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "311",
            "-v",
            "-d",
        ])
        .args(["-C", &count.to_string(), "-W", "30"]);
    for filter in filters {
        command.args(["-t", filter]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mosquitto_sub");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let subscribed = async {
        while let Some(line) = lines.next_line().await.expect("read mosquitto_sub") {
            if line.contains("SUBACK") {
                return;
            }
        }
        panic!("mosquitto_sub ended before its SUBACK");
    };
    timeout(WAIT, subscribed)
        .await
        .expect("mosquitto_sub subscribed in time");
    (child, lines)
}

/// The next line of mosquitto_sub's output that is a message (not a `-d` debug line).
async fn next_message_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    let next = async {
        loop {
            let line = lines.next_line().await.expect("read mosquitto_sub");
            let line = line.expect("mosquitto_sub ended before the message");
            let debug = ["Client ", "Subscribed", "Received", "Sending"];
            if !debug.iter().any(|prefix| line.starts_with(prefix)) {
                return line;
            }
        }
    };
    timeout(WAIT, next)
        .await
        .expect("mosquitto_sub got a message in time")
}

// ---- tests -----------------------------------------------------------------------------

/// rumqttd 0.20 panicked its router on a topic starting with a non-ASCII character.
#[tokio::test]
async fn topics_starting_with_non_ascii_characters_are_forwarded() {
    let broker = Broker::start("");
    let mut rumqttc = MqttClient::connect(broker.tcp, "hazard-rumqttc").await;
    rumqttc.subscribe("#", 1).await;
    let (_sub, mut lines) = mosquitto_sub(broker.tcp, &["é/#", "日本/#"], 3).await;

    mosquitto_pub(broker.tcp, "é/x", "accent");
    mosquitto_pub(broker.tcp, "日本/y", "kanji");
    // The same first bytes from a raw client, at QoS 0.
    let mut raw = RawClient::connect(broker.tcp, "hazard-raw").await;
    assert_eq!(raw.connack().await, rumqttc::ConnectReturnCode::Success);
    let publish = rumqttc::Publish::new("é/raw", rumqttc::QoS::AtMostOnce, "raw");
    raw.send(rumqttc::Packet::Publish(publish)).await;

    for (topic, payload) in [("é/x", "accent"), ("日本/y", "kanji"), ("é/raw", "raw")] {
        let message = rumqttc.next(topic).await;
        assert_eq!(
            (message.topic.as_str(), &message.payload[..]),
            (topic, payload.as_bytes())
        );
        assert_eq!(
            next_message_line(&mut lines).await,
            format!("{topic} {payload}")
        );
    }
    broker.assert_up().await;
    mosquitto_pub(broker.tcp, "after", "still forwarding");
    assert_eq!(rumqttc.next("after").await.topic, "after");
    assert_eq!(broker.metric(DROPPED).await, 0.0, "nothing was dropped");
}

/// rumqttd 0.20 poisoned its listener on a repeated invalid client id and on clients
/// beyond `max_connections`.
#[tokio::test]
async fn bad_client_ids_and_clients_beyond_the_cap_leave_the_listener_working() {
    const CAP: usize = 10;
    const BEYOND: usize = 300;
    let broker = Broker::start(&format!("max_connections = {CAP}"));
    // `/` is a valid client id character for this broker: each CONNECT takes the
    // identifier over from the previous one (MQTT 3.1.1 section 3.1.4).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::connect(broker.tcp, "bad/id").await;
        assert_eq!(client.connack().await, rumqttc::ConnectReturnCode::Success);
        if let Some(mut previous) = held.pop() {
            assert!(RawClient::closed_by_server(&mut previous).await);
        }
        held.push(client);
    }
    for index in 1..CAP {
        let mut client = RawClient::connect(broker.tcp, &format!("held-{index}")).await;
        assert_eq!(client.connack().await, rumqttc::ConnectReturnCode::Success);
        held.push(client);
    }
    // All at once, beyond the cap.
    let extra = (0..BEYOND).map(|index| {
        let port = broker.tcp;
        tokio::spawn(async move {
            let mut client = RawClient::connect(port, &format!("extra-{index}")).await;
            let code = client.connack().await;
            (code, client.closed_by_server().await)
        })
    });
    for answer in futures_util::future::join_all(extra).await {
        let (code, closed) = answer.expect("extra client task");
        assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable);
        assert!(closed, "a refused client is disconnected");
    }
    broker.assert_up().await;
    assert_eq!(broker.metric(CONNECTIONS).await, CAP as f64);

    drop(held);
    broker
        .hub
        .wait_for_metric_async(CONNECTIONS, |open| open == 0.0, WAIT)
        .await;
    let mut subscriber = MqttClient::connect(broker.tcp, "good-subscriber").await;
    subscriber.subscribe("good/#", 1).await;
    mosquitto_pub(broker.tcp, "good/after", "accepted");
    let message = subscriber.next("good/after").await;
    assert_eq!(&message.payload[..], b"accepted");
}

/// rumqttd 0.20's WebSocket listener had no handshake timeout: one silent socket blocked
/// every later WebSocket client. Both MQTT versions work over WebSocket.
#[tokio::test]
async fn a_silent_socket_on_the_websocket_port_does_not_delay_real_clients() {
    // A long connect_timeout: the clients must get in while the silent sockets still wait.
    let broker = Broker::start(r#"connect_timeout = "60s""#);
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            TcpStream::connect(("127.0.0.1", broker.ws))
                .await
                .expect("connect"),
        );
    }
    // One more that starts an HTTP request and stops half-way.
    let mut half = TcpStream::connect(("127.0.0.1", broker.ws))
        .await
        .expect("connect");
    half.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    silent.push(half);

    for version in [4, 5] {
        let id = format!("ws-v{version}");
        let mut client = Paho::connect(broker.ws, &id, version, "websockets").await;
        client.assert_alive().await;
    }
    // The silent sockets are still open (and unanswered), so the clients did not get in
    // by waiting for them to time out.
    for socket in &mut silent {
        let mut byte = [0u8; 1];
        let still_waiting = timeout(Duration::from_millis(100), socket.read(&mut byte)).await;
        assert!(
            still_waiting.is_err(),
            "a silent socket was answered or closed early"
        );
    }
    broker.assert_up().await;
}

/// The handshake and CONNECT time limits close sockets that never get anywhere.
#[tokio::test]
async fn silent_websocket_connections_are_closed_after_connect_timeout() {
    use futures_util::StreamExt;

    let broker = Broker::start(r#"connect_timeout = "1s""#);
    let mut silent = TcpStream::connect(("127.0.0.1", broker.ws))
        .await
        .expect("connect");
    // A WebSocket that completes its handshake and then never sends CONNECT.
    let url = format!("ws://127.0.0.1:{}/mqtt", broker.ws);
    let (mut handshaken, _) = timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut byte = [0u8; 1];
    let closed = timeout(WAIT, silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the silent socket is closed"
    );
    let ended = timeout(WAIT, async {
        while let Some(Ok(frame)) = handshaken.next().await {
            if frame.is_close() {
                break;
            }
        }
    });
    ended
        .await
        .expect("the WebSocket without CONNECT is closed");
    broker.assert_up().await;
}

/// rumqttd 0.20 panicked a v4 connection on a PUBLISH carrying v5 properties; a retained
/// one then killed every later matching v4 subscriber.
#[tokio::test]
async fn a_retained_v5_publish_with_user_properties_reaches_v4_subscribers() {
    let broker = Broker::start("");
    let mut live = Paho::connect(broker.tcp, "v4-live", 4, "tcp").await;
    assert_eq!(live.subscribe("props/#", 1).await, json!([1]));
    let mut live_ws = Paho::connect(broker.ws, "v4-live-ws", 4, "websockets").await;
    assert_eq!(live_ws.subscribe("props/#", 1).await, json!([1]));
    let mut v5_live = Paho::connect(broker.tcp, "v5-live", 5, "tcp").await;
    assert_eq!(v5_live.subscribe("props/#", 1).await, json!([1]));

    let mut publisher = Paho::connect(broker.tcp, "v5-publisher", 5, "tcp").await;
    let properties = json!([["source", "sensor-7"], ["unit", "°C"]]);
    publisher
        .publish("props/t", "21.5", 1, true, properties)
        .await;

    for client in [&mut live, &mut live_ws] {
        let message = client.next("message").await;
        assert_eq!(
            (&message["topic"], &message["payload"]),
            (&json!("props/t"), &json!("21.5"))
        );
        assert_eq!(
            message["properties"],
            json!([]),
            "v4 clients see no properties"
        );
    }
    let message = v5_live.next("message").await;
    let properties = message["properties"]
        .as_array()
        .expect("properties")
        .clone();
    assert!(
        properties.contains(&json!(["source", "sensor-7"])),
        "{message}"
    );
    assert!(properties.contains(&json!(["unit", "°C"])), "{message}");

    // Late v4 subscribers get the retained message, with RETAIN set.
    let mut late = Paho::connect(broker.tcp, "v4-late", 4, "tcp").await;
    assert_eq!(late.subscribe("props/#", 1).await, json!([1]));
    let retained = late.next("message").await;
    assert_eq!(
        (&retained["topic"], &retained["retain"]),
        (&json!("props/t"), &json!(true))
    );
    let (_sub, mut lines) = mosquitto_sub(broker.tcp, &["props/#"], 1).await;
    assert_eq!(next_message_line(&mut lines).await, "props/t 21.5");

    for client in [&mut live, &mut live_ws, &mut late] {
        client.assert_alive().await;
    }
    broker.assert_up().await;
}

/// Payload of each load message: large, so a client that does not read fills the kernel's
/// socket buffers and then its queue quickly.
const LOAD_PAYLOAD: usize = 4 * 1024;

/// The client queue for the slow consumer tests: larger than [`LOAD_WINDOW`], so a
/// subscriber that keeps up never loses a message, and small next to the load, so one
/// that does not read overflows soon.
const SLOW_CONSUMER_QUEUE: &str = "client_queue = 200";

/// A client that subscribes to `load/#` at QoS 0 and then never reads, on a socket with a
/// small receive buffer.
async fn never_reading_client(port: u16, client_id: &str) -> RawClient {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await;
    let mut client = RawClient::connect_with(stream, client_id).await;
    assert_eq!(client.connack().await, rumqttc::ConnectReturnCode::Success);
    client.subscribe("load/#").await;
    client
}

/// Load messages published before the publisher waits for the normal subscriber to have
/// them: well below `client_queue`, so that subscriber keeps up however busy the machine
/// is, while the one that never reads falls further behind with every window.
const LOAD_WINDOW: usize = 100;

/// Publishes `count` numbered load messages at QoS 1, window by window, and waits until
/// `reader` (a normal subscriber) has all of them, in order.
async fn publish_load(publisher: &MqttClient, reader: &mut MqttClient, count: usize) {
    let payload = vec![b'x'; LOAD_PAYLOAD];
    for window in (0..count).collect::<Vec<_>>().chunks(LOAD_WINDOW) {
        for index in window {
            publisher
                .publish(&format!("load/{index}"), 1, false, payload.clone())
                .await;
        }
        for index in window {
            let message = reader.next("a load message").await;
            assert_eq!(
                message.topic,
                format!("load/{index}"),
                "the normal subscriber gets every message in order"
            );
        }
    }
}

/// A consumer far slower than its publisher loses messages, and every one is counted as
/// `lagged` (and logged); nobody else waits for it.
#[tokio::test]
async fn a_slow_consumer_loses_messages_visibly_and_stalls_nobody() {
    const COUNT: usize = 3000;
    let broker = Broker::start(SLOW_CONSUMER_QUEUE);
    let mut slow = never_reading_client(broker.tcp, "slow").await;
    let mut normal = MqttClient::connect(broker.tcp, "normal").await;
    normal.subscribe("load/#", 0).await;
    let publisher = MqttClient::connect(broker.tcp, "publisher").await;

    publish_load(&publisher, &mut normal, COUNT).await;
    // Every message was fanned out to both subscribers by now.
    let lagged = broker.metric(LAGGED).await;
    assert!(lagged > 0.0, "the slow consumer lagged");
    assert_eq!(
        broker.metric(DROPPED).await,
        lagged,
        "lagging is the only loss"
    );
    assert!(
        broker.hub.logs().contains("send queue is full"),
        "the loss is logged"
    );

    // What the slow consumer did not lose is still on its way: reading now, it gets
    // exactly the messages that were not counted, in order, then a new one.
    let expected = COUNT - lagged as usize;
    let mut last = None;
    for _ in 0..expected {
        match slow.read().await {
            Some(rumqttc::Packet::Publish(publish)) => {
                let index: usize = publish.topic["load/".len()..].parse().expect("load index");
                assert!(last.is_none_or(|last| index > last), "in order");
                last = Some(index);
            }
            other => panic!("expected a load message, got {other:?}"),
        }
    }
    publisher.publish("load/end", 1, false, "end").await;
    match slow.read().await {
        Some(rumqttc::Packet::Publish(publish)) => assert_eq!(
            publish.topic, "load/end",
            "delivered + lagged = published: nothing was lost uncounted"
        ),
        other => panic!("expected load/end, got {other:?}"),
    }
    assert_eq!(broker.metric(LAGGED).await, lagged);
    broker.assert_up().await;
}

/// With `slow_client = "disconnect"`, the slow consumer is disconnected instead.
#[tokio::test]
async fn a_slow_consumer_is_disconnected_when_configured() {
    const COUNT: usize = 2000;
    let broker = Broker::start(&format!(
        "{SLOW_CONSUMER_QUEUE}\nslow_client = \"disconnect\""
    ));
    let mut slow = never_reading_client(broker.tcp, "slow").await;
    let mut normal = MqttClient::connect(broker.tcp, "normal").await;
    normal.subscribe("load/#", 0).await;
    let publisher = MqttClient::connect(broker.tcp, "publisher").await;

    publish_load(&publisher, &mut normal, COUNT).await;
    assert!(
        broker.metric(LAGGED).await >= 1.0,
        "the overflow is counted"
    );
    assert!(slow.closed_by_server().await);
    broker
        .hub
        .wait_for_metric_async(CONNECTIONS, |open| open == 2.0, WAIT)
        .await;
    broker.assert_up().await;
}

// ---- clients held back by a stalled destination ----------------------------------------

/// The counter of messages the hub delivered to the stalled destination.
const SENT_CENTRAL: &str = r#"switchyard_messages_sent_total{bridge="central"}"#;

/// `max_inflight` of [`StalledDestination`]: the third QoS 1 publish that waits for the
/// destination holds its client back.
const HELD_MAX_INFLIGHT: u16 = 2;

/// A hub whose `mqtt-server` passes `held/#` in to an `mqtt` bridge called `central`,
/// whose Mosquitto sits behind a paused proxy: every QoS 1 publish to `held/#` waits for
/// the destination until [`TcpProxy::resume`](support::proxy::TcpProxy::resume).
struct StalledDestination {
    hub: Hub,
    /// The `mqtt-server`'s TCP port.
    tcp: u16,
    proxy: support::proxy::TcpProxy,
    _central: support::Mosquitto,
}

impl StalledDestination {
    /// Starts it with the proxy paused; `extra` adds keys to the `mqtt-server`'s table.
    fn start(extra: &str) -> StalledDestination {
        let central = support::Mosquitto::start();
        let [admin, tcp, proxy_port] = free_ports::<3>();
        let proxy = support::proxy::TcpProxy::start(proxy_port, central.addr());
        let config = format!(
            r##"
            [admin]
            listen = "127.0.0.1:{admin}"
            [bridges.mqtt]
            type = "mqtt-server"
            listen = "127.0.0.1:{tcp}"
            max_inflight = {HELD_MAX_INFLIGHT}
            {extra}
            [[bridges.mqtt.topics]]
            pattern = "held/#"
            direction = "in"
            qos = 1
            [bridges.central]
            type = "mqtt"
            url = "mqtt://127.0.0.1:{proxy_port}"
            [[bridges.central.topics]]
            pattern = "held/#"
            direction = "out"
            qos = 1
            "##
        );
        let hub = Hub::start(&config, admin);
        proxy.pause();
        StalledDestination {
            hub,
            tcp,
            proxy,
            _central: central,
        }
    }

    /// A raw client with a keepalive of `keep_alive` seconds, connected.
    async fn client(&self, client_id: &str, keep_alive: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", self.tcp)).await;
        let mut client = RawClient::connect_keeping_alive(stream, client_id, keep_alive).await;
        assert_eq!(client.connack().await, rumqttc::ConnectReturnCode::Success);
        client
    }

    /// Messages delivered to the destination so far.
    async fn sent(&self) -> f64 {
        self.hub.metric_async(SENT_CENTRAL).await.unwrap_or(0.0)
    }
}

impl RawClient {
    /// Sends QoS 1 publishes to `held/x` with packet identifiers 1 to `count`.
    async fn publish_held(&mut self, count: u16, payload_bytes: usize) {
        for pkid in 1..=count {
            let payload = vec![pkid as u8; payload_bytes];
            let mut publish = rumqttc::Publish::new("held/x", rumqttc::QoS::AtLeastOnce, payload);
            publish.pkid = pkid;
            self.send(rumqttc::Packet::Publish(publish)).await;
        }
    }

    /// Reads PUBACKs, and nothing else, until packet identifiers 1 to `count` are all
    /// acknowledged.
    async fn assert_acknowledged(&mut self, count: u16) {
        let mut acknowledged = Vec::new();
        while acknowledged.len() < usize::from(count) {
            match self.read().await {
                Some(rumqttc::Packet::PubAck(ack)) => acknowledged.push(ack.pkid),
                other => panic!("expected PUBACK, got {other:?} after {acknowledged:?}"),
            }
        }
        acknowledged.sort_unstable();
        assert_eq!(acknowledged, (1..=count).collect::<Vec<_>>());
    }
}

/// A client whose QoS 1 publishes wait for a stalled destination is held back: the server
/// stops handing its packets to the hub once `max_inflight` acknowledgements are pending,
/// and stops reading it once the packets it keeps for later reach about `max_payload`.
/// The client then waits for PUBACKs, and its keepalive must not run out meanwhile (it
/// did: the server ended such sessions after 1.5 keepalives). This client never pings,
/// and sends enough to fill what the server keeps, so the server stops reading it. Here
/// the destination is a Mosquitto behind a paused proxy; once the proxy resumes, every
/// publish is acknowledged.
#[tokio::test]
async fn a_client_held_back_by_a_stalled_destination_keeps_its_session() {
    const KEEP_ALIVE_SECONDS: u16 = 1;
    // The server keeps up to about max_payload + 68 KiB (its largest packet) for later:
    // ten publishes of 8 KiB fill that behind the two in flight; the rest stay unread.
    const PAYLOAD: usize = 8 * 1024;
    const PUBLISHES: u16 = 16;
    let stalled = StalledDestination::start(r#"max_payload = "8KiB""#);
    let mut client = stalled.client("held-back", KEEP_ALIVE_SECONDS).await;
    client.publish_held(PUBLISHES, PAYLOAD).await;
    // Three keepalives of silence from the client while it waits: the session must
    // outlast them (before the fix it ended after 1.5). Nothing may arrive meanwhile.
    let held = Duration::from_secs(3 * u64::from(KEEP_ALIVE_SECONDS));
    let early = timeout(held, client.read()).await;
    assert!(
        early.is_err(),
        "nothing arrives while the destination stalls, and the session stays: {early:?}"
    );

    stalled.proxy.resume();
    client.assert_acknowledged(PUBLISHES).await;
    assert_eq!(stalled.sent().await, f64::from(PUBLISHES));
}

/// A held-back client that pings, as real clients do, gets its PINGRESPs while it waits:
/// clients close a connection whose PINGRESP does not come within about one keepalive
/// (they did, since the server read nothing behind the client's publishes).
#[tokio::test]
async fn a_held_back_client_gets_pingresp_while_it_waits() {
    const KEEP_ALIVE: Duration = Duration::from_secs(1);
    const PUBLISHES: u16 = 3 * HELD_MAX_INFLIGHT;
    let stalled = StalledDestination::start("");
    let mut client = stalled.client("pinging", KEEP_ALIVE.as_secs() as u16).await;
    client.publish_held(PUBLISHES, 16).await;

    // Pings at twice the keepalive's rate, for three keepalives: each is answered within a
    // keepalive, and nothing else arrives.
    let held_since = tokio::time::Instant::now();
    let mut answered = 0;
    while held_since.elapsed() < 3 * KEEP_ALIVE {
        // The client's own pace, not a wait for the server.
        tokio::time::sleep(KEEP_ALIVE / 2).await;
        client.send(rumqttc::Packet::PingReq).await;
        match timeout(KEEP_ALIVE, client.read()).await {
            Ok(Some(rumqttc::Packet::PingResp)) => answered += 1,
            other => panic!("expected PINGRESP after {answered} answered pings, got {other:?}"),
        }
    }
    assert_eq!(
        stalled.sent().await,
        0.0,
        "the destination stalled throughout"
    );

    stalled.proxy.resume();
    client.assert_acknowledged(PUBLISHES).await;
    assert_eq!(stalled.sent().await, f64::from(PUBLISHES));
}

/// A DISCONNECT behind held-back publishes waits for them: the session ends only after
/// every publish before it went to the hub, so every one reaches the destination.
#[tokio::test]
async fn a_disconnect_behind_held_back_publishes_keeps_its_place() {
    const PUBLISHES: u16 = 3 * HELD_MAX_INFLIGHT;
    let stalled = StalledDestination::start("");
    let mut client = stalled.client("disconnecting", 0).await;
    client.publish_held(PUBLISHES, 16).await;
    client.send(rumqttc::Packet::PingReq).await;
    client.send(rumqttc::Packet::Disconnect).await;
    // The PINGRESP shows the server reads behind the held publishes; the DISCONNECT
    // follows in the same stream, and must not end the session while they wait.
    match client.read().await {
        Some(rumqttc::Packet::PingResp) => {}
        other => panic!("expected PINGRESP, got {other:?}"),
    }
    let early = timeout(Duration::from_secs(1), client.read()).await;
    assert!(
        early.is_err(),
        "the session waits for the held publishes: {early:?}"
    );

    stalled.proxy.resume();
    assert!(client.closed_by_server().await);
    stalled
        .hub
        .wait_for_metric_async(SENT_CENTRAL, |sent| sent == f64::from(PUBLISHES), WAIT)
        .await;
}

/// paho-mqtt with a keepalive of 1 s, held back for four keepalives, keeps its
/// connection (it closed it after about two: no PINGRESP came), and every publish is
/// acknowledged once the destination resumes.
#[tokio::test]
async fn paho_held_back_keeps_its_connection() {
    const PUBLISHES: u64 = 3 * HELD_MAX_INFLIGHT as u64;
    let stalled = StalledDestination::start("");
    let mut paho = Paho::connect_keeping_alive(stalled.tcp, "paho-held", 4, "tcp", 1).await;
    for index in 0..PUBLISHES {
        let command = json!({"op": "publish", "topic": "held/paho", "payload": index.to_string(),
                             "qos": 1, "retain": false, "properties": []});
        paho.command(command).await;
    }
    // Any disconnection within four keepalives fails the test; a timeout is the success.
    let held = timeout(Duration::from_secs(4), paho.next("published")).await;
    assert!(
        held.is_err(),
        "no PUBACK while the destination stalls: {held:?}"
    );

    stalled.proxy.resume();
    for _ in 0..PUBLISHES {
        paho.next("published").await;
    }
    assert_eq!(stalled.sent().await, PUBLISHES as f64);
}
