//! Runs each bridge on its own task and restarts it with backoff when it fails, so one
//! bridge's failure never stops the others.

use std::sync::Arc;
use std::time::Instant;

use switchyard_api::settings::{Backoff, ReconnectConfig};
use switchyard_api::{Bridge, BridgeContext};
use tokio_util::task::TaskTracker;

/// Starts `bridge` under supervision on `tracker`.
pub fn supervise(
    tracker: &TaskTracker,
    bridge: Arc<dyn Bridge>,
    ctx: BridgeContext,
    reconnect: ReconnectConfig,
) {
    tracker.spawn(async move {
        let mut backoff = Backoff::new(reconnect);
        loop {
            let started = Instant::now();
            // A separate task, so that a panic in the adapter is caught here.
            let outcome = tokio::spawn(Arc::clone(&bridge).run(ctx.clone())).await;
            if ctx.shutdown.is_cancelled() {
                ctx.metrics.set_up(false);
                return;
            }
            let reason = match outcome {
                Ok(Ok(())) => "it stopped unexpectedly".to_owned(),
                Ok(Err(error)) => error.to_string(),
                Err(join_error) => format!("it panicked: {join_error}"),
            };
            ctx.metrics.set_up(false);
            ctx.metrics.record_error(&reason);
            if started.elapsed() > reconnect.max.0 {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::error!(
                bridge = %ctx.name,
                "Bridge failed: {reason}. Restarting it in {delay:?}."
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => ctx.metrics.reconnected(),
                () = ctx.shutdown.cancelled() => return,
            }
        }
    });
}
