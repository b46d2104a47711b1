//! The byte stream under a link: the shared client stream, TLS for `amqps://`.

use std::sync::Arc;

use amq_protocol::uri::{AMQPScheme, AMQPUri};
use rustls::ClientConfig;
use switchyard_api::client_stream::{self, Stream};
use switchyard_api::BridgeError;

/// Connects to the broker of `uri`; `tls` is required for `amqps://`.
pub async fn connect(
    uri: &AMQPUri,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Box<dyn Stream>, BridgeError> {
    let tls = match uri.scheme {
        AMQPScheme::AMQP => None,
        AMQPScheme::AMQPS => Some(tls.ok_or_else(|| {
            BridgeError::Protocol("amqps:// without a TLS configuration".to_owned())
        })?),
    };
    client_stream::connect(uri.authority.host.as_str(), uri.authority.port, tls).await
}
