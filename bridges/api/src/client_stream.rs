//! The byte stream of a bridge that connects out: TCP with Nagle off, wrapped in TLS when
//! the bridge's address asks for it. The AMQP link and the remote MQTT connection both
//! open theirs here.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::bridge::BridgeError;

/// A connected byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects to `host:port`, then makes the TLS handshake with `tls` when given.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Box<dyn Stream>, BridgeError> {
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
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
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
