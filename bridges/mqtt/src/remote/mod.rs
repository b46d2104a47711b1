//! The `mqtt` bridge: a client of a remote MQTT broker, like a Mosquitto `connection`.
//!
//! Each run connects to the next address of the failover list, subscribes to the remote
//! filter of every `in` rule (re-subscribing on every connect), publishes the bridge's
//! retained state, and then moves messages both ways until the connection ends. The hub's
//! supervisor reconnects with backoff by calling `run` again. `mqtts://` and `wss://`
//! addresses connect with rustls, configured once at build time by `tls.rs`.

mod client;
mod config;
mod egress;
mod ingress;
mod tls;
mod v4;
mod v5;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use switchyard_api::subscription::mqtt_filter;
use switchyard_api::{
    AckOutcome, BoxFuture, Bridge, BridgeContext, BridgeError, BridgeSpec, BridgeType, Format,
    Naming, Rule, SettingError,
};
use tokio::sync::mpsc;

use client::{Connection, Endpoint, RemoteClient, RemoteEvent, StateTopic};
use config::RemoteSettings;
use egress::Egress;
use ingress::{Ingress, Received};

/// Most queued messages taken per round while the inflight window has room.
const SEND_BATCH: usize = 64;

/// How soon requests rumqttc could not take are offered again.
const OUTBOX_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// How long a stopping bridge waits for its last packets to reach the broker.
const FLUSH_ON_STOP: std::time::Duration = std::time::Duration::from_secs(2);

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
        let client_id = self.settings.client_id(&ctx.hub_name, &ctx.name);
        let state = self.settings.notifications.then(|| StateTopic {
            topic: self.settings.notification_topic.clone().unwrap_or_else(|| {
                format!("switchyard/{}/bridges/{}/state", ctx.hub_name, ctx.name)
            }),
        });
        let Connection {
            client,
            mut events,
            poller,
        } = client::connect(&self.settings, endpoint, &client_id, state.as_ref());
        let mut poller = tokio::spawn(poller);
        let mut egress = Egress::new(self.format, self.settings.max_inflight);
        let result = self
            .serve(ctx, &*client, &mut events, &mut egress, state.as_ref())
            .await;
        egress.give_back(ctx);
        let flushed = if matches!(result, Ok(Ok(()))) {
            // Stopping: let the last state message and DISCONNECT reach the broker.
            tokio::time::timeout(FLUSH_ON_STOP, &mut poller).await.ok()
        } else {
            None
        };
        let ended = match flushed {
            Some(ended) => ended,
            None => {
                poller.abort();
                poller.await
            }
        };
        let result = match (result, ended) {
            // The events stopped because the connection ended: report why.
            (Err(ConnectionEnded), Ok(reason)) => Err(reason),
            (Err(ConnectionEnded), Err(_)) => Err(BridgeError::Protocol(
                "the connection to the broker ended".to_owned(),
            )),
            (Ok(outcome), _) => outcome,
        };
        result.map_err(|error| match error {
            BridgeError::Protocol(reason) => {
                let address = &endpoint.address;
                BridgeError::Protocol(format!("{}:{}: {reason}", address.host, address.port))
            }
            other => other,
        })
    }

    /// Runs one session. `Err(ConnectionEnded)` means the event stream closed.
    async fn serve(
        &self,
        ctx: &BridgeContext,
        client: &dyn RemoteClient,
        events: &mut mpsc::Receiver<RemoteEvent>,
        egress: &mut Egress,
        state: Option<&StateTopic>,
    ) -> Result<Result<(), BridgeError>, ConnectionEnded> {
        let connect_timeout = self.settings.connect_timeout.0;
        match tokio::time::timeout(connect_timeout, events.recv()).await {
            Ok(Some(RemoteEvent::Connected { session_present })) => {
                tracing::info!(bridge = %ctx.name, session_present, "Connected to the remote broker.");
            }
            Ok(Some(_)) | Ok(None) => return Err(ConnectionEnded),
            Err(_) => {
                return Ok(Err(BridgeError::Protocol(format!(
                    "no CONNACK within {connect_timeout:?}"
                ))))
            }
        }
        if let Err(error) = self.start_session(ctx, client, egress, state).await {
            return Ok(Err(error));
        }
        ctx.metrics.set_up(true);
        let mut ingress = Ingress::new(self.format);
        let mut batch = Vec::with_capacity(SEND_BATCH);
        loop {
            egress.flush(client);
            let room = egress.room().min(SEND_BATCH);
            tokio::select! {
                () = ctx.shutdown.cancelled() => {
                    if let Some(state) = state {
                        egress.send_state(&state.topic, false);
                    }
                    egress.flush(client);
                    client.try_disconnect();
                    return Ok(Ok(()));
                }
                event = events.recv() => match event {
                    None => return Err(ConnectionEnded),
                    Some(RemoteEvent::Publish(publish)) => {
                        let (qos, pkid) = (publish.qos, publish.pkid);
                        if let Received::AckNow = ingress.receive(ctx, publish).await {
                            if qos > 0 {
                                egress.acknowledge(qos, pkid);
                            }
                        }
                    }
                    Some(RemoteEvent::Sent(pkid)) => egress.on_sent(ctx, pkid),
                    Some(RemoteEvent::PubAck { pkid, refusal }) => egress.on_puback(ctx, pkid, refusal),
                    Some(RemoteEvent::Connected { .. }) => {}
                },
                Some(settled) = ingress.next_settled(), if !ingress.is_idle() => {
                    if settled.outcome == AckOutcome::Delivered {
                        egress.acknowledge(settled.qos, settled.pkid);
                    }
                }
                _ = ctx.outbound.pop_batch(&mut batch, room), if room > 0 => {
                    for entry in batch.drain(..) {
                        egress.send(ctx, entry);
                    }
                }
                // rumqttc's request channel was full: try again shortly, while events
                // (which free it) keep being read.
                () = tokio::time::sleep(OUTBOX_RETRY), if egress.has_backlog() => {}
            }
        }
    }

    /// Subscriptions and the state message, on every (re)connect.
    async fn start_session(
        &self,
        ctx: &BridgeContext,
        client: &dyn RemoteClient,
        egress: &mut Egress,
        state: Option<&StateTopic>,
    ) -> Result<(), BridgeError> {
        // No-local is a protocol error on a shared subscription (MQTT 5, 3.8.3.1): there the
        // hops and origin properties keep a `both` rule from looping.
        let no_local = self.settings.share_group.is_none();
        for rule in ctx.rules.inbound_rules() {
            let filter = self.settings.subscription(mqtt_filter(rule));
            client.subscribe(filter, rule.qos, no_local).await?;
        }
        if let Some(state) = state {
            egress.send_state(&state.topic, true);
        }
        Ok(())
    }
}

/// The event stream closed: the connection is gone (the poller knows why).
struct ConnectionEnded;
