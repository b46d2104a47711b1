//! Accepting connections: TCP_NODELAY on every socket, each connection in its own task at
//! once (a silent socket never holds up the next one), and for WebSocket listeners the
//! handshake inside that task, bounded by `connect_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
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
}

impl Transport {
    /// The setting that holds the listener's address.
    pub fn key(self) -> &'static str {
        match self {
            Transport::Tcp => "listen",
            Transport::WebSocket => "ws_listen",
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
                    Transport::Tcp => tracker.spawn(serve(broker, stream)),
                    Transport::WebSocket => tracker.spawn(serve_websocket(broker, stream, peer)),
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

/// Completes the WebSocket handshake within `connect_timeout`, then serves MQTT over it.
async fn serve_websocket(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let max_message = broker.settings.max_packet().saturating_add(HEADER_ROOM);
    let handshake = websocket::accept(stream, max_message);
    let shutdown = broker.ctx.shutdown.clone();
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = tokio::time::timeout(broker.settings.connect_timeout.0, handshake) => handshake,
    };
    match handshake {
        Ok(Ok(socket)) => serve(broker, socket).await,
        Ok(Err(error)) => {
            debug!(bridge = %broker.ctx.name, %peer, "WebSocket handshake failed: {error}.");
        }
        Err(_) => {
            debug!(bridge = %broker.ctx.name, %peer, "No WebSocket handshake in time; closing.");
        }
    }
}
