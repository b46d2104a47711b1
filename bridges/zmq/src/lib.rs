//! switchyard's ZeroMQ adapter: the `zmq` bridge, one libzmq socket (`sub`, `pub`,
//! `pull` or `push`) bound and/or connected to any number of endpoints, speaking raw
//! bodies, the JSON envelope, or fedmsg envelopes (Fedora's bus).
//!
//! A `sub` socket subscribes to the literal prefix of each `in` rule (what fedmsg
//! subscribers do) and the hub re-filters exactly. A bound `pub` socket with
//! `format = "fedmsg"` is a fedmsg-gateway; a bound `sub` socket is a fedmsg-relay inlet
//! for scripts that connect a PUB to it (`fedmsg-logger`).
//!
//! # Layout
//! - [`config`]: the bridge's settings, their defaults and validation.
//! - [`socket`]: opening the libzmq socket, and the OS thread that owns a sending one.
//! - [`receiver`]: a receiving socket read on Tokio's reactor through its `ZMQ_FD`.
//! - [`monitor`]: counts the socket's peers (`switchyard_connections`).
//! - [`framing`]: `[topic, body]` or `topic<space>body`, both ways.
//! - [`fedmsg`]: the fedmsg envelope, both ways.
//! - [`ingress`]: received messages into the hub (ZeroMQ -> hub).
//! - [`egress`]: queued messages out through the socket (hub -> ZeroMQ).

pub mod config;
pub mod egress;
pub mod fedmsg;
pub mod framing;
pub mod ingress;
pub mod monitor;
pub mod receiver;
pub mod socket;

use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_api::subscription::byte_prefix;
use switchyard_api::{
    BoxFuture, Bridge, BridgeContext, BridgeError, BridgeSpec, BridgeType, Format, Naming, Rule,
    SettingError,
};

use crate::config::ZmqSettings;
use crate::egress::Egress;
use crate::ingress::Ingress;
use crate::monitor::PeerMonitor;

/// The `zmq` bridge type, for the hub's registry of bridge types.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZmqType;

impl BridgeType for ZmqType {
    fn type_name(&self) -> &'static str {
        "zmq"
    }

    fn naming(&self) -> Naming {
        Naming::DOTTED
    }

    fn formats(&self) -> &'static [Format] {
        &[Format::Raw, Format::Json, Format::Fedmsg]
    }

    fn build(
        &self,
        spec: &BridgeSpec,
        settings: serde_json::Value,
    ) -> Result<Box<dyn Bridge>, SettingError> {
        let settings = ZmqSettings::parse(spec, settings)?;
        let subscriptions =
            socket::minimal_prefixes(spec.rules.inbound_rules().map(byte_prefix).collect());
        Ok(Box::new(ZmqBridge {
            name: spec.name.clone(),
            format: spec.format,
            settings,
            subscriptions,
            context: zmq::Context::new(),
            opened: Mutex::new(None),
        }))
    }

    /// ZeroMQ peers are not clients of a broker: a message never goes back out through
    /// the bridge it came in by.
    fn is_server(&self) -> bool {
        false
    }
}

/// One configured `zmq` bridge.
struct ZmqBridge {
    /// The bridge's name, for configuration keys in errors and thread names.
    name: String,
    /// The body format.
    format: Format,
    /// Its settings.
    settings: ZmqSettings,
    /// The byte prefixes a `sub` socket subscribes to.
    subscriptions: Vec<String>,
    /// The libzmq context (its I/O thread) the bridge's sockets belong to.
    context: zmq::Context,
    /// The socket bound by `open` and its monitor, taken by the first `run`; later runs
    /// open their own.
    opened: Mutex<Option<(zmq::Socket, PeerMonitor)>>,
}

impl ZmqBridge {
    fn lock_opened(&self) -> MutexGuard<'_, Option<(zmq::Socket, PeerMonitor)>> {
        // Only ever replaced or taken whole, so poisoning is harmless.
        self.opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_socket(&self) -> Result<(zmq::Socket, PeerMonitor), BridgeError> {
        let opened = socket::open(
            &self.context,
            &self.name,
            &self.settings,
            &self.subscriptions,
        )?;
        tracing::info!(
            bridge = %self.name,
            bind = ?self.settings.bind,
            connect = ?self.settings.connect,
            "ZeroMQ {} socket is ready.",
            self.settings.socket.as_str()
        );
        Ok(opened)
    }
}

impl Bridge for ZmqBridge {
    fn remote_subscription(&self, rule: &Rule) -> Option<String> {
        Some(format!("prefix {:?}", byte_prefix(rule)))
    }

    fn open(&mut self) -> BoxFuture<'_, Result<(), BridgeError>> {
        Box::pin(async move {
            let opened = self.open_socket()?;
            *self.lock_opened() = Some(opened);
            Ok(())
        })
    }

    fn run(self: Arc<Self>, ctx: BridgeContext) -> BoxFuture<'static, Result<(), BridgeError>> {
        Box::pin(async move {
            let opened = self.lock_opened().take();
            let (socket, monitor) = match opened {
                Some(opened) => opened,
                None => self.open_socket()?,
            };
            monitor.count_into(Arc::clone(&ctx.metrics))?;
            ctx.metrics.set_up(true);
            let outcome = if self.settings.socket.receives() {
                Ingress::new(self.format, &self.settings)
                    .run(&ctx, socket)
                    .await
            } else {
                Egress::new(self.format, &self.settings)
                    .run(&ctx, socket)
                    .await
            };
            ctx.metrics.set_up(false);
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_api::settings::parse_settings;
    use switchyard_api::{RuleConfig, RuleSet};

    fn spec(direction: &str) -> BridgeSpec {
        let common = parse_settings::<switchyard_api::CommonSettings>(json!({
            "type": "zmq",
            "topics": [{"pattern": "#", "direction": direction, "remote_prefix": "org.x."}],
        }))
        .expect("common");
        let rules = common
            .topics
            .iter()
            .map(|rule: &RuleConfig| Rule::compile(rule, Naming::DOTTED).expect("rule"))
            .collect();
        BridgeSpec {
            name: "bus".into(),
            common,
            format: Format::Raw,
            rules: Arc::new(RuleSet::new(rules)),
        }
    }

    #[test]
    fn the_type_describes_a_dotted_client() {
        let kind = ZmqType;
        assert_eq!(kind.type_name(), "zmq");
        assert_eq!(kind.naming(), Naming::DOTTED);
        assert_eq!(kind.formats()[0], Format::Raw);
        assert!(!kind.is_server());
        let spec = spec("in");
        let built = kind
            .build(
                &spec,
                json!({"socket": "sub", "connect": ["tcp://127.0.0.1:1"]}),
            )
            .expect("a valid sub bridge");
        assert_eq!(
            built.remote_subscription(&spec.rules.rules()[0]).as_deref(),
            Some("prefix \"org.x.\"")
        );
    }

    #[tokio::test]
    async fn a_taken_address_names_the_key_to_change() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("tcp://{}", taken.local_addr().expect("address"));
        let mut bridge = ZmqType
            .build(
                &spec("out"),
                json!({"socket": "pub", "bind": ["tcp://127.0.0.1:0", address]}),
            )
            .expect("valid");
        match bridge.open().await {
            Err(BridgeError::Listen { key, .. }) => assert_eq!(key, "bridges.bus.bind[1]"),
            Err(other) => panic!("expected a listen error, found {other}"),
            Ok(()) => panic!("expected a listen error, found none"),
        }
    }
}
