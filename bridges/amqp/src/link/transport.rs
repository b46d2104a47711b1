//! The byte stream under a link: TCP with Nagle off, wrapped in TLS for `amqps://`.

use std::sync::Arc;

use amq_protocol::uri::{AMQPScheme, AMQPUri};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use switchyard_api::BridgeError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A connected byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects to the broker of `uri`; `tls` is required for `amqps://`.
pub async fn connect(
    uri: &AMQPUri,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Box<dyn Stream>, BridgeError> {
    let host = uri.authority.host.as_str();
    let port = uri.authority.port;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| BridgeError::Io {
            context: format!("connect to {host}:{port}"),
            source,
        })?;
    tcp.set_nodelay(true).map_err(|source| BridgeError::Io {
        context: "turn off Nagle's algorithm".to_owned(),
        source,
    })?;
    if uri.scheme == AMQPScheme::AMQP {
        return Ok(Box::new(tcp));
    }
    let Some(tls) = tls else {
        return Err(BridgeError::Protocol(
            "amqps:// without a TLS configuration".to_owned(),
        ));
    };
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        BridgeError::Protocol(format!(
            "TLS needs a DNS name or an IP address to check the certificate against, found \
             {host:?}"
        ))
    })?;
    let stream = TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .map_err(|source| BridgeError::Io {
            context: format!("TLS handshake with {host}:{port}"),
            source,
        })?;
    Ok(Box::new(stream))
}
