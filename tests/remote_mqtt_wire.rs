//! The `mqtt` bridge's own client on the wire: against a scripted broker (a listener in the
//! test speaking MQTT 5 through rumqttc's packet codec) that sets a Receive Maximum,
//! refuses a subscription or sends garbage; against a Mosquitto that refuses a login;
//! and against a broker that goes silent behind a paused proxy.

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Packet, PubAck, SubAck, SubAckProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use support::mqtt::MqttClient;
use support::proxy::TcpProxy;
use support::{free_ports, hub_with_broker, Hub, Mosquitto, TestDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// How long the bridge may take to connect, send, or report an error.
const WAIT: Duration = Duration::from_secs(20);

/// How long a packet that must not come is waited for.
const QUIET: Duration = Duration::from_millis(500);

/// A hub named `site` with an embedded broker on `local` and bridge `central` to `url`
/// (no state messages, fast reconnects), with `extra` settings and `rules`.
fn hub_config(admin: u16, local: u16, url: &str, extra: &str, rules: &str) -> String {
    let bridge = format!(
        r#"
[bridges.central]
type = "mqtt"
url = "{url}"
notifications = false
reconnect = {{ initial = "100ms", max = "500ms" }}
{extra}
{rules}
"#
    );
    hub_with_broker("site", admin, "local", local, &bridge)
}

/// One `wire/#` rule from the hub to the broker, at QoS 1.
const OUT_RULE: &str = r#"
[[bridges.central.topics]]
pattern = "wire/#"
direction = "out"
qos = 1
"#;

const UP: &str = r#"switchyard_bridge_up{bridge="central"}"#;

/// A listener the test answers by hand, one packet at a time.
struct ScriptedBroker {
    listener: TcpListener,
}

impl ScriptedBroker {
    async fn start(port: u16) -> ScriptedBroker {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        ScriptedBroker { listener }
    }

    /// The bridge's next connection, after its CONNECT; CONNACK announces
    /// `receive_maximum` when given.
    async fn accept(&self, receive_maximum: Option<u16>) -> ScriptedSession {
        let (stream, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("the bridge connected in time")
            .expect("accept");
        let mut session = ScriptedSession {
            stream,
            input: BytesMut::new(),
        };
        match session.read().await {
            Packet::Connect(..) => {}
            other => panic!("expected CONNECT, got {other:?}"),
        }
        let properties = receive_maximum.map(|limit| ConnAckProperties {
            session_expiry_interval: None,
            receive_max: Some(limit),
            max_qos: None,
            retain_available: None,
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: None,
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        });
        session
            .send(Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::Success,
                properties,
            }))
            .await;
        session
    }
}

/// One connection of the bridge to the scripted broker.
struct ScriptedSession {
    stream: TcpStream,
    input: BytesMut,
}

impl ScriptedSession {
    /// The next packet, or `None` if none comes within `within`.
    async fn try_read(&mut self, within: Duration) -> Option<Packet> {
        timeout(within, async {
            loop {
                match Packet::read(&mut self.input, None) {
                    Ok(packet) => return packet,
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("the bridge sent a malformed packet: {error}"),
                }
                let read = self.stream.read_buf(&mut self.input).await.expect("read");
                assert!(read > 0, "the bridge closed the connection");
            }
        })
        .await
        .ok()
    }

    async fn read(&mut self) -> Packet {
        self.try_read(WAIT)
            .await
            .unwrap_or_else(|| panic!("no packet from the bridge within {WAIT:?}"))
    }

    /// The next PUBLISH: its packet id and payload.
    async fn read_publish(&mut self) -> (u16, Bytes) {
        match self.read().await {
            Packet::Publish(publish) => (publish.pkid, publish.payload),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, None).expect("encode");
        self.send_raw(&bytes).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }
}

/// Mosquitto announces `max_inflight_messages` as its Receive Maximum, but answers QoS 1
/// at once, so nothing there shows a client ignoring it. The scripted broker holds its
/// PUBACKs: with a Receive Maximum of 2 the bridge (default `max_inflight` 100) must have
/// at most 2 messages unacknowledged, and send the next as each PUBACK comes.
#[tokio::test]
async fn the_brokers_receive_maximum_bounds_the_messages_in_flight() {
    const MESSAGES: usize = 6;
    let [admin, local, remote] = free_ports::<3>();
    let broker = ScriptedBroker::start(remote).await;
    let url = format!("mqtt://127.0.0.1:{remote}");
    let hub = Hub::start_unready(&hub_config(admin, local, &url, "", OUT_RULE), admin);
    let mut session = broker.accept(Some(2)).await;
    // The hub acknowledges each publish once the broker has it, so the publisher needs
    // a window wider than 2 for 2 messages to wait at the broker at once.
    let publisher = MqttClient::wide_publisher(local, "wire-publisher", 10).await;
    for index in 0..MESSAGES {
        publisher
            .publish("wire/x", 1, false, index.to_string())
            .await;
    }

    let mut in_flight = vec![session.read_publish().await, session.read_publish().await];
    let mut received = Vec::new();
    while received.len() < MESSAGES {
        let beyond = session.try_read(QUIET).await;
        assert!(
            beyond.is_none(),
            "a third message while 2 wait for PUBACK: {beyond:?}"
        );
        let (pkid, payload) = in_flight.remove(0);
        received.push(String::from_utf8_lossy(&payload).into_owned());
        session.send(Packet::PubAck(PubAck::new(pkid, None))).await;
        if received.len() + in_flight.len() < MESSAGES {
            in_flight.push(session.read_publish().await);
        }
    }
    let expected: Vec<String> = (0..MESSAGES).map(|index| index.to_string()).collect();
    assert_eq!(received, expected, "every message, in order");
    hub.wait_for_metric_async(
        r#"switchyard_messages_sent_total{bridge="central"}"#,
        |sent| sent == MESSAGES as f64,
        WAIT,
    )
    .await;
}

/// A subscription the broker refuses keeps the bridge down, naming the filter and the
/// broker's reason; the bridge is not up before the broker has answered, and it comes up
/// once a later connection's subscription is granted.
#[tokio::test]
async fn a_refused_subscription_keeps_the_bridge_down_with_the_reason() {
    let [admin, local, remote] = free_ports::<3>();
    let broker = ScriptedBroker::start(remote).await;
    let url = format!("mqtt://127.0.0.1:{remote}");
    let rules = r#"
[[bridges.central.topics]]
pattern = "orders/#"
direction = "in"
qos = 1
"#;
    let hub = Hub::start_unready(&hub_config(admin, local, &url, "", rules), admin);
    let mut session = broker.accept(None).await;
    let pkid = match session.read().await {
        Packet::Subscribe(subscribe) => {
            assert_eq!(subscribe.filters[0].path, "orders/#");
            subscribe.pkid
        }
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    };
    assert_eq!(
        hub.metric_async(UP).await,
        Some(0.0),
        "not up before the SUBACK"
    );
    let refusal = SubAck {
        pkid,
        return_codes: vec![SubscribeReasonCode::NotAuthorized],
        properties: Some(SubAckProperties {
            reason_string: Some("no orders for this client".to_owned()),
            user_properties: Vec::new(),
        }),
    };
    session.send(Packet::SubAck(refusal)).await;
    let error = hub
        .wait_for_bridge_error("central", "refused the subscription", WAIT)
        .await;
    assert!(
        error.contains("\"orders/#\"")
            && error.contains("NotAuthorized (no orders for this client)"),
        "{error}"
    );

    let mut again = broker.accept(None).await;
    let pkid = match again.read().await {
        Packet::Subscribe(subscribe) => subscribe.pkid,
        other => panic!("expected SUBSCRIBE on the retry, got {other:?}"),
    };
    let granted = SubAck {
        pkid,
        return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        properties: None,
    };
    again.send(Packet::SubAck(granted)).await;
    hub.wait_for_metric_async(UP, |up| up == 1.0, WAIT).await;
}

/// Bytes that are no MQTT packet end the session with an error that says so, the hub
/// stays up, and the bridge connects again.
#[tokio::test]
async fn a_malformed_packet_from_the_broker_ends_the_session_and_the_bridge_reconnects() {
    let [admin, local, remote] = free_ports::<3>();
    let broker = ScriptedBroker::start(remote).await;
    let url = format!("mqtt://127.0.0.1:{remote}");
    let hub = Hub::start_unready(&hub_config(admin, local, &url, "", OUT_RULE), admin);
    let mut session = broker.accept(None).await;
    hub.wait_for_metric_async(UP, |up| up == 1.0, WAIT).await;
    // Packet type 0 is reserved (MQTT 5 section 2.1.2).
    session.send_raw(&[0x00, 0x00]).await;
    let error = hub
        .wait_for_bridge_error("central", "cannot read", WAIT)
        .await;
    assert!(error.contains(&format!("127.0.0.1:{remote}")), "{error}");
    let _again = broker.accept(None).await;
    hub.wait_for_metric_async(UP, |up| up == 1.0, WAIT).await;
    let (status, _) = hub.http_get_async("/healthz").await;
    assert_eq!(status, 200, "the hub is still serving");
}

/// A wrong password is refused by Mosquitto with its reason, over MQTT 5 and 3.1.1; the
/// right one connects; the password appears in no log line.
#[tokio::test]
async fn a_refused_login_is_reported_with_the_brokers_reason() {
    let dir = TestDir::new("remote-mqtt-login");
    let passwords = dir.write("passwords", "");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&passwords)
        .args(["bridge", "right-secret"])
        .status()
        .expect("run mosquitto_passwd");
    assert!(made.success(), "mosquitto_passwd failed");
    let remote = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwords.display()
    ));
    let [admin, local] = free_ports::<2>();
    let bridge = |name: &str, password: &str, protocol: &str| {
        format!(
            r#"
[bridges.{name}]
type = "mqtt"
url = "{url}"
protocol = "{protocol}"
username = "bridge"
password = "{password}"
notifications = false
reconnect = {{ initial = "100ms", max = "500ms" }}

[[bridges.{name}.topics]]
pattern = "login/{name}/#"
direction = "both"
qos = 1
"#,
            url = remote.url()
        )
    };
    let bridges = [
        bridge("wrong5", "wrong-secret", "v5"),
        bridge("wrong4", "wrong-secret", "v4"),
        bridge("right", "right-secret", "v5"),
    ]
    .concat();
    let hub = Hub::start_unready(
        &hub_with_broker("site", admin, "local", local, &bridges),
        admin,
    );
    for name in ["wrong5", "wrong4"] {
        let error = hub
            .wait_for_bridge_error(name, "refused the connection", WAIT)
            .await;
        assert!(error.contains("NotAuthorized"), "{name}: {error}");
    }
    hub.wait_for_metric_async(
        r#"switchyard_bridge_up{bridge="right"}"#,
        |up| up == 1.0,
        WAIT,
    )
    .await;
    assert!(
        !hub.logs().contains("secret"),
        "a password reached the hub's log"
    );
}

/// A broker that stops answering (the proxy holds every byte, the connection stays
/// open) is found dead by its missing PINGRESP within the keepalive, not left hanging;
/// once the way is clear again the bridge reconnects and carries messages.
#[tokio::test]
async fn a_silent_broker_is_found_by_its_missing_pingresp() {
    let remote = Mosquitto::start();
    let [admin, local, proxy_port] = free_ports::<3>();
    let proxy = TcpProxy::start(proxy_port, remote.addr());
    let url = format!("mqtt://127.0.0.1:{proxy_port}");
    let extra = "keepalive = \"1s\"\nconnect_timeout = \"2s\"";
    let hub = Hub::start(&hub_config(admin, local, &url, extra, OUT_RULE), admin);
    hub.wait_for_metric_async(UP, |up| up == 1.0, WAIT).await;

    proxy.pause();
    let error = hub.wait_for_bridge_error("central", "PINGREQ", WAIT).await;
    assert!(error.contains("keepalive"), "{error}");
    proxy.resume();
    hub.wait_for_metric_async(UP, |up| up == 1.0, WAIT).await;
    let mut subscriber = MqttClient::connect(remote.port(), "wire-silent-probe").await;
    subscriber.subscribe("wire/#", 1).await;
    let publisher = MqttClient::connect(local, "wire-silent-publisher").await;
    publisher.publish("wire/after", 1, false, "back").await;
    let message = subscriber.next("wire/after").await;
    assert_eq!(&message.payload[..], b"back");
}

/// A second client logging in with the bridge's client_id takes its session over: the
/// broker closes the bridge's connection without a reason (MQTT 3.1.1 has none), and the
/// bridge's error names its client id and this likely cause (two hubs sharing one
/// configuration, say).
#[tokio::test]
async fn a_connection_closed_by_the_broker_names_the_client_id() {
    let remote = Mosquitto::start();
    let [admin, local] = free_ports::<2>();
    let extra = "protocol = \"v4\"\nclient_id = \"wire-twin\"";
    let hub = Hub::start(
        &hub_config(admin, local, &remote.url(), extra, OUT_RULE),
        admin,
    );
    hub.wait_for_metric_async(UP, |up| up == 1.0, WAIT).await;
    let _twin = MqttClient::connect(remote.port(), "wire-twin").await;
    let error = hub
        .wait_for_bridge_error("central", "closed the connection", WAIT)
        .await;
    assert!(
        error.contains(r#"client "wire-twin""#) && error.contains("same client_id"),
        "{error}"
    );
}
