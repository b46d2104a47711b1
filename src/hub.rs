//! Assembling a hub from validated bridges: queues, router, contexts and shared state.

use std::sync::Arc;

use switchyard_api::{Bridge, BridgeContext, BridgeMetrics, LatencyHistogram, OutboundQueue};
use tokio_util::sync::CancellationToken;

use crate::config::{BridgePlan, HubSettings};
use crate::router::{HubRouter, RouteTable, RouteTarget};
use crate::state::{BridgeRuntime, HubState};

/// A bridge with everything it needs to run.
pub struct ReadyBridge {
    /// The adapter.
    pub bridge: Arc<dyn Bridge>,
    /// Its context.
    pub ctx: BridgeContext,
    /// Its restart backoff.
    pub reconnect: switchyard_api::settings::ReconnectConfig,
}

/// Wires the router, queues and counters of `plans` together.
pub fn assemble(
    hub: &HubSettings,
    plans: Vec<BridgePlan>,
    shutdown: &CancellationToken,
) -> (Arc<HubState>, Vec<ReadyBridge>) {
    let latency = Arc::new(LatencyHistogram::default());
    let table = RouteTable::new(
        plans
            .iter()
            .map(|plan| (Arc::clone(&plan.spec.rules), plan.kind.is_server())),
    );
    let runtimes: Vec<BridgeRuntime> = plans
        .iter()
        .map(|plan| {
            let metrics = Arc::new(BridgeMetrics::new(&plan.spec.name));
            let limits = plan.spec.common.queue.limits();
            BridgeRuntime {
                name: Arc::from(plan.spec.name.as_str()),
                type_name: plan.kind.type_name(),
                required: plan.spec.common.required,
                queue: Arc::new(OutboundQueue::new(limits, Arc::clone(&metrics))),
                metrics,
            }
        })
        .collect();
    let targets = runtimes
        .iter()
        .map(|runtime| RouteTarget {
            queue: Arc::clone(&runtime.queue),
            metrics: Arc::clone(&runtime.metrics),
        })
        .collect();
    let router = Arc::new(HubRouter::new(
        table,
        targets,
        hub.max_hops,
        hub.dedup,
        hub.retained_max,
    ));
    let hub_name: Arc<str> = Arc::from(hub.name.as_str());
    let ready = plans
        .into_iter()
        .zip(&runtimes)
        .enumerate()
        .map(|(id, (plan, runtime))| ReadyBridge {
            ctx: BridgeContext {
                id,
                name: Arc::clone(&runtime.name),
                hub_name: Arc::clone(&hub_name),
                rules: Arc::clone(&plan.spec.rules),
                outbound: Arc::clone(&runtime.queue),
                metrics: Arc::clone(&runtime.metrics),
                latency: Arc::clone(&latency),
                router: Arc::clone(&router) as Arc<dyn switchyard_api::Router>,
                shutdown: shutdown.child_token(),
            },
            reconnect: plan.spec.common.reconnect,
            bridge: Arc::from(plan.bridge),
        })
        .collect();
    let state = Arc::new(HubState {
        bridges: runtimes,
        latency,
    });
    (state, ready)
}
