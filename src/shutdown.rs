//! Waiting for the signals that stop the hub.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the signal's name on SIGTERM or SIGINT.
pub async fn stop_signal() -> std::io::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
