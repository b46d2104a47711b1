//! `switchyard run`: the hub itself.

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Settings};
use crate::hub::Hub;
use crate::reload::{self, ReloadOutcome, ReloadRequests};
use crate::{admin, admin_tls, logging, shutdown};

/// Runs until SIGTERM or SIGINT, then drains and stops. SIGHUP and `POST /api/reload`
/// re-read the configuration from `files` (and the environment).
pub async fn run(files: &[PathBuf]) -> anyhow::Result<()> {
    let (settings, sources) = config::load(files)?;
    logging::init(&settings.log);
    let mut plans = config::plan_bridges(&settings, &sources)?;
    let admin_tls = admin_tls::load(&settings.admin, &sources)?;
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
    let mut hangups = reload::hangups().context("cannot install the SIGHUP handler")?;
    let (requests, mut reloads) = ReloadRequests::channel();
    let stop = CancellationToken::new();
    let mut hub = Hub::start(&settings, plans, &stop, requests)?;
    let tracker = TaskTracker::new();
    if let Some(listener) = admin_listener {
        let address = listener.local_addr().ok();
        let scheme = if admin_tls.is_some() { "https" } else { "http" };
        let state = hub.state().clone();
        match admin_tls {
            None => tracker.spawn(admin::serve(listener, state, stop.child_token())),
            Some(tls) => {
                let listener = admin_tls::TlsListener::new(listener, tls, stop.child_token());
                tracker.spawn(admin::serve(listener, state, stop.child_token()))
            }
        };
        if let Some(address) = address {
            tracing::info!(
                "Admin endpoint on {scheme}://{address}/ (healthz, readyz, metrics, api/bridges, api/reload)."
            );
        }
    }
    tracing::info!(
        hub = %settings.hub.name,
        "switchyard {} is running with {} bridge(s).",
        env!("CARGO_PKG_VERSION"),
        hub.state().bridges().len()
    );
    let stop_signal = shutdown::stop_signal();
    tokio::pin!(stop_signal);
    let mut in_force = settings;
    let signal = loop {
        let reply = tokio::select! {
            signal = &mut stop_signal => break signal.context("cannot install the SIGTERM/SIGINT handlers")?,
            _ = hangups.recv() => {
                tracing::info!("Received SIGHUP: reloading the configuration.");
                None
            }
            Some(reply) = reloads.recv() => {
                tracing::info!("Reload requested on the admin endpoint.");
                Some(reply)
            }
        };
        let outcome = reload_config(files, &mut hub, &mut in_force).await;
        match &outcome {
            ReloadOutcome::Applied(changes) => tracing::info!("Configuration reloaded: {changes}."),
            ReloadOutcome::Refused(error) => tracing::error!(
                "The new configuration is refused; the previous one keeps running: {error}"
            ),
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    };
    tracing::info!("Received {signal}: stopping.");
    hub.stop().await;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("Stopped.");
    Ok(())
}

/// Reads the configuration again and puts it in force; `in_force` is updated when it is.
async fn reload_config(files: &[PathBuf], hub: &mut Hub, in_force: &mut Settings) -> ReloadOutcome {
    let loaded = config::load(files).and_then(|(settings, sources)| {
        let plans = config::plan_bridges(&settings, &sources)?;
        Ok((settings, plans))
    });
    let (settings, plans) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return ReloadOutcome::Refused(error.to_string()),
    };
    if settings.admin.listen != in_force.admin.listen {
        tracing::warn!(
            "admin.listen changed to {:?}; it takes effect at the next start.",
            settings.admin.listen
        );
    }
    if settings.log != in_force.log {
        tracing::warn!("The [log] settings changed; they take effect at the next start.");
    }
    match hub.reload(&settings, plans).await {
        Ok(changes) => {
            *in_force = settings;
            ReloadOutcome::Applied(changes)
        }
        Err(error) => ReloadOutcome::Refused(error),
    }
}
