//! The contract between the hub and an adapter.
//!
//! An adapter registers a [`BridgeType`]. For each configured bridge of that type the hub
//! calls [`BridgeType::build`] (parse and validate, no I/O: `switchyard check` stops here),
//! then [`Bridge::open`] at startup (claim listening sockets: failing stops the hub), then
//! [`Bridge::run`] with a [`BridgeContext`]; when `run` returns an error the hub waits a
//! backoff and calls it again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::ack::Ack;
use crate::message::Message;
use crate::names::Naming;
use crate::queue::{Outbound, OutboundQueue};
use crate::rule::{Inbound, Rule, RuleSet};
use crate::settings::{CommonSettings, Format, SettingError};
use crate::telemetry::{BridgeMetrics, DropReason, LatencyHistogram};

/// A boxed, sendable future (what trait objects can return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The hub's index of a bridge.
pub type BridgeId = usize;

/// Why a bridge stopped or could not start. The hub prefixes the bridge's name.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// A listening socket could not be bound.
    #[error("cannot listen on {address} ({source}); set {key} to a free address")]
    Listen {
        /// The address asked for.
        address: String,
        /// The configuration key that holds it, e.g. `bridges.mqtt.listen`.
        key: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The remote side broke its protocol or refused us.
    #[error("{0}")]
    Protocol(String),
}

/// One kind of bridge (`type = "..."`), provided by an adapter crate.
pub trait BridgeType: Send + Sync {
    /// The `type` value that selects it.
    fn type_name(&self) -> &'static str;

    /// How its remote side spells names (before the bridge's `escape` setting).
    fn naming(&self) -> Naming;

    /// The formats it can speak; the first is the default.
    fn formats(&self) -> &'static [Format];

    /// Parses and validates the adapter's own settings (every key but the common ones).
    /// Must not touch the network.
    fn build(
        &self,
        spec: &BridgeSpec,
        settings: serde_json::Value,
    ) -> Result<Box<dyn Bridge>, SettingError>;

    /// Whether the bridge serves many independent clients (`mqtt-server`,
    /// `websocket-server`). Messages from one client may then go back out through the same
    /// bridge to the others, as in any broker; other bridges never get their own back.
    fn is_server(&self) -> bool;
}

/// What the hub knows about a bridge before building it.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// The bridge's name (the key under `[bridges]`).
    pub name: String,
    /// The shared settings.
    pub common: CommonSettings,
    /// The payload format in force: the configured one, or the type's default.
    pub format: Format,
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
}

/// A configured bridge.
pub trait Bridge: Send + Sync + 'static {
    /// Claims local resources such as listening sockets. Called once at startup; an
    /// error stops the hub with a message naming the key to change.
    fn open(&mut self) -> BoxFuture<'_, Result<(), BridgeError>> {
        Box::pin(async { Ok(()) })
    }

    /// Moves messages until `ctx.shutdown` is cancelled. May be called again after it
    /// returns an error.
    fn run(self: Arc<Self>, ctx: BridgeContext) -> BoxFuture<'static, Result<(), BridgeError>>;

    /// What the remote side is asked for because of `in` rule `rule` (binding key,
    /// subscription, prefix, stream), for `switchyard check`; `None` where clients
    /// subscribe themselves (server bridges).
    fn remote_subscription(&self, _rule: &Rule) -> Option<String> {
        None
    }
}

/// The hub's routing entry point, as seen by adapters.
pub trait Router: Send + Sync {
    /// Routes a message from bridge `origin`; resolves once every destination queue has
    /// taken it (waiting while a QoS 1 destination is full).
    fn route(&self, origin: BridgeId, message: Message, ack: Option<Ack>) -> BoxFuture<'_, ()>;

    /// The retained messages bridge `bridge` may send out, each with the index of the `out`
    /// rule that passes it (for the remote name).
    fn retained(&self, bridge: BridgeId) -> Vec<(Arc<Message>, usize)>;
}

/// Everything a running bridge needs from the hub.
#[derive(Clone)]
pub struct BridgeContext {
    /// This bridge's index.
    pub id: BridgeId,
    /// This bridge's name.
    pub name: Arc<str>,
    /// The hub's name (`hub.name`): client ids, loop guards, `$SYS` topics.
    pub hub_name: Arc<str>,
    /// The bridge's rules.
    pub rules: Arc<RuleSet>,
    /// Messages waiting to leave through this bridge.
    pub outbound: Arc<OutboundQueue>,
    /// This bridge's counters.
    pub metrics: Arc<BridgeMetrics>,
    /// The hub-wide forward latency histogram.
    pub latency: Arc<LatencyHistogram>,
    /// The router.
    pub router: Arc<dyn Router>,
    /// Cancelled when the hub stops.
    pub shutdown: CancellationToken,
}

impl BridgeContext {
    /// Hands a message from the remote side to the hub (counted as received).
    pub async fn publish(&self, mut message: Message, ack: Option<Ack>) {
        self.metrics.received(1);
        message.origin = self.id;
        self.router.route(self.id, message, ack).await;
    }

    /// The retained messages this bridge may send out, with the `out` rule passing each.
    pub fn retained(&self) -> Vec<(Arc<Message>, usize)> {
        self.router.retained(self.id)
    }

    /// Maps a remote name through the `in` rules, for bridges to which a name no rule
    /// passes is simply not theirs: `None` then, and also when the name maps to no valid
    /// hub topic (counted as `invalid`).
    pub fn inbound(&self, name: &str) -> Option<Inbound> {
        match self.rules.inbound(name) {
            Ok(found) => found,
            Err(invalid) => {
                self.metrics.dropped(DropReason::Invalid, &invalid);
                None
            }
        }
    }

    /// The remote name of a hub topic through this bridge's rule `rule` (as carried by an
    /// outbound entry); `None` if the rule does not pass it.
    pub fn remote_name(&self, rule: usize, topic: &str) -> Option<String> {
        self.rules.get(rule)?.to_remote(topic)
    }

    /// An outbound entry reached the remote side: counts it, records its latency and
    /// confirms its acknowledgement share.
    pub fn delivered(&self, entry: Outbound) {
        self.delivered_at(entry, Instant::now());
    }

    /// As [`BridgeContext::delivered`], with the time already read (for batches).
    pub fn delivered_at(&self, entry: Outbound, now: Instant) {
        self.metrics.sent(1);
        self.latency
            .observe(now.saturating_duration_since(entry.received_at));
        if let Some(ack) = entry.ack {
            ack.confirm();
        }
    }
}
