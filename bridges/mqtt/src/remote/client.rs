//! One connection to a remote broker, whatever the MQTT version: the bridge talks to a
//! [`RemoteClient`] and reads [`RemoteEvent`]s, and `v4.rs`/`v5.rs` translate rumqttc.
//!
//! rumqttc's event loop runs on its own task (it only makes progress while polled, so the
//! bridge never publishes from the task that polls it).

use std::future::Future;

use bytes::Bytes;
use rumqttc::{NetworkOptions, Transport};
use switchyard_api::{BoxFuture, BridgeError, QoS};
use tokio::sync::mpsc;

use super::config::{BrokerAddress, Protocol, RemoteSettings};

/// Capacity of the event channel between the polling task and the bridge. When the
/// bridge is slow (its destinations push back), the poller waits, and so does the broker.
pub const EVENT_CAPACITY: usize = 1024;

/// Something the remote broker did.
#[derive(Debug)]
pub enum RemoteEvent {
    /// The broker accepted the connection.
    Connected {
        /// Whether it resumed a stored session.
        session_present: bool,
    },
    /// A message arrived.
    Publish(IncomingPublish),
    /// The broker answered our QoS 1 message with this packet id: `refusal` is `None`
    /// when it took the message, else the MQTT 5 reason it gave.
    PubAck {
        /// The packet id.
        pkid: u16,
        /// Why the broker refused the message, if it did.
        refusal: Option<String>,
    },
    /// Our next publish was written with this packet id (0 for QoS 0); rumqttc reports
    /// them in the order they were requested.
    Sent(u16),
}

/// A message received from the remote broker.
#[derive(Debug)]
pub struct IncomingPublish {
    /// Topic as the remote spells it.
    pub topic: String,
    /// Body.
    pub payload: Bytes,
    /// QoS level as received (0, 1 or 2).
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Packet id, for the acknowledgement.
    pub pkid: u16,
    /// MQTT v5 user properties (empty for v4).
    pub headers: Vec<(String, String)>,
}

/// What the bridge asks of the connection.
pub trait RemoteClient: Send + Sync {
    /// Subscribes to `filter`, with no-local when `no_local` and the protocol has it.
    fn subscribe(
        &self,
        filter: String,
        qos: QoS,
        no_local: bool,
    ) -> BoxFuture<'_, Result<(), BridgeError>>;

    /// Hands `request` to rumqttc without waiting; false when its request channel is full
    /// (or gone), so the caller keeps the request and tries again later. The bridge never
    /// awaits room there: rumqttc stops taking requests while its in-flight window is
    /// full, and a bridge blocked on it would stop reading the events that free it.
    fn try_send(&self, request: &Request) -> bool;

    /// Says goodbye to the broker (the will is not published), if rumqttc takes it now.
    fn try_disconnect(&self);
}

/// Something for the broker.
#[derive(Debug, Clone)]
pub enum Request {
    /// Publish `payload` under `topic`, with `headers` as user properties where the
    /// protocol has them.
    Publish {
        /// Remote topic.
        topic: String,
        /// Body.
        payload: Bytes,
        /// QoS level.
        qos: QoS,
        /// Retain flag.
        retain: bool,
        /// User properties (MQTT 5).
        headers: Vec<(String, String)>,
    },
    /// Acknowledge the received message with packet id `pkid` at QoS level `qos`.
    Ack {
        /// QoS level it arrived with (1 or 2).
        qos: u8,
        /// Its packet id.
        pkid: u16,
    },
}

/// A connection being made: the client, its events, and the polling task's future, which
/// resolves with the reason the connection ended.
pub struct Connection {
    /// Requests to the broker.
    pub client: Box<dyn RemoteClient>,
    /// Events from the broker.
    pub events: mpsc::Receiver<RemoteEvent>,
    /// Drives rumqttc's event loop; spawn it.
    pub poller: BoxFuture<'static, BridgeError>,
}

/// One entry of the failover list: where to connect, and how.
pub struct Endpoint {
    /// Host, port and, for WebSockets, the URL.
    pub address: BrokerAddress,
    /// TCP, TLS, WebSocket or WebSocket over TLS, with the TLS configuration.
    pub transport: Transport,
}

/// The retained state message the bridge publishes on the remote broker (and leaves as
/// its will).
pub struct StateTopic {
    /// The topic; by default `switchyard/<hub>/bridges/<name>/state`.
    pub topic: String,
}

/// Opens a connection to `endpoint` with the bridge's settings.
pub fn connect(
    settings: &RemoteSettings,
    endpoint: &Endpoint,
    client_id: &str,
    will: Option<&StateTopic>,
) -> Connection {
    match settings.protocol {
        Protocol::V5 => super::v5::connect(settings, endpoint, client_id, will),
        Protocol::V4 => super::v4::connect(settings, endpoint, client_id, will),
    }
}

/// Socket options of either protocol version's event loop: no Nagle, and the bridge's
/// `connect_timeout` (whole seconds, at least 1).
pub fn network_options(settings: &RemoteSettings) -> NetworkOptions {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(settings.connect_timeout.0.as_secs().max(1));
    network
}

/// Converts a client failure into a bridge error.
pub fn request_failed(error: impl std::fmt::Display) -> BridgeError {
    BridgeError::Protocol(format!("the MQTT client stopped taking requests: {error}"))
}

/// A rumqttc event loop, version-neutral: the next event worth telling the bridge about.
pub trait EventSource: Send + 'static {
    /// Polls the event loop once: `Ok(None)` for events the bridge ignores, `Err` when the
    /// connection is gone.
    fn next_event(&mut self) -> impl Future<Output = Result<Option<RemoteEvent>, String>> + Send;
}

/// Polls `source` and forwards its events until the connection ends; resolves with why.
pub fn drive(
    mut source: impl EventSource,
    events: mpsc::Sender<RemoteEvent>,
) -> BoxFuture<'static, BridgeError> {
    Box::pin(async move {
        loop {
            match source.next_event().await {
                Err(error) => {
                    return BridgeError::Protocol(format!("connection to the broker lost: {error}"))
                }
                Ok(None) => {}
                Ok(Some(event)) => {
                    if events.send(event).await.is_err() {
                        return BridgeError::Protocol(
                            "the bridge stopped reading events".to_owned(),
                        );
                    }
                }
            }
        }
    })
}
