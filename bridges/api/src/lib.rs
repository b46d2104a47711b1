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
//! - [`spool`]: a queue's disk spool: the storage contract, the journal and its writer.
//! - [`record`]: the compact binary form of a queued entry in a spool.
//! - [`envelope`]: the JSON envelope.
//! - [`instance`]: what tells replicas of one configuration apart in default names.
//! - [`server`]: what server bridges share: client subscriptions, queues and fan-out.
//! - [`settings`]: settings every bridge shares, and the configuration's value types.
//! - [`telemetry`]: per-bridge counters and the latency histogram.
//! - [`secret`]: passwords given inline or in a file, redacted in `Debug`.
//! - [`tls`]: the `tls` settings of bridges that connect out, with their files checked.
//! - [`client_stream`]: the TCP or TLS stream of a bridge that connects out.
//! - [`server_tls`]: the `tls` settings of listeners: rustls server configuration, client
//!   certificates, reloaded on SIGHUP.
//! - [`reload`]: values loaded from files and loaded again on SIGHUP.
//! - [`users`]: the users file (Argon2 password hashes) and the tokens file.
//! - [`acl`]: the topic ACL of server bridges.
//! - [`access`]: logins and the ACL together: what server bridges ask.
//! - [`bridge`]: the `Bridge` trait, its factory and its context.

pub mod access;
pub mod ack;
pub mod acl;
pub mod bridge;
pub mod client_stream;
pub mod envelope;
pub mod instance;
pub mod message;
pub mod names;
pub mod queue;
pub mod record;
pub mod reload;
pub mod rule;
pub mod secret;
pub mod server;
pub mod server_tls;
pub mod settings;
pub mod spool;
pub mod subscription;
pub mod telemetry;
pub mod tls;
pub mod tls_client;
pub mod topic;
pub mod trie;
pub mod users;

pub use ack::{Ack, AckOutcome, AckReceiver};
pub use bridge::{
    BoxFuture, Bridge, BridgeContext, BridgeError, BridgeId, BridgeSpec, BridgeType, Router,
};
pub use message::{Message, QoS};
pub use names::Naming;
pub use queue::{Outbound, OutboundQueue, Overflow, QueueLimits};
pub use rule::{Direction, Inbound, InvalidName, Rule, RuleConfig, RuleSet};
pub use settings::{CommonSettings, Format, SettingError};
pub use spool::{RecoveredEntry, SpoolError, SpoolSetup, SpoolStore, SpoolWindow};
pub use telemetry::{BridgeMetrics, DropReason, LatencyHistogram};
pub use topic::{Topic, TopicError, TopicFilter};
pub use trie::FilterTrie;
