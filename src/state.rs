//! What the running hub knows about its bridges, shared with the admin endpoint.

use std::sync::Arc;

use switchyard_api::{BridgeMetrics, LatencyHistogram, OutboundQueue};

/// One running bridge, as the admin endpoint sees it.
pub struct BridgeRuntime {
    /// Its name.
    pub name: Arc<str>,
    /// Its `type`.
    pub type_name: &'static str,
    /// Whether `/readyz` waits for it.
    pub required: bool,
    /// Its counters.
    pub metrics: Arc<BridgeMetrics>,
    /// Its outbound queue (for depth gauges).
    pub queue: Arc<OutboundQueue>,
}

/// The hub's observable state.
pub struct HubState {
    /// Every bridge, in id order.
    pub bridges: Vec<BridgeRuntime>,
    /// Time from entering the hub to leaving a bridge.
    pub latency: Arc<LatencyHistogram>,
}

impl HubState {
    /// Ready when every required bridge is up.
    pub fn is_ready(&self) -> bool {
        self.bridges
            .iter()
            .filter(|bridge| bridge.required)
            .all(|bridge| bridge.metrics.is_up())
    }

    /// Names of required bridges that are down.
    pub fn not_ready(&self) -> Vec<&str> {
        self.bridges
            .iter()
            .filter(|bridge| bridge.required && !bridge.metrics.is_up())
            .map(|bridge| &*bridge.name)
            .collect()
    }

    /// Whether every outbound queue is empty.
    pub fn queues_empty(&self) -> bool {
        self.bridges
            .iter()
            .all(|bridge| bridge.queue.depth().0 == 0)
    }
}
