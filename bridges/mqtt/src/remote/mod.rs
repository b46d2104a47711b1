//! The `mqtt` bridge: a client of a remote MQTT broker, like a Mosquitto `connection`.
//!
//! Each run connects to the next address of the failover list, subscribes to the remote
//! filter of every `in` rule (re-subscribing on every connect), publishes the bridge's
//! retained state, and then moves messages both ways until the connection ends. The hub's
//! supervisor reconnects with backoff by calling `run` again. `mqtts://` and `wss://`
//! addresses connect with rustls, configured once at build time by `tls.rs`.
//!
//! The connection is switchyard's own (`connection.rs`, with rumqttc's packet codecs):
//! the bridge's task encodes a whole batch of messages into one buffer and writes it in
//! one go, and reads the broker's acknowledgements in large reads.

mod config;
mod connection;
mod egress;
mod ingress;
mod packets;
mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::subscription::mqtt_filter;
use switchyard_api::{
    AckOutcome, BoxFuture, Bridge, BridgeContext, BridgeError, BridgeSpec, BridgeType, Format,
    Naming, Rule, SettingError,
};

use crate::codec::Protocol;
use config::{Protocol as ProtocolSetting, RemoteSettings};
use connection::{Connection, Endpoint, Event, Opened};
use egress::Egress;
use ingress::{Ingress, Received};
use packets::ConnectRequest;

/// Most queued messages taken per round while the inflight window has room.
const SEND_BATCH: usize = 64;

/// Most bytes encoded ahead of the socket: no more messages are taken from the hub's
/// queue while this much waits to be written.
const MAX_UNWRITTEN: usize = 1024 * 1024;

/// How long a stopping bridge waits for its last packets to reach the broker.
const FLUSH_ON_STOP: Duration = Duration::from_secs(2);

/// How long a persistent MQTT 5 session outlives the connection on the broker (a week).
const SESSION_EXPIRY_SECONDS: u32 = 7 * 24 * 3600;

/// The `mqtt` bridge type.
pub struct MqttClientType;

impl BridgeType for MqttClientType {
    fn type_name(&self) -> &'static str {
        "mqtt"
    }

    fn naming(&self) -> Naming {
        Naming::MQTT
    }

    fn formats(&self) -> &'static [Format] {
        &[Format::Raw, Format::Json]
    }

    fn is_server(&self) -> bool {
        false
    }

    fn build(
        &self,
        spec: &BridgeSpec,
        settings: serde_json::Value,
    ) -> Result<Box<dyn Bridge>, SettingError> {
        let mut settings: RemoteSettings = switchyard_api::settings::parse_settings(settings)?;
        settings.read_password_file()?;
        settings.check_share_group()?;
        let endpoints = tls::endpoints(&settings.tls, settings.broker_addresses()?)?;
        Ok(Box::new(RemoteBridge {
            format: spec.format,
            endpoints,
            next_address: AtomicUsize::new(0),
            settings,
        }))
    }
}

/// A configured `mqtt` bridge.
struct RemoteBridge {
    settings: RemoteSettings,
    format: Format,
    /// The failover list, each address with its transport (TLS read at build time).
    endpoints: Vec<Endpoint>,
    /// The failover list entry to try next.
    next_address: AtomicUsize,
}

impl Bridge for RemoteBridge {
    fn run(self: Arc<Self>, ctx: BridgeContext) -> BoxFuture<'static, Result<(), BridgeError>> {
        Box::pin(async move { self.connect_and_serve(&ctx).await })
    }

    fn remote_subscription(&self, rule: &Rule) -> Option<String> {
        Some(format!(
            "filter {}",
            self.settings.subscription(mqtt_filter(rule))
        ))
    }
}

impl RemoteBridge {
    async fn connect_and_serve(&self, ctx: &BridgeContext) -> Result<(), BridgeError> {
        let index = self.next_address.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let endpoint = &self.endpoints[index];
        self.session(ctx, endpoint)
            .await
            .map_err(|error| match error {
                BridgeError::Protocol(reason) => {
                    let address = &endpoint.address;
                    BridgeError::Protocol(format!("{}:{}: {reason}", address.host, address.port))
                }
                other => other,
            })
    }

    /// One connection, from CONNECT until it ends or the hub stops.
    async fn session(&self, ctx: &BridgeContext, endpoint: &Endpoint) -> Result<(), BridgeError> {
        let client_id = self.settings.client_id(&ctx.hub_name, &ctx.name);
        let state = self.settings.notifications.then(|| {
            self.settings.notification_topic.clone().unwrap_or_else(|| {
                format!("switchyard/{}/bridges/{}/state", ctx.hub_name, ctx.name)
            })
        });
        let keep_alive = self.settings.keep_alive();
        let protocol = match self.settings.protocol {
            ProtocolSetting::V5 => Protocol::V5,
            ProtocolSetting::V4 => Protocol::V4,
        };
        let request = ConnectRequest {
            client_id: &client_id,
            keep_alive: u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX),
            clean_start: self.settings.clean_session,
            credentials: self.settings.credentials(),
            will_topic: state.as_deref(),
            session_expiry: (!self.settings.clean_session).then_some(SESSION_EXPIRY_SECONDS),
        };
        let connect_timeout = self.settings.connect_timeout.0;
        let opened = Connection::open(endpoint, protocol, &request, keep_alive);
        let Opened {
            mut connection,
            session_present,
            receive_maximum,
        } = tokio::time::timeout(connect_timeout, opened)
            .await
            .map_err(|_| {
                BridgeError::Protocol(format!(
                    "no CONNACK within {connect_timeout:?} (connect_timeout)"
                ))
            })??;
        tracing::info!(bridge = %ctx.name, session_present, "Connected to the remote broker.");
        let window = match receive_maximum {
            Some(limit) => self.settings.max_inflight.min(limit),
            None => self.settings.max_inflight,
        };
        let mut egress = Egress::new(self.format, usize::from(window));
        let result = self
            .serve(ctx, &mut connection, &mut egress, state.as_deref())
            .await;
        egress.give_back(ctx);
        result
    }

    /// Subscribes, publishes the state, then moves messages both ways until the
    /// connection ends (an error) or the hub stops (`Ok`). The bridge is up once the
    /// broker has granted every subscription.
    async fn serve(
        &self,
        ctx: &BridgeContext,
        connection: &mut Connection,
        egress: &mut Egress,
        state: Option<&str>,
    ) -> Result<(), BridgeError> {
        // No-local is a protocol error on a shared subscription (MQTT 5, 3.8.3.1): there the
        // hops and origin properties keep a `both` rule from looping.
        let no_local = self.settings.share_group.is_none();
        let mut subscribing = Vec::new();
        for rule in ctx.rules.inbound_rules() {
            let filter = self.settings.subscription(mqtt_filter(rule));
            let pkid = egress.reserve();
            connection.subscribe(pkid, &filter, rule.qos as u8, no_local)?;
            subscribing.push((pkid, filter));
        }
        if let Some(topic) = state {
            egress.send_state(topic, true, connection);
        }
        ctx.metrics.set_up(subscribing.is_empty());
        let mut ingress = Ingress::new(self.format);
        let mut batch = Vec::with_capacity(SEND_BATCH);
        loop {
            // Bytes may have left during any event, not only `Written`.
            egress.settle_written(ctx, connection.written());
            let room = if connection.unwritten() < MAX_UNWRITTEN {
                egress.room().min(SEND_BATCH)
            } else {
                0
            };
            tokio::select! {
                () = ctx.shutdown.cancelled() => {
                    if let Some(topic) = state {
                        egress.send_state(topic, false, connection);
                    }
                    // The last words are best effort: the hub is stopping.
                    let _ = tokio::time::timeout(FLUSH_ON_STOP, connection.close()).await;
                    return Ok(());
                }
                event = connection.next_event() => match event? {
                    Event::Publish(publish) => {
                        let (qos, pkid) = (publish.qos, publish.pkid);
                        if let Received::AckNow = ingress.receive(ctx, publish).await {
                            if qos > 0 {
                                connection.acknowledge(qos, pkid)?;
                            }
                        }
                    }
                    Event::PubAck { pkid, refusal } => egress.on_puback(ctx, pkid, refusal),
                    Event::SubAck { pkid, refusal } => {
                        if let Some(at) = subscribing.iter().position(|(id, _)| *id == pkid) {
                            let (_, filter) = subscribing.swap_remove(at);
                            egress.release(pkid);
                            if let Some(reason) = refusal {
                                return Err(BridgeError::Protocol(format!(
                                    "the broker refused the subscription to {filter:?}: {reason}"
                                )));
                            }
                            ctx.metrics.set_up(subscribing.is_empty());
                        }
                    }
                    // Settled at the top of the loop.
                    Event::Written => {}
                },
                Some(settled) = ingress.next_settled(), if !ingress.is_idle() => {
                    if settled.outcome == AckOutcome::Delivered {
                        connection.acknowledge(settled.qos, settled.pkid)?;
                    }
                }
                _ = ctx.outbound.pop_batch(&mut batch, room), if room > 0 => {
                    for entry in batch.drain(..) {
                        egress.send(ctx, entry, connection);
                    }
                }
            }
        }
    }
}
