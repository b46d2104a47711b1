//! The consuming connection (lapin): opening it (bounded in time), noticing when it fails,
//! and closing it politely. The publishing connection is a [`crate::link::Link`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, Event};
use switchyard_api::BridgeError;

use crate::config::AmqpConfig;

/// How long TCP, TLS and the AMQP handshake may take before the attempt counts as failed
/// (the hub then retries with backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections`). For
/// `amqps://` the TLS handshake uses the bridge's own rustls configuration, the one the
/// publishing connection uses, so `tls.ca` replaces the system's authorities instead of
/// adding to them (as lapin's default TLS setup would).
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, BridgeError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()
        .map_err(|error| BridgeError::Protocol(format!("no async runtime for lapin: {error}")))?;
    let tls = config.tls_client.clone();
    let open_stream = async move |mut uri: AMQPUri, runtime| {
        let secure = uri.scheme == AMQPScheme::AMQPS;
        uri.scheme = AMQPScheme::AMQP;
        let stream = uri.connect_async(&runtime).await?;
        match (secure, &tls) {
            (true, Some(tls)) => {
                let connector = RustlsConnector::from(Arc::clone(tls));
                Ok(stream.into_rustls(&connector, &uri.authority.host).await?)
            }
            (true, None) => Err(lapin::Error::from(std::io::Error::other(
                "amqps:// without a TLS configuration",
            ))),
            (false, _) => Ok(stream),
        }
    };
    let attempt = Connection::connector(config.uri.clone(), runtime, open_stream, properties);
    bounded("connect to", config, attempt).await
}

/// Runs a connection attempt within [`CONNECT_TIMEOUT`]; its error starts with `what` and
/// the broker's address.
pub async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    config: &AmqpConfig,
    attempt: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BridgeError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(error)) => Err(BridgeError::Protocol(format!(
            "{what} {}: {error}",
            describe(config)
        ))),
        Err(_) => Err(BridgeError::Protocol(format!(
            "{what} {}: no answer within {CONNECT_TIMEOUT:?}",
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
