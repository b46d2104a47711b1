//! The admin HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, `/api/bridges`, and
//! `POST /api/reload`.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use switchyard_api::DropReason;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::reload::ReloadOutcome;
use crate::state::HubState;

/// Binds the admin address; the error names `admin.listen`.
pub async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!("admin: cannot listen on {address}; set admin.listen to a free address (or \"\" to turn it off)")
    })
}

/// Serves until `shutdown` is cancelled (on a plain TCP or a [`crate::admin_tls`] listener).
pub async fn serve<L>(listener: L, state: Arc<HubState>, shutdown: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/api/bridges", get(bridges))
        .route("/api/reload", post(reload))
        .with_state(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = result {
        tracing::error!("The admin endpoint stopped: {error}.");
    }
}

async fn readyz(State(state): State<Arc<HubState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let waiting = state.not_ready().join(", ");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {waiting}\n"),
        )
            .into_response()
    }
}

async fn prometheus(State(state): State<Arc<HubState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state),
    )
        .into_response()
}

/// Re-reads the configuration: 200 with what changed, or 400 with why the new one was
/// refused (the old one keeps running).
async fn reload(State(state): State<Arc<HubState>>) -> Response {
    match state.reload.request().await {
        ReloadOutcome::Applied(changes) => (StatusCode::OK, format!("reloaded: {changes}\n")),
        ReloadOutcome::Refused(error) => (StatusCode::BAD_REQUEST, format!("refused: {error}\n")),
    }
    .into_response()
}

async fn bridges(State(state): State<Arc<HubState>>) -> Json<serde_json::Value> {
    let list = state
        .bridges()
        .iter()
        .map(|bridge| {
            let snapshot = bridge.metrics.snapshot();
            let (queued, bytes) = bridge.queue.depth();
            let dropped: serde_json::Map<String, serde_json::Value> = DropReason::ALL
                .iter()
                .map(|reason| {
                    (
                        reason.as_str().to_owned(),
                        snapshot.dropped[*reason as usize].into(),
                    )
                })
                .collect();
            serde_json::json!({
                "name": &*bridge.name,
                "type": bridge.type_name,
                "required": bridge.required,
                "state": if snapshot.up { "up" } else { "down" },
                "since_ms": snapshot.status.since_ms,
                "last_error": snapshot.status.last_error,
                "received": snapshot.received,
                "sent": snapshot.sent,
                "dropped": dropped,
                "queue": { "messages": queued, "bytes": bytes },
                "spool": bridge.spool.as_ref().map(|spool| {
                    let (records, stored) = bridge.queue.spool_depth().unwrap_or_default();
                    serde_json::json!({
                        "path": spool.path,
                        "messages": records,
                        "bytes": stored,
                        "damage": spool.damage,
                    })
                }),
                "connections": snapshot.connections,
                "reconnects": snapshot.reconnects,
            })
        })
        .collect();
    Json(serde_json::Value::Array(list))
}
