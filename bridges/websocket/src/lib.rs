//! switchyard's WebSocket adapter: the `websocket-server` bridge, a JSON firehose that
//! browsers and scripts subscribe to (and, where `in` rules allow, publish through).
//!
//! Clients speak JSON in text frames: they subscribe with `?subscribe=FILTER` on the URL
//! or `{"op":"subscribe","filter":"a/#"}`, receive each message as the JSON envelope of
//! `switchyard_api::envelope`, and publish with `{"op":"publish","topic":...}`.
//!
//! # Layout
//! - [`config`]: the bridge's settings and their defaults.
//! - `listener`: the accept loop, admission (`max_connections`) and refusals.
//! - `handshake`: the HTTP upgrade: path, query-string subscriptions, buffer sizes.
//! - `connection`: one client's task: reading, writing, pings, closing.
//! - [`control`]: the client's requests and the server's replies (public so the fuzz
//!   targets can read frames as a connection does).
//! - `ingress`: client publishes into the hub (client → hub).
//! - `egress`: queued messages out to the client (hub → client).

#![forbid(unsafe_code)]

pub mod config;
mod connection;
pub mod control;
mod egress;
mod handshake;
mod ingress;
mod listener;

use std::sync::Arc;

use switchyard_api::access::{AccessPolicy, AccessSettings};
use switchyard_api::server::ClientRegistry;
use switchyard_api::server_tls::ServerTls;
use switchyard_api::{
    BoxFuture, Bridge, BridgeContext, BridgeError, BridgeSpec, BridgeType, Format, Naming,
    SettingError,
};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::ServerSettings;
use crate::connection::Served;

/// The `websocket-server` bridge type, for the hub's registry of bridge types.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebSocketServerType;

impl BridgeType for WebSocketServerType {
    fn type_name(&self) -> &'static str {
        "websocket-server"
    }

    fn naming(&self) -> Naming {
        Naming::MQTT
    }

    fn formats(&self) -> &'static [Format] {
        &[Format::Json]
    }

    fn build(
        &self,
        spec: &BridgeSpec,
        settings: serde_json::Value,
    ) -> Result<Box<dyn Bridge>, SettingError> {
        let settings = ServerSettings::parse(settings)?;
        let name = &spec.name;
        let tls = ServerTls::for_bridge(name, &settings.tls)?;
        let policy = AccessPolicy::load(AccessSettings {
            bridge: name,
            users_file: "",
            tokens_file: &settings.tokens_file,
            allow_anonymous: settings.allow_anonymous,
            acl: settings.acl.as_deref(),
        })?;
        Ok(Box::new(WebSocketServer {
            name: spec.name.clone(),
            settings: Arc::new(settings),
            listener: None,
            policy: Arc::new(policy),
            tls,
        }))
    }

    fn is_server(&self) -> bool {
        true
    }
}

/// One configured `websocket-server` bridge.
struct WebSocketServer {
    /// The bridge's name, for the configuration key in errors.
    name: String,
    /// Its settings.
    settings: Arc<ServerSettings>,
    /// The socket claimed by `open`, kept across restarts of `run`.
    listener: Option<TcpListener>,
    /// Tokens, anonymous clients and the ACL.
    policy: Arc<AccessPolicy>,
    /// TLS on `listen`, when `tls` is set.
    tls: Option<ServerTls>,
}

impl WebSocketServer {
    async fn bind(&self) -> Result<TcpListener, BridgeError> {
        TcpListener::bind(&self.settings.listen)
            .await
            .map_err(|source| BridgeError::Listen {
                address: self.settings.listen.clone(),
                key: format!("bridges.{}.listen", self.name),
                source,
            })
    }
}

impl Bridge for WebSocketServer {
    fn open(&mut self) -> BoxFuture<'_, Result<(), BridgeError>> {
        Box::pin(async move {
            let listener = self.bind().await?;
            if let Ok(address) = listener.local_addr() {
                let scheme = if self.tls.is_some() { "wss" } else { "ws" };
                tracing::info!(bridge = %self.name, "Accepting WebSocket clients on {scheme}://{address}{}.", self.settings.path);
            }
            self.listener = Some(listener);
            Ok(())
        })
    }

    fn run(self: Arc<Self>, ctx: BridgeContext) -> BoxFuture<'static, Result<(), BridgeError>> {
        Box::pin(async move {
            let bound;
            let listener = match &self.listener {
                Some(listener) => listener,
                None => {
                    bound = self.bind().await?;
                    &bound
                }
            };
            let served = Arc::new(Served {
                registry: ClientRegistry::new(
                    self.settings.send_queue,
                    self.settings.slow_client,
                    Arc::clone(&ctx.metrics),
                ),
                settings: Arc::clone(&self.settings),
                ctx: ctx.clone(),
                policy: Arc::clone(&self.policy),
                tls: self.tls.clone(),
            });
            ctx.metrics.set_up(true);
            let tracker = TaskTracker::new();
            let reloading = async {
                if let Some(tls) = &self.tls {
                    tls.reload_on_sighup(ctx.shutdown.clone()).await;
                }
            };
            tokio::join!(
                listener::accept_loop(listener, Arc::clone(&served), &tracker),
                served.registry.run_fan_out(&ctx),
                reloading,
                self.policy.reload_on_sighup(ctx.shutdown.clone()),
            );
            // Shutdown: connection tasks send their Close frames and end.
            tracker.close();
            tracker.wait().await;
            ctx.metrics.set_up(false);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::settings::parse_settings;
    use switchyard_api::RuleSet;

    fn spec() -> BridgeSpec {
        BridgeSpec {
            name: "feed".into(),
            common: parse_settings(serde_json::json!({"type": "websocket-server"}))
                .expect("common settings"),
            format: Format::Json,
            rules: Arc::new(RuleSet::default()),
        }
    }

    #[test]
    fn the_type_describes_a_json_server() {
        let kind = WebSocketServerType;
        assert_eq!(kind.type_name(), "websocket-server");
        assert_eq!(kind.naming(), Naming::MQTT);
        assert_eq!(kind.formats(), &[Format::Json]);
        assert!(kind.is_server());
        assert!(kind.build(&spec(), serde_json::json!({})).is_ok());
        let error = kind
            .build(&spec(), serde_json::json!({"max_connections": -1}))
            .err()
            .expect("refused");
        assert_eq!(error.path, "max_connections");
    }

    #[tokio::test]
    async fn a_taken_address_names_the_key_to_change() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = taken.local_addr().expect("address").to_string();
        let mut bridge = WebSocketServerType
            .build(&spec(), serde_json::json!({ "listen": address }))
            .expect("valid");
        match bridge.open().await {
            Err(BridgeError::Listen { key, .. }) => assert_eq!(key, "bridges.feed.listen"),
            other => panic!("expected a listen error, found {other:?}"),
        }
    }
}
