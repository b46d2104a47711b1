//! An MQTT test client (rumqttc, v5 or v4) that records what it receives, so tests can
//! await messages with a time limit instead of sleeping.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for one expected message or acknowledgement.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// A message as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS of the delivery.
    pub qos: u8,
    /// Retain flag of the delivery.
    pub retain: bool,
    /// MQTT v5 user properties.
    pub properties: Vec<(String, String)>,
}

/// A connected MQTT 5 client whose event loop runs on its own task.
pub struct MqttClient {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Received>,
    subacks: mpsc::UnboundedReceiver<()>,
    task: JoinHandle<()>,
}

impl MqttClient {
    /// Connects to 127.0.0.1:`port` with a clean session and waits for CONNACK.
    pub async fn connect(port: u16, client_id: &str) -> MqttClient {
        MqttClient::connect_with(port, client_id, true).await
    }

    /// Connects, keeping a session on the broker when `clean` is false. The client
    /// reconnects by itself if the broker goes away.
    pub async fn connect_with(port: u16, client_id: &str, clean: bool) -> MqttClient {
        MqttClient::connect_with_options(port, client_id, clean, None).await
    }

    /// A publisher whose messages reach the broker in the order sent even across a broker
    /// restart: one QoS 1 message in flight at a time (rumqttc resends unacknowledged
    /// messages by packet id, which reorders a wider window once ids wrap around).
    pub async fn ordered_publisher(port: u16, client_id: &str) -> MqttClient {
        MqttClient::connect_with_options(port, client_id, false, Some(1)).await
    }

    /// A clean-session publisher with up to `inflight` QoS 1 messages unacknowledged (a
    /// wide window, for throughput when acknowledgements are slow, e.g. fsynced).
    pub async fn wide_publisher(port: u16, client_id: &str, inflight: u16) -> MqttClient {
        MqttClient::connect_with_options(port, client_id, true, Some(inflight)).await
    }

    async fn connect_with_options(
        port: u16,
        client_id: &str,
        clean: bool,
        inflight: Option<u16>,
    ) -> MqttClient {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        if let Some(inflight) = inflight {
            options.set_outgoing_inflight_upper_limit(inflight);
        }
        options.set_clean_start(clean);
        options.set_keep_alive(Duration::from_secs(5));
        if !clean {
            options.set_session_expiry_interval(Some(3600));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (connected_tx, mut connected) = mpsc::unbounded_channel();
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let (subacks_tx, subacks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = messages_tx.send(Received {
                            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                            payload: publish.payload,
                            qos: publish.qos as u8,
                            retain: publish.retain,
                            properties: publish
                                .properties
                                .map(|p| p.user_properties)
                                .unwrap_or_default(),
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacks_tx.send(());
                    }
                    Ok(_) => {}
                    // The broker went away: retry, as a real client would.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(MESSAGE_TIMEOUT, connected.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no CONNACK from 127.0.0.1:{port} within {MESSAGE_TIMEOUT:?}")
            });
        MqttClient {
            client,
            messages,
            subacks,
            task,
        }
    }

    /// Subscribes and waits for SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) {
        self.client
            .subscribe(filter, qos_of(qos))
            .await
            .expect("subscribe request");
        tokio::time::timeout(MESSAGE_TIMEOUT, self.subacks.recv())
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for {filter:?} within {MESSAGE_TIMEOUT:?}"));
    }

    /// Publishes (the event loop sends it; QoS 1 is retried by rumqttc until acknowledged).
    pub async fn publish(&self, topic: &str, qos: u8, retain: bool, payload: impl Into<Bytes>) {
        self.client
            .publish(topic, qos_of(qos), retain, payload.into())
            .await
            .expect("publish request");
    }

    /// Publishes with MQTT v5 user properties.
    pub async fn publish_with_properties(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: impl Into<Bytes>,
        user_properties: Vec<(String, String)>,
    ) {
        let properties = PublishProperties {
            user_properties,
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(topic, qos_of(qos), retain, payload.into(), properties)
            .await
            .expect("publish request");
    }

    /// The next message, or a panic naming what was awaited.
    pub async fn next(&mut self, awaited: &str) -> Received {
        tokio::time::timeout(MESSAGE_TIMEOUT, self.messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no message ({awaited}) within {MESSAGE_TIMEOUT:?}"))
            .expect("the client task ended")
    }

    /// The next message within `timeout`, if any.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()
            .flatten()
    }

    /// Messages until one on `topic` arrives (returned last), or a panic.
    pub async fn until_topic(&mut self, topic: &str) -> Vec<Received> {
        let mut seen = Vec::new();
        loop {
            let message = self.next(&format!("a message on {topic}")).await;
            let done = message.topic == topic;
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    /// Disconnects politely.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        self.task.abort();
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}
