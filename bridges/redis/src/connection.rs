//! Opening connections to Redis, and turning the client's errors into bridge errors.
//!
//! Each direction has its own multiplexed connection, so a blocking `XREADGROUP` never
//! holds up a `PUBLISH` or an `XACK`. Pub/sub uses RESP3, where subscribed messages arrive
//! as push frames handed to a callback ([`open_subscriber`]); everything else uses RESP2.
//!
//! `rediss://` connects with rustls (aws-lc-rs), checking the server's certificate against
//! the authorities of `tls.ca`, else the system's, and presenting `tls.cert` when set.
//! Every connection has Nagle's algorithm off (TCP_NODELAY): the client library leaves it
//! on, which holds small PUBLISHes back for the peer's delayed ACK.

use std::sync::Once;
use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, ErrorKind, ProtocolVersion, RedisError};
use switchyard_api::BridgeError;

use crate::config::RedisConfig;

/// A connection to `config`'s server; requests time out after `response_timeout`.
pub async fn open(
    config: &RedisConfig,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, BridgeError> {
    let settings = connection_config(config).set_response_timeout(Some(response_timeout));
    connect(config, config.connection.clone(), settings).await
}

/// A RESP3 connection whose push frames (subscribed messages, and a disconnection notice
/// from the client library) go to `pushes`.
pub async fn open_subscriber(
    config: &RedisConfig,
    pushes: impl AsyncPushSender,
) -> Result<MultiplexedConnection, BridgeError> {
    let info = config.connection.clone();
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let settings = connection_config(config)
        .set_response_timeout(Some(config.settings.response_timeout.0))
        .set_push_sender(pushes);
    connect(config, info.set_redis_settings(redis), settings).await
}

fn connection_config(config: &RedisConfig) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_connection_timeout(Some(config.settings.connect_timeout.0))
}

/// Connects to `config`'s server (named by the caller in errors, see `RedisBridge::serve`).
async fn connect(
    config: &RedisConfig,
    info: redis::ConnectionInfo,
    settings: AsyncConnectionConfig,
) -> Result<MultiplexedConnection, BridgeError> {
    install_crypto_provider();
    let info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
    let client = match &config.tls {
        None => Client::open(info),
        Some(certificates) => Client::build_with_tls(info, certificates.clone()),
    };
    let client = client.map_err(|error| failed("configure the client", error))?;
    client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
        .map_err(connect_failed)
}

/// A failure to connect; the caller names the server. A refused or missing login says
/// which settings to check, as the client library's words do not.
fn connect_failed(error: RedisError) -> BridgeError {
    if error.kind() == ErrorKind::AuthenticationFailed || error.code() == Some("NOAUTH") {
        failed("connect (check the bridge's username and password)", error)
    } else {
        failed("connect", error)
    }
}

/// rustls needs one process-wide crypto provider; several crates may enable different
/// ones, so pick it explicitly (a no-op when one is installed already).
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means another provider is installed; that one is used then.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A Redis failure while doing `context`.
pub fn failed(context: &str, error: RedisError) -> BridgeError {
    BridgeError::Protocol(format!("{context}: {error}"))
}
