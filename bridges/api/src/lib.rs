//! What switchyard's hub and its adapters share.
//!
//! # Layout
//! - [`topic`]: hub topics and MQTT filters, and the matching rules.
//! - [`trie`]: a trie of filters, for finding every subscriber of a topic quickly.
//! - [`names`]: translating levels between `/` and `.` separated names, with escaping.
//! - [`rule`]: a bridge's `topics` rules and the name mapping they imply.
//! - [`subscription`]: the subscription each protocol is asked for by an `in` rule.
//! - [`message`]: the hub's message.
//! - [`ack`]: acknowledgement fan-in from destinations back to a source.
//! - [`queue`]: the bounded outbound queue of a destination bridge.
//! - [`envelope`]: the JSON envelope.
//! - [`server`]: what server bridges share: client subscriptions, queues and fan-out.
//! - [`settings`]: settings every bridge shares, and the configuration's value types.
//! - [`telemetry`]: per-bridge counters and the latency histogram.
//! - [`tls`]: the `tls` settings of bridges that connect out, with their files checked.
//! - [`bridge`]: the `Bridge` trait, its factory and its context.

pub mod ack;
pub mod bridge;
pub mod envelope;
pub mod message;
pub mod names;
pub mod queue;
pub mod rule;
pub mod server;
pub mod settings;
pub mod subscription;
pub mod telemetry;
pub mod tls;
pub mod topic;
pub mod trie;

pub use ack::{Ack, AckOutcome, AckReceiver};
pub use bridge::{
    BoxFuture, Bridge, BridgeContext, BridgeError, BridgeId, BridgeSpec, BridgeType, Router,
};
pub use message::{Message, QoS};
pub use names::Naming;
pub use queue::{Outbound, OutboundQueue, Overflow, QueueLimits};
pub use rule::{Direction, Inbound, InvalidName, Rule, RuleConfig, RuleSet};
pub use settings::{CommonSettings, Format, SettingError};
pub use telemetry::{BridgeMetrics, DropReason, LatencyHistogram};
pub use topic::{Topic, TopicError, TopicFilter};
pub use trie::FilterTrie;
