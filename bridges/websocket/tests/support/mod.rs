//! A `websocket-server` bridge running on a free port with a minimal in-test hub: a
//! router that sends every message back out through the bridge's own outbound queue (the
//! real `OutboundQueue`, metrics and acknowledgements of switchyard-api), and clients.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchyard_api::settings::parse_settings;
use switchyard_api::telemetry::MetricsSnapshot;
use switchyard_api::{
    Ack, BoxFuture, Bridge, BridgeContext, BridgeError, BridgeId, BridgeMetrics, BridgeSpec,
    BridgeType, DropReason, Format, LatencyHistogram, Message, Naming, Outbound, OutboundQueue,
    Overflow, QueueLimits, Router, Rule, RuleConfig, RuleSet,
};
use switchyard_websocket::WebSocketServerType;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);

/// Messages to topics under this prefix lose their acknowledgement share in the router,
/// as if a destination had given them up.
pub const LOST_PREFIX: &str = "lost/";

/// A WebSocket client of the bridge.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Routes each message to the first `out` rule of the bridge itself (a hairpin hub).
pub struct LoopbackRouter {
    rules: Arc<RuleSet>,
    queue: Arc<OutboundQueue>,
    retained: Mutex<Vec<(Arc<Message>, usize)>>,
}

impl Router for LoopbackRouter {
    fn route(&self, _origin: BridgeId, message: Message, ack: Option<Ack>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let rule =
                self.rules.rules().iter().position(|rule| {
                    rule.direction.is_out() && rule.matches_hub_topic(&message.topic)
                });
            let lost = message.topic.starts_with(LOST_PREFIX);
            let Some(rule) = rule else {
                if let Some(ack) = ack {
                    ack.confirm();
                }
                return;
            };
            let qos = message.qos.min(self.rules.rules()[rule].qos);
            let message = Arc::new(message);
            if message.retain {
                let mut retained = self.retained.lock().expect("retained lock");
                retained.retain(|(old, _)| old.topic != message.topic);
                retained.push((Arc::clone(&message), rule));
            }
            // A lost message's share is given up unconfirmed, as a failing destination would.
            let share = ack.as_ref().map(Ack::share).filter(|_| !lost);
            if let Some(ack) = ack {
                ack.confirm();
            }
            let entry = Outbound {
                message,
                rule,
                qos,
                ack: share,
                received_at: Instant::now(),
            };
            self.queue.push(entry).await;
        })
    }

    fn retained(&self, _bridge: BridgeId) -> Vec<(Arc<Message>, usize)> {
        self.retained.lock().expect("retained lock").clone()
    }
}

/// A running bridge.
pub struct Server {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The bridge's counters.
    pub metrics: Arc<BridgeMetrics>,
    /// The bridge's outbound queue (to inject messages directly).
    pub queue: Arc<OutboundQueue>,
    /// Cancels the bridge.
    pub shutdown: CancellationToken,
    /// The bridge's `run`.
    pub task: JoinHandle<Result<(), BridgeError>>,
}

/// A rule: `(pattern, direction, qos)`.
pub type RuleSpec<'a> = (&'a str, &'a str, u8);

fn free_address() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    probe.local_addr().expect("probe address").to_string()
}

/// Starts a bridge named `feed` with `settings` (plus a free `listen`) and `rules`.
pub async fn start(mut settings: Value, rules: &[RuleSpec<'_>]) -> Server {
    let address = free_address();
    settings["listen"] = Value::String(address.clone());
    let compiled: Vec<Rule> = rules
        .iter()
        .map(|(pattern, direction, qos)| {
            let config: RuleConfig = parse_settings(serde_json::json!({
                "pattern": pattern, "direction": direction, "qos": qos,
            }))
            .expect("rule config");
            Rule::compile(&config, Naming::MQTT).expect("valid rule")
        })
        .collect();
    let rules = Arc::new(RuleSet::new(compiled));
    let spec = BridgeSpec {
        name: "feed".into(),
        common: parse_settings(serde_json::json!({"type": "websocket-server"})).expect("common"),
        format: Format::Json,
        rules: Arc::clone(&rules),
    };
    let mut bridge = WebSocketServerType
        .build(&spec, settings)
        .expect("valid settings");
    bridge.open().await.expect("listen");
    let bridge: Arc<dyn Bridge> = Arc::from(bridge);
    let metrics = Arc::new(BridgeMetrics::new("feed"));
    let limits = QueueLimits {
        max_messages: 10_000,
        max_bytes: 64 << 20,
        overflow: Overflow::DropNewest,
        ttl: None,
    };
    let queue = Arc::new(OutboundQueue::new(limits, Arc::clone(&metrics)));
    let router = Arc::new(LoopbackRouter {
        rules: Arc::clone(&rules),
        queue: Arc::clone(&queue),
        retained: Mutex::new(Vec::new()),
    });
    let shutdown = CancellationToken::new();
    let ctx = BridgeContext {
        id: 1,
        name: Arc::from("feed"),
        hub_name: Arc::from("test-hub"),
        rules,
        outbound: Arc::clone(&queue),
        metrics: Arc::clone(&metrics),
        latency: Arc::new(LatencyHistogram::default()),
        router,
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(bridge.run(ctx));
    Server {
        address,
        metrics,
        queue,
        shutdown,
        task,
    }
}

impl Server {
    /// Connects a client to `path_and_query` (such as `/?subscribe=a/%23`).
    pub async fn connect(&self, path_and_query: &str) -> Client {
        let url = format!("ws://{}{path_and_query}", self.address);
        let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
            .expect("handshake accepted");
        client
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.snapshot().dropped[reason as usize]
    }

    /// The bridge's counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Stops the bridge and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the bridge stops in time")
            .expect("the bridge task did not panic")
            .expect("the bridge stops cleanly");
    }
}

/// Sends a JSON text frame.
pub async fn send(client: &mut Client, value: Value) {
    client
        .send(Frame::text(value.to_string()))
        .await
        .expect("send a frame");
}

/// The next frame that is not a ping or pong.
pub async fn next_frame(client: &mut Client) -> Frame {
    loop {
        let frame = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a valid frame");
        if !matches!(frame, Frame::Ping(_) | Frame::Pong(_)) {
            return frame;
        }
    }
}

/// The next text frame, parsed.
pub async fn next_json(client: &mut Client) -> Value {
    match next_frame(client).await {
        Frame::Text(text) => serde_json::from_str(text.as_str()).expect("a JSON frame"),
        other => panic!("expected a text frame, found {other:?}"),
    }
}

/// Sends `{"op":"ping"}` and expects `{"op":"pong"}`: the connection still works.
pub async fn assert_alive(client: &mut Client) {
    send(client, serde_json::json!({"op": "ping"})).await;
    assert_eq!(next_json(client).await, serde_json::json!({"op": "pong"}));
}
