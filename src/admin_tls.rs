//! `[admin] tls = { cert, key, client_ca, require_certificate }`: the admin endpoint over
//! HTTPS. TLS handshakes run in their own tasks (a silent socket never holds up the next
//! client) and hand finished connections to axum; the certificate files are read again on
//! SIGHUP.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_api::server_tls::ServerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminSettings, ConfigError, ConfigSources};

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for axum; beyond, handshake tasks wait.
const READY_CONNECTIONS: usize = 64;

/// Loads `admin.tls` when set; the error names the key.
pub fn load(
    settings: &AdminSettings,
    sources: &ConfigSources,
) -> Result<Option<ServerTls>, ConfigError> {
    if !settings.tls.is_set() {
        return Ok(None);
    }
    ServerTls::load("admin.tls", "admin.tls", &settings.tls)
        .map(Some)
        .map_err(|error| sources.locate(ConfigError::at(error.path, error.message)))
}

/// A listener whose connections have completed the TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and completes handshakes with `tls` until `shutdown`.
    pub fn new(listener: TcpListener, tls: ServerTls, shutdown: CancellationToken) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, ready) = mpsc::channel(READY_CONNECTIONS);
        let reload = tls.clone();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { reload.reload_on_sighup(shutdown).await }
        });
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!("admin: cannot accept a connection: {error}.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (tls, sender) = (tls.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(accepted)) => {
                            let _ = sender.send((accepted.stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, "admin: TLS handshake failed: {error}.");
                        }
                        Err(_) => tracing::debug!(%peer, "admin: no TLS handshake in time."),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (shutdown): axum's graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
