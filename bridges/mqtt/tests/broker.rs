//! The `mqtt-server` bridge driven by real MQTT clients (rumqttc, v4 and v5, and raw
//! sockets for what clients cannot be made to do), through a minimal in-test router that
//! sends every message straight back out through the same bridge, as a hub with only this
//! bridge would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::json;
use switchyard_api::{
    Ack, BoxFuture, Bridge, BridgeContext, BridgeMetrics, BridgeSpec, BridgeType, DropReason,
    LatencyHistogram, Message, Naming, Outbound, OutboundQueue, Overflow, QueueLimits, Router,
    Rule, RuleConfig, RuleSet,
};
use switchyard_mqtt::access::{Access, AllowAll, Identity};
use switchyard_mqtt::config::MqttServerSettings;
use switchyard_mqtt::{MqttServer, MqttServerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// Routes every message back into the bridge's own queue and keeps retained messages.
struct LoopbackRouter {
    queue: Arc<OutboundQueue>,
    retained: Mutex<HashMap<String, Arc<Message>>>,
}

impl Router for LoopbackRouter {
    fn route(&self, _origin: usize, message: Message, ack: Option<Ack>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let message = Arc::new(message);
            if message.retain {
                let mut retained = self.retained.lock().unwrap();
                if message.payload.is_empty() {
                    retained.remove(message.topic.as_str());
                } else {
                    retained.insert(message.topic.to_string(), Arc::clone(&message));
                }
            }
            let entry = Outbound {
                qos: message.qos,
                message,
                rule: 0,
                ack: ack.as_ref().map(Ack::share),
                received_at: std::time::Instant::now(),
            };
            self.queue.push(entry).await;
            if let Some(ack) = ack {
                ack.confirm();
            }
        })
    }

    fn retained(&self, _bridge: usize) -> Vec<(Arc<Message>, usize)> {
        let retained = self.retained.lock().unwrap();
        retained
            .values()
            .map(|message| (Arc::clone(message), 0))
            .collect()
    }
}

/// A running bridge and what a test needs to reach it.
struct Harness {
    tcp: SocketAddr,
    ws: SocketAddr,
    metrics: Arc<BridgeMetrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(extra: serde_json::Value) -> Harness {
        Harness::start_with_access(extra, Arc::new(AllowAll)).await
    }

    async fn start_with_access(extra: serde_json::Value, access: Arc<dyn Access>) -> Harness {
        let mut settings = json!({"listen": "127.0.0.1:0", "ws_listen": "127.0.0.1:0"});
        if let (Some(settings), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
            settings.extend(extra.clone());
        }
        let rule = RuleConfig {
            pattern: "#".into(),
            direction: switchyard_api::Direction::Both,
            qos: switchyard_api::QoS::AtLeastOnce,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        };
        let rules = Arc::new(RuleSet::new(vec![
            Rule::compile(&rule, Naming::MQTT).unwrap()
        ]));
        let spec = BridgeSpec {
            name: "mqtt".into(),
            common: serde_json::from_value(json!({"type": "mqtt-server"})).unwrap(),
            format: switchyard_api::Format::Raw,
            rules: Arc::clone(&rules),
        };
        // The factory accepts the settings; the test keeps the concrete type to learn the
        // ports it bound.
        MqttServerType.build(&spec, settings.clone()).unwrap();
        let settings = MqttServerSettings::parse(settings).unwrap();
        let mut bridge = MqttServer::new(&spec.name, settings)
            .unwrap()
            .with_access(access);
        bridge.open().await.unwrap();
        let (tcp, ws) = bridge.local_addrs();
        let (tcp, ws) = (tcp.unwrap(), ws.unwrap());
        let metrics = Arc::new(BridgeMetrics::new("mqtt"));
        let limits = QueueLimits {
            max_messages: 10_000,
            max_bytes: 64 << 20,
            overflow: Overflow::DropOldest,
            ttl: None,
        };
        let queue = Arc::new(OutboundQueue::new(limits, Arc::clone(&metrics)));
        let router = Arc::new(LoopbackRouter {
            queue: Arc::clone(&queue),
            retained: Mutex::default(),
        });
        let shutdown = CancellationToken::new();
        let ctx = BridgeContext {
            id: 0,
            name: Arc::from("mqtt"),
            hub_name: Arc::from("test-hub"),
            rules,
            outbound: queue,
            metrics: Arc::clone(&metrics),
            latency: Arc::new(LatencyHistogram::default()),
            router,
            shutdown: shutdown.clone(),
        };
        let bridge = Arc::new(bridge);
        let task = tokio::spawn(async move {
            bridge.run(ctx).await.unwrap();
        });
        Harness {
            tcp,
            ws,
            metrics,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("the bridge stops on shutdown")
            .unwrap();
    }

    fn dropped(&self, reason: DropReason) -> u64 {
        self.metrics.snapshot().dropped[reason as usize]
    }
}

// ---- rumqttc helpers -------------------------------------------------------------------

/// A v4 client whose event loop runs in its own task, events forwarded to a channel.
fn v4_client(
    id: &str,
    address: SocketAddr,
) -> (
    rumqttc::AsyncClient,
    mpsc::Receiver<Result<rumqttc::Event, String>>,
) {
    let mut options = rumqttc::MqttOptions::new(id, address.ip().to_string(), address.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 64);
    let (events, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let event = event_loop.poll().await.map_err(|error| error.to_string());
            let failed = event.is_err();
            if events.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    (client, receiver)
}

/// As [`v4_client`], for MQTT 5.
fn v5_client(
    id: &str,
    address: SocketAddr,
) -> (
    rumqttc::v5::AsyncClient,
    mpsc::Receiver<Result<rumqttc::v5::Event, String>>,
) {
    let options = rumqttc::v5::MqttOptions::new(id, address.ip().to_string(), address.port());
    let (client, mut event_loop) = rumqttc::v5::AsyncClient::new(options, 64);
    let (events, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let event = event_loop.poll().await.map_err(|error| error.to_string());
            let failed = event.is_err();
            if events.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    (client, receiver)
}

/// Waits for the first event `pick` accepts.
async fn wait_for<E, T>(
    events: &mut mpsc::Receiver<Result<E, String>>,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(Ok(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Some(Err(error)) => panic!("the client's connection failed: {error}"),
                None => panic!("the client's event loop stopped"),
            }
        }
    })
    .await
    .expect("the expected event arrives in time")
}

/// Waits until the connection fails (the server closed it).
async fn wait_for_close<E>(events: &mut mpsc::Receiver<Result<E, String>>) {
    timeout(WAIT, async {
        while let Some(Ok(_)) = events.recv().await {}
    })
    .await
    .expect("the server closes the connection in time");
}

fn v4_publish(event: &rumqttc::Event) -> Option<rumqttc::Publish> {
    match event {
        rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)) => Some(publish.clone()),
        _ => None,
    }
}

fn v4_event(event: &rumqttc::Event, wanted: fn(&rumqttc::Packet) -> bool) -> Option<()> {
    match event {
        rumqttc::Event::Incoming(packet) if wanted(packet) => Some(()),
        _ => None,
    }
}

fn is_suback(packet: &rumqttc::Packet) -> bool {
    matches!(packet, rumqttc::Packet::SubAck(_))
}

fn is_puback(packet: &rumqttc::Packet) -> bool {
    matches!(packet, rumqttc::Packet::PubAck(_))
}

fn is_connack(packet: &rumqttc::Packet) -> bool {
    matches!(packet, rumqttc::Packet::ConnAck(_))
}

// ---- raw packet helpers ----------------------------------------------------------------

/// A v4 CONNECT for `client_id`, encoded.
fn raw_connect(client_id: &str) -> BytesMut {
    let mut bytes = BytesMut::new();
    rumqttc::Packet::Connect(rumqttc::Connect::new(client_id))
        .write(&mut bytes, usize::MAX)
        .unwrap();
    bytes
}

/// Reads one v4 packet from a raw socket.
async fn raw_read(stream: &mut TcpStream, buffer: &mut BytesMut) -> Option<rumqttc::Packet> {
    loop {
        match rumqttc::Packet::read(buffer, 1 << 20) {
            Ok(packet) => return Some(packet),
            Err(rumqttc::Error::InsufficientBytes(_)) => {}
            Err(error) => panic!("unreadable packet from the server: {error}"),
        }
        if stream.read_buf(buffer).await.ok()? == 0 {
            return None;
        }
    }
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test]
async fn publish_and_subscribe_at_qos_0_and_1_with_non_ascii_topics() {
    let harness = Harness::start(json!({})).await;
    let (subscriber, mut sub_events) = v4_client("sub", harness.tcp);
    wait_for(&mut sub_events, |e| v4_event(e, is_connack)).await;
    subscriber
        .subscribe("é/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    subscriber
        .subscribe("日本/+", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    wait_for(&mut sub_events, |e| v4_event(e, is_suback)).await;
    wait_for(&mut sub_events, |e| v4_event(e, is_suback)).await;

    let (publisher, mut pub_events) = v4_client("pub", harness.tcp);
    publisher
        .publish("é/x", rumqttc::QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    wait_for(&mut pub_events, |e| v4_event(e, is_puback)).await;
    publisher
        .publish("日本/y", rumqttc::QoS::AtMostOnce, false, "two")
        .await
        .unwrap();

    let first = wait_for(&mut sub_events, v4_publish).await;
    assert_eq!(first.topic, "é/x");
    assert_eq!(first.payload, Bytes::from_static(b"one"));
    assert_eq!(first.qos, rumqttc::QoS::AtLeastOnce);
    assert!(!first.retain);
    let second = wait_for(&mut sub_events, v4_publish).await;
    assert_eq!(second.topic, "日本/y");
    assert_eq!(second.qos, rumqttc::QoS::AtMostOnce);
    assert_eq!(harness.metrics.connections(), 2);
    harness.stop().await;
}

#[tokio::test]
async fn retained_messages_reach_late_subscribers_with_retain_set() {
    let harness = Harness::start(json!({})).await;
    let (publisher, mut pub_events) = v4_client("retainer", harness.tcp);
    publisher
        .publish("state/lamp", rumqttc::QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    wait_for(&mut pub_events, |e| v4_event(e, is_puback)).await;

    let (late, mut late_events) = v4_client("late", harness.tcp);
    late.subscribe("state/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = wait_for(&mut late_events, v4_publish).await;
    assert_eq!(retained.topic, "state/lamp");
    assert!(retained.retain);
    assert_eq!(retained.payload, Bytes::from_static(b"on"));
    harness.stop().await;
}

#[tokio::test]
async fn a_v5_publish_with_user_properties_reaches_v4_subscribers() {
    let harness = Harness::start(json!({})).await;
    let (live, mut live_events) = v4_client("live-v4", harness.tcp);
    live.subscribe("props/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_for(&mut live_events, |e| v4_event(e, is_suback)).await;

    let (publisher, mut pub_events) = v5_client("v5-pub", harness.tcp);
    let properties = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    publisher
        .publish_with_properties(
            "props/a",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            "payload",
            properties,
        )
        .await
        .unwrap();
    wait_for(&mut pub_events, |event| match event {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::PubAck(_)) => Some(()),
        _ => None,
    })
    .await;

    let delivered = wait_for(&mut live_events, v4_publish).await;
    assert_eq!(delivered.topic, "props/a");
    assert!(!delivered.retain, "live deliveries have RETAIN=0");
    let (late, mut late_events) = v4_client("late-v4", harness.tcp);
    late.subscribe("props/#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let retained = wait_for(&mut late_events, v4_publish).await;
    assert_eq!(retained.payload, Bytes::from_static(b"payload"));
    assert!(retained.retain);

    // A v5 subscriber gets the user property back.
    let (v5_late, mut v5_events) = v5_client("late-v5", harness.tcp);
    v5_late
        .subscribe("props/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await
        .unwrap();
    let properties = wait_for(&mut v5_events, |event| match event {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::Publish(publish)) => {
            Some(publish.properties.clone())
        }
        _ => None,
    })
    .await
    .expect("user properties");
    assert!(properties
        .user_properties
        .contains(&("k".to_owned(), "v".to_owned())));
    harness.stop().await;
}

#[tokio::test]
async fn one_client_id_used_three_times_takes_over_each_time() {
    let harness = Harness::start(json!({})).await;
    let mut previous: Option<mpsc::Receiver<_>> = None;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, mut events) = v4_client("bad/id", harness.tcp);
        wait_for(&mut events, |e| v4_event(e, is_connack)).await;
        if let Some(mut old) = previous.take() {
            wait_for_close(&mut old).await;
        }
        previous = Some(events);
        clients.push(client);
    }
    let Some(mut events) = previous else {
        unreachable!()
    };
    let client = clients.pop().unwrap();
    client
        .subscribe("ok", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_for(&mut events, |e| v4_event(e, is_suback)).await;
    client
        .publish("ok", rumqttc::QoS::AtLeastOnce, false, "still up")
        .await
        .unwrap();
    assert_eq!(wait_for(&mut events, v4_publish).await.topic, "ok");
    harness.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_the_listener_keeps_working() {
    let harness = Harness::start(json!({"max_connections": 5})).await;
    let mut admitted = Vec::new();
    for index in 0..5 {
        let mut stream = TcpStream::connect(harness.tcp).await.unwrap();
        stream
            .write_all(&raw_connect(&format!("kept-{index}")))
            .await
            .unwrap();
        let mut buffer = BytesMut::new();
        let answer = timeout(WAIT, raw_read(&mut stream, &mut buffer))
            .await
            .unwrap();
        assert!(matches!(
            answer,
            Some(rumqttc::Packet::ConnAck(rumqttc::ConnAck {
                code: rumqttc::ConnectReturnCode::Success,
                ..
            }))
        ));
        admitted.push(stream);
    }
    for index in 0..300 {
        let mut stream = TcpStream::connect(harness.tcp).await.unwrap();
        stream
            .write_all(&raw_connect(&format!("extra-{index}")))
            .await
            .unwrap();
        let mut buffer = BytesMut::new();
        let answer = timeout(WAIT, raw_read(&mut stream, &mut buffer))
            .await
            .unwrap();
        assert!(
            matches!(
                answer,
                Some(rumqttc::Packet::ConnAck(rumqttc::ConnAck {
                    code: rumqttc::ConnectReturnCode::ServiceUnavailable,
                    ..
                }))
            ),
            "connection {index}: {answer:?}"
        );
        let mut rest = [0u8; 1];
        let closed = timeout(WAIT, stream.read(&mut rest)).await.unwrap();
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "refused connections close"
        );
    }
    // One slot frees up: a new client gets in.
    drop(admitted.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut stream = TcpStream::connect(harness.tcp).await.unwrap();
        stream.write_all(&raw_connect("newcomer")).await.unwrap();
        let mut buffer = BytesMut::new();
        let answer = timeout(WAIT, raw_read(&mut stream, &mut buffer))
            .await
            .unwrap();
        if let Some(rumqttc::Packet::ConnAck(connack)) = answer {
            if connack.code == rumqttc::ConnectReturnCode::Success {
                break;
            }
        }
        // The freed slot is released when the server notices the close; retry until then.
        assert!(Instant::now() < deadline, "a freed slot is reused");
        tokio::task::yield_now().await;
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_silent_socket_does_not_block_websocket_clients() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let harness = Harness::start(json!({"connect_timeout": "500ms"})).await;
    let mut silent = TcpStream::connect(harness.ws).await.unwrap();

    let mut request = format!("ws://{}/mqtt", harness.ws)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut socket, response) = timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake is not held up by the silent socket")
        .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "mqtt"
    );
    // CONNECT split over two WebSocket messages.
    let connect = raw_connect("ws-client");
    let (head, tail) = connect.split_at(5);
    socket.send(WsMessage::binary(head.to_vec())).await.unwrap();
    socket.send(WsMessage::binary(tail.to_vec())).await.unwrap();
    let answer = timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut bytes = BytesMut::from(&answer.into_data()[..]);
    assert!(matches!(
        rumqttc::Packet::read(&mut bytes, 1024).unwrap(),
        rumqttc::Packet::ConnAck(rumqttc::ConnAck {
            code: rumqttc::ConnectReturnCode::Success,
            ..
        })
    ));
    // The silent socket is closed after connect_timeout.
    let mut rest = [0u8; 1];
    let closed = timeout(WAIT, silent.read(&mut rest)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)));
    harness.stop().await;
}

#[tokio::test]
async fn bad_publishes_close_only_their_connection() {
    let harness = Harness::start(json!({"max_payload": "1KiB"})).await;
    let (bystander, mut bystander_events) = v4_client("bystander", harness.tcp);
    bystander
        .subscribe("#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    wait_for(&mut bystander_events, |e| v4_event(e, is_suback)).await;

    let offences: [(&str, usize); 2] = [("a/+", 1), ("big", 2000)];
    for (topic, size) in offences {
        let mut stream = TcpStream::connect(harness.tcp).await.unwrap();
        let mut bytes = raw_connect(&format!("offender-{size}"));
        let publish = rumqttc::Publish::new(topic, rumqttc::QoS::AtMostOnce, vec![b'x'; size]);
        rumqttc::Packet::Publish(publish)
            .write(&mut bytes, usize::MAX)
            .unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut buffer = BytesMut::new();
        let connack = timeout(WAIT, raw_read(&mut stream, &mut buffer))
            .await
            .unwrap();
        assert!(matches!(connack, Some(rumqttc::Packet::ConnAck(_))));
        let closed = timeout(WAIT, raw_read(&mut stream, &mut buffer))
            .await
            .unwrap();
        assert!(closed.is_none(), "the offender is disconnected");
    }
    assert_eq!(harness.dropped(DropReason::Invalid), 1);
    assert_eq!(harness.dropped(DropReason::TooLarge), 1);

    bystander
        .publish("fine", rumqttc::QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(
        wait_for(&mut bystander_events, v4_publish).await.topic,
        "fine"
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_unsupported_protocol_level_is_refused_with_connack_1() {
    let harness = Harness::start(json!({})).await;
    let mut stream = TcpStream::connect(harness.tcp).await.unwrap();
    // MQTT 3.1: protocol name "MQIsdp", level 3.
    let mut connect = vec![0x10, 15, 0, 6];
    connect.extend_from_slice(b"MQIsdp");
    connect.extend_from_slice(&[3, 0x02, 0, 60, 0, 1, b'a']);
    stream.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x01]);
    harness.stop().await;
}

/// Denies client `intruder` and everything under `secret/`.
struct DenySecrets;

impl Access for DenySecrets {
    fn may_connect(&self, client: &Identity) -> bool {
        client.client_id != "intruder"
    }

    fn may_publish(&self, _client: &Identity, topic: &str) -> bool {
        !topic.starts_with("secret/")
    }

    fn may_subscribe(&self, _client: &Identity, filter: &str) -> bool {
        !filter.starts_with("secret/")
    }
}

#[tokio::test]
async fn the_access_policy_decides_connect_publish_and_subscribe() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, PubAckReason, SubscribeReasonCode};
    use rumqttc::v5::mqttbytes::QoS as V5QoS;

    let harness = Harness::start_with_access(json!({}), Arc::new(DenySecrets)).await;
    // CONNECT: refused with "not authorized", and closed.
    let mut intruder = TcpStream::connect(harness.tcp).await.unwrap();
    intruder.write_all(&raw_connect("intruder")).await.unwrap();
    let mut buffer = BytesMut::new();
    let answer = timeout(WAIT, raw_read(&mut intruder, &mut buffer))
        .await
        .unwrap();
    assert!(matches!(
        answer,
        Some(rumqttc::Packet::ConnAck(rumqttc::ConnAck {
            code: rumqttc::ConnectReturnCode::NotAuthorized,
            ..
        }))
    ));
    let closed = timeout(WAIT, raw_read(&mut intruder, &mut buffer))
        .await
        .unwrap();
    assert!(closed.is_none(), "a refused client is disconnected");
    let (_v5_intruder, mut v5_intruder_events) = v5_client("intruder", harness.tcp);
    let refused = timeout(WAIT, v5_intruder_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(refused
        .unwrap_err()
        .contains(&format!("{:?}", ConnectReturnCode::NotAuthorized)));

    // SUBSCRIBE: the denied filter fails, the others of the same packet succeed.
    let (v4, mut v4_events) = v4_client("reader-v4", harness.tcp);
    let filters = [
        rumqttc::SubscribeFilter::new("secret/#".into(), rumqttc::QoS::AtLeastOnce),
        rumqttc::SubscribeFilter::new("#".into(), rumqttc::QoS::AtLeastOnce),
    ];
    v4.subscribe_many(filters).await.unwrap();
    let codes = wait_for(&mut v4_events, |event| match event {
        rumqttc::Event::Incoming(rumqttc::Packet::SubAck(suback)) => {
            Some(suback.return_codes.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        [
            rumqttc::SubscribeReasonCode::Failure,
            rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
        ]
    );
    let (v5, mut v5_events) = v5_client("writer-v5", harness.tcp);
    v5.subscribe("secret/x", V5QoS::AtLeastOnce).await.unwrap();
    let codes = wait_for(&mut v5_events, |event| match event {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::SubAck(suback)) => {
            Some(suback.return_codes.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(codes, [SubscribeReasonCode::NotAuthorized]);

    // PUBLISH: dropped and counted as denied; MQTT 5 hears "not authorized".
    v5.publish("secret/x", V5QoS::AtLeastOnce, false, "hidden")
        .await
        .unwrap();
    let reason = wait_for(&mut v5_events, |event| match event {
        rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::PubAck(puback)) => Some(puback.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::NotAuthorized);
    assert_eq!(harness.dropped(DropReason::Denied), 1);
    v5.publish("open/x", V5QoS::AtLeastOnce, false, "shown")
        .await
        .unwrap();
    assert_eq!(wait_for(&mut v4_events, v4_publish).await.topic, "open/x");
    harness.stop().await;
}
