//! Accepting connections: TCP_NODELAY on every socket, each connection in its own task at
//! once (a silent socket never holds up the next one), and the TLS and WebSocket
//! handshakes inside that task, bounded together by `connect_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::server_tls::Accepted;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::HEADER_ROOM;
use crate::session::{serve, Broker};
use crate::websocket;

/// Pause after a failed accept (such as running out of file descriptors), so the loop
/// does not spin while the cause lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT directly over TCP (`listen`).
    Tcp,
    /// MQTT over WebSocket (`ws_listen`).
    WebSocket,
    /// MQTT over TLS (`tls_listen`).
    Tls,
    /// MQTT over WebSocket over TLS (`wss_listen`).
    Wss,
}

impl Transport {
    /// The setting that holds the listener's address.
    pub fn key(self) -> &'static str {
        match self {
            Transport::Tcp => "listen",
            Transport::WebSocket => "ws_listen",
            Transport::Tls => "tls_listen",
            Transport::Wss => "wss_listen",
        }
    }
}

/// Accepts connections until the hub stops, each served in a task of `tracker`.
pub async fn accept_loop(
    listener: Arc<TcpListener>,
    transport: Transport,
    broker: Arc<Broker>,
    tracker: TaskTracker,
) {
    let shutdown = broker.ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(bridge = %broker.ctx.name, %peer, "Cannot set TCP_NODELAY: {error}.");
                }
                let broker = Arc::clone(&broker);
                // One task type per transport: a task is as large as its future, and a
                // WebSocket connection's future is larger than a plain one's.
                match transport {
                    Transport::Tcp => tracker.spawn(serve(broker, stream, None)),
                    Transport::WebSocket => {
                        let deadline = Instant::now() + broker.settings.connect_timeout.0;
                        tracker.spawn(serve_websocket(broker, stream, peer, None, deadline))
                    }
                    Transport::Tls => tracker.spawn(serve_tls(broker, stream, peer)),
                    Transport::Wss => tracker.spawn(serve_wss(broker, stream, peer)),
                };
            }
            Err(error) => {
                warn!(
                    bridge = %broker.ctx.name,
                    "Cannot accept a connection on {}: {error}.",
                    transport.key()
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Completes the TLS handshake within `connect_timeout`, then serves MQTT over it.
async fn serve_tls(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let deadline = Instant::now() + broker.settings.connect_timeout.0;
    if let Some(accepted) = tls_handshake(&broker, stream, peer, deadline).await {
        serve(broker, accepted.stream, accepted.certificate_user).await;
    }
}

/// Completes the TLS and WebSocket handshakes within `connect_timeout`, then serves MQTT
/// over them.
async fn serve_wss(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let deadline = Instant::now() + broker.settings.connect_timeout.0;
    if let Some(accepted) = tls_handshake(&broker, stream, peer, deadline).await {
        let user = accepted.certificate_user;
        serve_websocket(broker, accepted.stream, peer, user, deadline).await;
    }
}

/// The TLS handshake, by `deadline`; `None` (logged) when it fails or the hub stops.
async fn tls_handshake(
    broker: &Broker,
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<Accepted<TcpStream>> {
    let tls = broker.tls.as_ref()?;
    let handshake = tokio::select! {
        () = broker.ctx.shutdown.cancelled() => return None,
        handshake = tokio::time::timeout_at(deadline, tls.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(error)) => {
            // A client that does not trust the certificate, or whose certificate is
            // refused, ends here.
            debug!(bridge = %broker.ctx.name, %peer, "TLS handshake failed: {error}.");
            None
        }
        Err(_) => {
            debug!(bridge = %broker.ctx.name, %peer, "No TLS handshake in time; closing.");
            None
        }
    }
}

/// Completes the WebSocket handshake by `deadline`, then serves MQTT over it.
async fn serve_websocket<S>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    certificate_user: Option<String>,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max_message = broker.settings.max_packet().saturating_add(HEADER_ROOM);
    let handshake = websocket::accept(stream, max_message);
    let shutdown = broker.ctx.shutdown.clone();
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = tokio::time::timeout_at(deadline, handshake) => handshake,
    };
    match handshake {
        Ok(Ok(socket)) => serve(broker, socket, certificate_user).await,
        Ok(Err(error)) => {
            debug!(bridge = %broker.ctx.name, %peer, "WebSocket handshake failed: {error}.");
        }
        Err(_) => {
            debug!(bridge = %broker.ctx.name, %peer, "No WebSocket handshake in time; closing.");
        }
    }
}
