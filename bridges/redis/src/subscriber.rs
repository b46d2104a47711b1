//! Pub/sub in: Redis channels -> hub.
//!
//! One RESP3 connection subscribes to the channels and patterns of the `in` rules
//! ([`Subscriptions`]); the client library hands each push frame to a callback that puts
//! it in a bounded buffer (`receive_buffer`). A hub too slow to keep up loses messages
//! there, counted as `lagged`, rather than letting memory grow. Each message is taken once
//! however many subscriptions match it, re-filtered exactly by the rules, and routed at
//! the rule's QoS. Redis pub/sub cannot acknowledge, so nothing waits for destinations.
//!
//! A PING every [`HEALTH_CHECK_INTERVAL`] notices a connection that died silently.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use switchyard_api::message::originated_at;
use switchyard_api::{BridgeContext, BridgeError, BridgeMetrics, DropReason};
use tokio::sync::{mpsc, Notify};

use crate::config::RedisConfig;
use crate::connection::{self, failed};
use crate::format::Codec;
use crate::subscriptions::{Subscriptions, Via};

/// How often the subscriber checks that its connection is alive.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// A subscribed connection and the messages it receives.
pub struct Subscriber {
    /// Keeps the connection (and its reading task) alive; also used for PING.
    connection: MultiplexedConnection,
    /// Messages, in arrival order.
    messages: mpsc::Receiver<PushInfo>,
    /// Signalled when the client library reports the connection closed.
    closed: Arc<Notify>,
    /// What the connection subscribed to, for taking each message once.
    subscriptions: Arc<Subscriptions>,
    codec: Codec,
}

impl Subscriber {
    /// Connects and subscribes to every channel and pattern.
    pub async fn connect(
        config: &RedisConfig,
        ctx: &BridgeContext,
        subscriptions: Arc<Subscriptions>,
        codec: Codec,
    ) -> Result<Subscriber, BridgeError> {
        let (sender, messages) = mpsc::channel(config.settings.receive_buffer);
        let closed = Arc::new(Notify::new());
        let pushes = PushHandler {
            sender,
            closed: Arc::clone(&closed),
            metrics: Arc::clone(&ctx.metrics),
        };
        let mut connection =
            connection::open_subscriber(config, move |info| pushes.take(info)).await?;
        let channels = subscriptions.channels();
        if !channels.is_empty() {
            connection
                .subscribe(&channels)
                .await
                .map_err(|error| failed("SUBSCRIBE", error))?;
        }
        let patterns = subscriptions.patterns();
        if !patterns.is_empty() {
            connection
                .psubscribe(&patterns)
                .await
                .map_err(|error| failed("PSUBSCRIBE", error))?;
        }
        tracing::info!(
            bridge = %ctx.name,
            "Subscribed to channels {channels:?} and patterns {patterns:?}."
        );
        Ok(Subscriber {
            connection,
            messages,
            closed,
            subscriptions,
            codec,
        })
    }

    /// Moves messages into the hub until the hub stops or the connection ends.
    pub async fn run(mut self, ctx: &BridgeContext) -> Result<(), BridgeError> {
        let mut health = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => return Ok(()),
                () = self.closed.notified() => {
                    return Err(BridgeError::Protocol(
                        "the pub/sub connection to Redis closed".to_owned(),
                    ))
                }
                message = self.messages.recv() => match message {
                    Some(info) => self.receive(ctx, info).await,
                    None => {
                        return Err(BridgeError::Protocol(
                            "the pub/sub connection stopped delivering".to_owned(),
                        ))
                    }
                },
                _ = health.tick() => {
                    redis::cmd("PING")
                        .exec_async(&mut self.connection)
                        .await
                        .map_err(|error| failed("PING on the pub/sub connection", error))?;
                }
            }
        }
    }

    /// Routes one pushed message, unless another copy of it is the one to take.
    async fn receive(&self, ctx: &BridgeContext, info: PushInfo) {
        let Some((via, channel, payload)) = parts(info) else {
            return;
        };
        let pattern = via.as_deref();
        let via = match pattern {
            Some(pattern) => Via::Pattern(pattern),
            None => Via::Channel,
        };
        if !self.subscriptions.accepts(&channel, via) {
            return;
        }
        let Ok(name) = std::str::from_utf8(&channel) else {
            ctx.metrics.dropped(
                DropReason::Invalid,
                format_args!(
                    "channel {:?} is not UTF-8",
                    String::from_utf8_lossy(&channel)
                ),
            );
            return;
        };
        // A channel no rule passes: the subscription is coarser than the rules; not a drop.
        let Some(inbound) = ctx.inbound(name) else {
            return;
        };
        let topic = inbound.topic;
        let mut message = match self.codec.decode(topic, payload) {
            Ok(message) => message,
            Err(error) => {
                ctx.metrics.dropped(
                    DropReason::Invalid,
                    format_args!("a message on channel {name:?}: {error}"),
                );
                return;
            }
        };
        if originated_at(&message.headers, &ctx.hub_name) {
            ctx.metrics
                .dropped(DropReason::Loop, "it carries this hub's own origin");
            return;
        }
        message.take_hops_header();
        message.qos = inbound.qos;
        ctx.publish(message, None).await;
    }
}

/// The pattern (for a `pmessage`), channel and payload of a pushed message.
fn parts(info: PushInfo) -> Option<(Option<Vec<u8>>, Vec<u8>, Bytes)> {
    let mut data = info.data.into_iter().map(|value| match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    });
    match info.kind {
        PushKind::Message => {
            let channel = data.next()??;
            let payload = data.next()??;
            Some((None, channel, Bytes::from(payload)))
        }
        PushKind::PMessage => {
            let pattern = data.next()??;
            let channel = data.next()??;
            let payload = data.next()??;
            Some((Some(pattern), channel, Bytes::from(payload)))
        }
        _ => None,
    }
}

/// Called by the client library for every push frame, on its reading task: must not block.
struct PushHandler {
    sender: mpsc::Sender<PushInfo>,
    closed: Arc<Notify>,
    metrics: Arc<BridgeMetrics>,
}

impl PushHandler {
    fn take(&self, info: PushInfo) -> Result<(), ()> {
        match info.kind {
            PushKind::Message | PushKind::PMessage => match self.sender.try_send(info) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.dropped(
                        DropReason::Lagged,
                        "the hub fell behind the Redis subscription (receive_buffer is full)",
                    );
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            },
            PushKind::Disconnection => {
                self.closed.notify_one();
                Ok(())
            }
            // Subscription confirmations and anything else: nothing to do.
            _ => Ok(()),
        }
    }
}
