//! switchyard's Redis adapter: the `redis` bridge type.
//!
//! Two modes:
//! - `pubsub` (default): `in` rules `SUBSCRIBE` to literal channels and `PSUBSCRIBE` to the
//!   glob-escaped literal prefix of wildcard rules; the hub re-filters each message exactly
//!   and takes it once however many subscriptions match ([`subscriptions`]). `out` rules
//!   `PUBLISH`, pipelined. Redis keeps nothing for an absent subscriber, so a reconnection
//!   is a gap, which is logged and counted ([`gap`]).
//! - `streams`: `out` rules append with `XADD` (optionally trimmed, `MAXLEN ~`), with the
//!   message's topic, id, timestamp and headers as fields ([`fields`]); each `in` rule reads
//!   one stream with a consumer group and acknowledges an entry only once every destination
//!   took it, recovering its own and dead consumers' pending entries ([`consumer`]).
//!
//! Stream keys and channels are the rules' remote names (`.`-separated, like AMQP routing
//! keys). On any failure `run` puts unconfirmed outbound messages back in the queue and
//! returns the error; the hub waits a backoff and calls it again, which reconnects and
//! subscribes again.
//!
//! Throughput (Redis pub/sub -> WebSocket firehose, release build) is given in the
//! README's `redis` section.
//!
//! # Layout
//! - [`config`]: the settings, their defaults and their validation.
//! - [`connection`]: opening connections (TLS, credentials, database, RESP3 for pub/sub).
//! - [`tls`]: the `tls` setting: trusted authorities and client certificate, read at build.
//! - [`format`]: payloads in `raw` or `json`.
//! - [`subscriptions`]: the pub/sub subscriptions and taking each message once.
//! - [`subscriber`]: pub/sub in. [`gap`]: counting pub/sub gaps across reconnections.
//! - [`fields`]: a message as stream entry fields. [`reply`]: reading stream replies.
//! - [`consumer`]: streams in.
//! - [`egress`]: `PUBLISH` or `XADD` out, pipelined.

pub mod config;
pub mod connection;
pub mod consumer;
pub mod egress;
pub mod fields;
pub mod format;
pub mod gap;
pub mod reply;
pub mod subscriber;
pub mod subscriptions;
pub mod tls;

use std::sync::Arc;

use switchyard_api::subscription::{redis_subscription, RedisSubscription};
use switchyard_api::{
    BoxFuture, Bridge, BridgeContext, BridgeError, BridgeSpec, BridgeType, Format, Naming,
    Outbound, Rule, SettingError,
};

use crate::config::{Mode, RedisConfig};
use crate::consumer::Consumer;
use crate::egress::{Command, Egress};
use crate::format::Codec;
use crate::gap::Gap;
use crate::subscriber::Subscriber;
use crate::subscriptions::Subscriptions;

/// The `redis` bridge type.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisType;

impl BridgeType for RedisType {
    fn type_name(&self) -> &'static str {
        "redis"
    }

    fn naming(&self) -> Naming {
        Naming::DOTTED
    }

    fn formats(&self) -> &'static [Format] {
        &[Format::Raw, Format::Json]
    }

    fn build(
        &self,
        spec: &BridgeSpec,
        settings: serde_json::Value,
    ) -> Result<Box<dyn Bridge>, SettingError> {
        let config = RedisConfig::parse(settings, &spec.rules)?;
        Ok(Box::new(RedisBridge {
            subscriptions: Arc::new(Subscriptions::of(&spec.rules)),
            codec: Codec::new(spec.format),
            gap: Gap::default(),
            config,
        }))
    }

    fn is_server(&self) -> bool {
        false
    }
}

/// One configured `redis` bridge.
#[derive(Debug)]
pub struct RedisBridge {
    config: RedisConfig,
    codec: Codec,
    subscriptions: Arc<Subscriptions>,
    /// Pub/sub gaps, across runs.
    gap: Gap,
}

impl Bridge for RedisBridge {
    fn run(self: Arc<Self>, ctx: BridgeContext) -> BoxFuture<'static, Result<(), BridgeError>> {
        Box::pin(async move { self.serve(&ctx).await })
    }

    fn remote_subscription(&self, rule: &Rule) -> Option<String> {
        Some(
            match (self.config.settings.mode, redis_subscription(rule)) {
                (Mode::Streams, RedisSubscription::Channel(key)) => {
                    format!("XREADGROUP stream {key}")
                }
                (_, subscription) => subscription.to_string(),
            },
        )
    }
}

impl RedisBridge {
    /// One connection's life; unconfirmed outbound messages go back to the queue.
    async fn serve(&self, ctx: &BridgeContext) -> Result<(), BridgeError> {
        let mut unconfirmed = Vec::new();
        let mut subscribed = false;
        let result = self.attach(ctx, &mut unconfirmed, &mut subscribed).await;
        if !unconfirmed.is_empty() {
            ctx.outbound.requeue_front(unconfirmed);
        }
        if subscribed && result.is_err() {
            self.gap.lost();
        }
        result.map_err(|error| match error {
            BridgeError::Protocol(reason) => {
                BridgeError::Protocol(format!("{}: {reason}", self.config.describe()))
            }
            other => other,
        })
    }

    /// Connects both directions, reports the bridge up, and moves messages.
    async fn attach(
        &self,
        ctx: &BridgeContext,
        unconfirmed: &mut Vec<Outbound>,
        subscribed: &mut bool,
    ) -> Result<(), BridgeError> {
        let settings = &self.config.settings;
        let publishes = ctx.rules.rules().iter().any(|rule| rule.direction.is_out());
        let publisher = match publishes {
            true => {
                let connection =
                    connection::open(&self.config, settings.response_timeout.0).await?;
                let command = match settings.mode {
                    Mode::Pubsub => Command::Publish,
                    Mode::Streams => Command::Append {
                        maxlen: settings.streams.maxlen,
                    },
                };
                Some(Egress::new(
                    ctx,
                    connection,
                    self.codec,
                    command,
                    settings.batch,
                ))
            }
            false => None,
        };
        let inbound = match settings.mode {
            Mode::Pubsub if !self.subscriptions.is_empty() => {
                let subscriber = Subscriber::connect(
                    &self.config,
                    ctx,
                    Arc::clone(&self.subscriptions),
                    self.codec,
                )
                .await?;
                *subscribed = true;
                self.gap.resumed(ctx);
                Inbound::Subscriber(subscriber)
            }
            Mode::Streams if !self.config.stream_keys.is_empty() => Inbound::Consumer(Box::new(
                Consumer::connect(&self.config, ctx, self.codec).await?,
            )),
            _ => Inbound::Nothing,
        };
        ctx.metrics.set_up(true);
        tracing::info!(
            bridge = %ctx.name,
            "Connected to {} ({:?} mode).",
            self.config.describe(),
            settings.mode
        );
        let egress = async {
            match publisher {
                Some(mut egress) => egress.run(unconfirmed).await,
                None => {
                    ctx.shutdown.cancelled().await;
                    Ok(())
                }
            }
        };
        let ingress = async {
            match inbound {
                Inbound::Subscriber(subscriber) => subscriber.run(ctx).await,
                Inbound::Consumer(consumer) => consumer.run().await,
                Inbound::Nothing => {
                    ctx.shutdown.cancelled().await;
                    Ok(())
                }
            }
        };
        tokio::try_join!(egress, ingress).map(|_| ())
    }
}

/// What the `in` rules read with.
enum Inbound<'a> {
    Subscriber(Subscriber),
    Consumer(Box<Consumer<'a>>),
    Nothing,
}
