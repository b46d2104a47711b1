//! `switchyard run`: the hub itself.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{admin, config, hub, logging, shutdown, state_topics, supervisor};

/// How often a stopping hub checks whether its queues have drained.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How long bridges get to finish after being told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs until SIGTERM or SIGINT, then drains and stops.
pub async fn run(files: &[PathBuf]) -> anyhow::Result<()> {
    let (settings, sources) = config::load(files)?;
    logging::init(&settings.log);
    let mut plans = config::plan_bridges(&settings, &sources)?;
    for plan in &mut plans {
        let name = plan.spec.name.clone();
        plan.bridge
            .open()
            .await
            .with_context(|| format!("bridges.{name}"))?;
    }
    let admin_listener = match settings.admin.listen.as_str() {
        "" => None,
        address => Some(admin::bind(address).await?),
    };
    let stop = CancellationToken::new();
    let (state, bridges) = hub::assemble(&settings.hub, plans, &stop);
    let tracker = TaskTracker::new();
    let contexts: Vec<_> = bridges.iter().map(|ready| ready.ctx.clone()).collect();
    state_topics::publish_states(&tracker, &contexts);
    for ready in bridges {
        supervisor::supervise(&tracker, ready.bridge, ready.ctx, ready.reconnect);
    }
    if let Some(listener) = admin_listener {
        let address = listener.local_addr().ok();
        tracker.spawn(admin::serve(listener, state.clone(), stop.child_token()));
        if let Some(address) = address {
            tracing::info!(
                "Admin endpoint on http://{address}/ (healthz, readyz, metrics, api/bridges)."
            );
        }
    }
    tracing::info!(
        hub = %settings.hub.name,
        "switchyard {} is running with {} bridge(s).",
        env!("CARGO_PKG_VERSION"),
        state.bridges.len()
    );
    let signal = shutdown::stop_signal()
        .await
        .context("cannot install the SIGTERM/SIGINT handlers")?;
    let timeout = settings.hub.shutdown_timeout.0;
    tracing::info!("Received {signal}: draining queues for up to {timeout:?}.");
    let deadline = Instant::now() + timeout;
    while !state.queues_empty() && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let left: usize = state
        .bridges
        .iter()
        .map(|bridge| bridge.queue.depth().0)
        .sum();
    if left > 0 {
        tracing::warn!("Stopping with {left} message(s) still queued; they are not delivered.");
    }
    stop.cancel();
    for bridge in &state.bridges {
        bridge.queue.close();
    }
    tracker.close();
    if tokio::time::timeout(STOP_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("Some bridges did not stop within {STOP_GRACE:?}; exiting anyway.");
    }
    tracing::info!("Stopped.");
    Ok(())
}
