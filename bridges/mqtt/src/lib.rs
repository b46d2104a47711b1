//! switchyard's MQTT adapter: `mqtt-server`, the embedded broker, and `mqtt`, a client of
//! remote brokers (in [`remote`]).
//!
//! The broker is hub-native (not rumqttd): a Tokio server that speaks MQTT 3.1.1 and
//! MQTT 5 with rumqttc's packet codecs, keeps its clients' subscriptions and queues in
//! `switchyard_api::server::ClientRegistry`, and hands every PUBLISH to the hub's router.
//! Nothing is kept after a connection ends (no persistent sessions yet).
//!
//! # Layout
//! - [`config`]: the bridge's settings.
//! - [`codec`]: MQTT 3.1.1 / 5 packets through rumqttc: framing, decoding, encoding.
//! - [`incoming`]: what clients send, in one vocabulary for both versions.
//! - [`listener`]: accept loops (TCP, WebSocket, with or without TLS), one task per
//!   connection.
//! - [`websocket`]: the WebSocket handshake and the byte-stream adapter.
//! - [`handshake`]: reading a connection's CONNECT, and refusing those that get no
//!   session.
//! - [`session`]: one connection from CONNECT to close.
//! - [`ending`]: why a session ended (log, will, MQTT 5 reason).
//! - [`held`]: a held-back client's packets that wait, in order, for room in the window.
//! - [`access`]: who may connect, publish and subscribe (the hook for users and ACLs).
//! - [`clients`]: connected client identifiers: the connection limit and takeover.
//! - [`ingress`]: client PUBLISH and will messages into the hub, with acknowledgements.
//! - [`egress`]: hub messages out to a client: packet identifiers, in-flight window.
//! - [`alias`]: MQTT 5 topic aliases from clients.
//! - [`remote`]: the `mqtt` bridge, a client of a remote broker.

pub mod access;
pub mod alias;
pub mod clients;
pub mod codec;
pub mod config;
pub mod egress;
pub mod ending;
pub mod handshake;
pub mod held;
pub mod incoming;
pub mod ingress;
pub mod listener;
pub mod remote;
pub mod session;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::join_all;
use switchyard_api::access::{AccessPolicy, AccessSettings};
use switchyard_api::server::ClientRegistry;
use switchyard_api::server_tls::ServerTls;
use switchyard_api::{
    BoxFuture, Bridge, BridgeContext, BridgeError, BridgeSpec, BridgeType, Format, Naming,
    SettingError,
};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::access::{Access, AllowAll, Both};
use crate::clients::ConnectedClients;
use crate::config::MqttServerSettings;
use crate::listener::{accept_loop, Transport};
use crate::session::Broker;

/// The `mqtt-server` bridge type: an MQTT broker (3.1.1 and 5, over TCP and WebSocket)
/// that clients connect to.
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttServerType;

impl BridgeType for MqttServerType {
    fn type_name(&self) -> &'static str {
        "mqtt-server"
    }

    fn naming(&self) -> Naming {
        Naming::MQTT
    }

    fn formats(&self) -> &'static [Format] {
        &[Format::Raw]
    }

    fn build(
        &self,
        spec: &BridgeSpec,
        settings: serde_json::Value,
    ) -> Result<Box<dyn Bridge>, SettingError> {
        let settings = MqttServerSettings::parse(settings)?;
        Ok(Box::new(MqttServer::new(&spec.name, settings)?))
    }

    fn is_server(&self) -> bool {
        true
    }
}

/// One configured `mqtt-server` bridge.
pub struct MqttServer {
    /// The bridge's name, for error messages that name the key to change.
    name: String,
    /// Its settings.
    settings: Arc<MqttServerSettings>,
    /// The bound listeners, once [`Bridge::open`] ran.
    listeners: Mutex<Vec<(Transport, Arc<TcpListener>)>>,
    /// The embedding code's access hook (by default [`AllowAll`]).
    access: Arc<dyn Access>,
    /// Users, anonymous clients and the ACL, from the configuration.
    policy: Arc<AccessPolicy>,
    /// The TLS of `tls_listen` and `wss_listen`.
    tls: Option<ServerTls>,
}

impl MqttServer {
    /// A bridge called `name` with validated `settings`, its files (certificates, users)
    /// read; it listens once opened.
    pub fn new(name: &str, settings: MqttServerSettings) -> Result<Self, SettingError> {
        let tls = ServerTls::for_bridge(name, &settings.tls)?;
        let policy = AccessPolicy::load(AccessSettings {
            bridge: name,
            users_file: &settings.users_file,
            tokens_file: "",
            allow_anonymous: settings.allow_anonymous,
            acl: settings.acl.as_deref(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            settings: Arc::new(settings),
            listeners: Mutex::new(Vec::new()),
            access: Arc::new(AllowAll),
            policy: Arc::new(policy),
            tls,
        })
    }

    /// Adds an access hook to the configured policy (by default [`AllowAll`]).
    #[must_use]
    pub fn with_access(mut self, access: Arc<dyn Access>) -> Self {
        self.access = access;
        self
    }

    fn lock_listeners(&self) -> MutexGuard<'_, Vec<(Transport, Arc<TcpListener>)>> {
        // Only ever replaced or cloned whole, so poisoning is harmless.
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The addresses actually bound (useful with port 0): `(listen, ws_listen)`.
    pub fn local_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.local_addr(Transport::Tcp),
            self.local_addr(Transport::WebSocket),
        )
    }

    /// The address a listener actually bound, if it is on.
    pub fn local_addr(&self, wanted: Transport) -> Option<SocketAddr> {
        self.lock_listeners()
            .iter()
            .find(|(transport, _)| *transport == wanted)
            .and_then(|(_, listener)| listener.local_addr().ok())
    }
}

impl Bridge for MqttServer {
    fn open(&mut self) -> BoxFuture<'_, Result<(), BridgeError>> {
        Box::pin(async move {
            let wanted = [
                (Transport::Tcp, self.settings.listen.clone()),
                (Transport::WebSocket, self.settings.ws_listen.clone()),
                (Transport::Tls, self.settings.tls_listen.clone()),
                (Transport::Wss, self.settings.wss_listen.clone()),
            ];
            let mut bound = Vec::new();
            for (transport, address) in wanted {
                if address.is_empty() {
                    continue;
                }
                let listener =
                    TcpListener::bind(&address)
                        .await
                        .map_err(|source| BridgeError::Listen {
                            address: address.clone(),
                            key: format!("bridges.{}.{}", self.name, transport.key()),
                            source,
                        })?;
                bound.push((transport, Arc::new(listener)));
            }
            *self.lock_listeners() = bound;
            Ok(())
        })
    }

    fn run(self: Arc<Self>, ctx: BridgeContext) -> BoxFuture<'static, Result<(), BridgeError>> {
        Box::pin(async move {
            let listeners = self.lock_listeners().clone();
            if listeners.is_empty() {
                return Err(BridgeError::Protocol(
                    "the MQTT server was not opened, so it has no listener".to_owned(),
                ));
            }
            let settings = Arc::clone(&self.settings);
            let broker = Arc::new(Broker {
                registry: ClientRegistry::new(
                    settings.client_queue,
                    settings.slow_client,
                    Arc::clone(&ctx.metrics),
                ),
                clients: ConnectedClients::new(settings.max_connections),
                access: Arc::new(Both {
                    policy: Arc::clone(&self.policy),
                    hook: Arc::clone(&self.access),
                }),
                policy: Arc::clone(&self.policy),
                tls: self.tls.clone(),
                settings,
                ctx: ctx.clone(),
            });
            let tracker = TaskTracker::new();
            for (transport, listener) in &listeners {
                if let Ok(address) = listener.local_addr() {
                    info!(bridge = %ctx.name, "MQTT server listening on {address} ({}).", transport.key());
                }
            }
            ctx.metrics.set_up(true);
            let accepting = join_all(listeners.into_iter().map(|(transport, listener)| {
                accept_loop(listener, transport, Arc::clone(&broker), tracker.clone())
            }));
            let reloading = async {
                if let Some(tls) = &self.tls {
                    tls.reload_on_sighup(ctx.shutdown.clone()).await;
                }
            };
            tokio::join!(
                accepting,
                broker.registry.run_fan_out(&ctx),
                reloading,
                self.policy.reload_on_sighup(ctx.shutdown.clone()),
            );
            // Connections see the same shutdown signal and close themselves.
            tracker.close();
            tracker.wait().await;
            ctx.metrics.set_up(false);
            Ok(())
        })
    }
}
