//! The accept loop: every accepted socket gets its own task at once (the handshake runs
//! there, under its timeout), so a slow or hostile socket never delays the next accept.
//!
//! Admission is counted with a semaphore of `max_connections` permits, held by each
//! connection task from accept to close. A socket beyond it is answered with HTTP 503 by a
//! refusal task; at most [`MAX_REFUSALS_IN_FLIGHT`] of those run at once, and a socket
//! beyond that is closed without an answer, so a flood cannot grow memory without bound.

use std::sync::Arc;
use std::time::Duration;

use switchyard_api::server_tls::{Accepted, ServerTls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::connection::{self, Served};

/// Refusal (HTTP 503) tasks allowed at once while the bridge is full.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Pause after a failed accept (such as too many open files), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepts clients until shutdown; each connection task is tracked by `tracker`.
pub async fn accept_loop(listener: &TcpListener, served: Arc<Served>, tracker: &TaskTracker) {
    let ctx = &served.ctx;
    let admitted = Arc::new(Semaphore::new(served.settings.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ctx.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                failing = false;
                stream
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        bridge = %ctx.name,
                        "Cannot accept WebSocket clients: {error}; retrying (check the open \
                         file limit)."
                    );
                    ctx.metrics.record_error(&format!("accept: {error}"));
                }
                failing = true;
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = ctx.shutdown.cancelled() => return,
                }
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(bridge = %ctx.name, "Cannot set TCP_NODELAY: {error}");
        }
        // One task per transport: a TLS connection's state is about 5 KiB larger, and a
        // task serving either would reserve that room for every plain connection too.
        if let Ok(permit) = Arc::clone(&admitted).try_acquire_owned() {
            let served = Arc::clone(&served);
            match served.tls.clone() {
                None => tracker.spawn(async move {
                    connection::serve(served, stream, None).await;
                    drop(permit);
                }),
                Some(tls) => tracker.spawn(async move {
                    if let Some(accepted) = tls_handshake(&served, &tls, stream).await {
                        let user = accepted.certificate_user;
                        connection::serve(served, accepted.stream, user).await;
                    }
                    drop(permit);
                }),
            };
        } else if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
            let served = Arc::clone(&served);
            match served.tls.clone() {
                None => tracker.spawn(async move {
                    connection::refuse(served, stream).await;
                    drop(permit);
                }),
                Some(tls) => tracker.spawn(async move {
                    if let Some(accepted) = tls_handshake(&served, &tls, stream).await {
                        connection::refuse(served, accepted.stream).await;
                    }
                    drop(permit);
                }),
            };
        } else {
            tracing::debug!(
                bridge = %ctx.name,
                "Closed a WebSocket connection at once: max_connections reached and too many refusals in progress."
            );
        }
    }
}

/// The TLS handshake under `handshake_timeout`; `None` (logged) when it fails.
async fn tls_handshake(
    served: &Served,
    tls: &ServerTls,
    stream: TcpStream,
) -> Option<Accepted<TcpStream>> {
    let limit = served.settings.handshake_timeout.0;
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(limit, tls.accept(stream)) => handshake,
        () = served.ctx.shutdown.cancelled() => return None,
    };
    match handshake {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(error)) => {
            tracing::debug!(bridge = %served.ctx.name, "TLS handshake failed: {error}");
            None
        }
        Err(_) => {
            tracing::debug!(bridge = %served.ctx.name, "No TLS handshake within {limit:?}; closing.");
            None
        }
    }
}
