//! The consuming connection (lapin): opening it (bounded in time), noticing when it fails,
//! and closing it politely. The publishing connection is a [`crate::link::Link`].

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use switchyard_api::BridgeError;

use crate::config::AmqpConfig;

/// How long TCP, TLS and the AMQP handshake may take before the attempt counts as failed
/// (the hub then retries with backoff).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a clean close may wait for the broker's `connection.close-ok`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The broker's address for messages: host, port and virtual host, never the password.
pub fn describe(config: &AmqpConfig) -> String {
    let uri = &config.uri;
    format!(
        "{}:{} (vhost {:?})",
        uri.authority.host, uri.authority.port, uri.vhost
    )
}

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections`).
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, BridgeError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()
        .map_err(|error| BridgeError::Protocol(format!("no async runtime for lapin: {error}")))?;
    let attempt = Connection::connect_uri_with_config(
        config.uri.clone(),
        properties,
        config.tls.clone(),
        runtime,
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(BridgeError::Protocol(format!(
            "connect to {}: {error}",
            describe(config)
        ))),
        Err(_) => Err(BridgeError::Protocol(format!(
            "connect to {}: no answer within {CONNECT_TIMEOUT:?}",
            describe(config)
        ))),
    }
}

/// Resolves with the connection's first error (lost socket, missed heartbeats, closed by
/// the broker); never without a connection. Subscribe right after connecting: lapin only
/// reports to live listeners.
pub async fn failed(events: Option<impl futures_util::Stream<Item = Event>>) -> BridgeError {
    let Some(events) = events else {
        return std::future::pending().await;
    };
    futures_util::pin_mut!(events);
    // Flow control (`connection.blocked`) concerns publishing connections; this one only
    // consumes.
    while let Some(event) = events.next().await {
        if let Event::Error(error) = event {
            return BridgeError::Protocol(format!("the connection failed: {error}"));
        }
    }
    BridgeError::Protocol("the connection's event stream ended".to_owned())
}

/// Closes the connection cleanly, if it is still open; failures are only logged, since
/// the bridge is stopping or restarting anyway.
pub async fn close(connection: &Connection, reason: &str) {
    if !connection.status().connected() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!("Closing the AMQP connection: {error}."),
        Err(_) => tracing::debug!("The broker did not confirm the close within {CLOSE_TIMEOUT:?}."),
    }
}
