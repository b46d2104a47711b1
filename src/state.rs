//! What the running hub knows about its bridges, shared with the admin endpoint.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_api::{BridgeMetrics, LatencyHistogram, OutboundQueue};

use crate::reload::ReloadRequests;
use crate::spool::SpoolInfo;

/// One running bridge, as the admin endpoint sees it.
#[derive(Clone)]
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
    /// Its disk spool, when `queue.spool` is set.
    pub spool: Option<SpoolInfo>,
}

/// The hub's observable state.
pub struct HubState {
    /// Every bridge of the configuration in force, in name order.
    bridges: ArcSwap<Vec<BridgeRuntime>>,
    /// Time from entering the hub to leaving a bridge.
    pub latency: Arc<LatencyHistogram>,
    /// Asks the running hub to reload its configuration.
    pub reload: ReloadRequests,
}

impl HubState {
    /// State showing `bridges`.
    pub fn new(
        bridges: Vec<BridgeRuntime>,
        latency: Arc<LatencyHistogram>,
        reload: ReloadRequests,
    ) -> Self {
        Self {
            bridges: ArcSwap::from_pointee(bridges),
            latency,
            reload,
        }
    }

    /// The bridges of the configuration in force.
    pub fn bridges(&self) -> Arc<Vec<BridgeRuntime>> {
        self.bridges.load_full()
    }

    /// Shows `bridges` from now on (after a reload).
    pub fn set_bridges(&self, bridges: Vec<BridgeRuntime>) {
        self.bridges.store(Arc::new(bridges));
    }

    /// Ready when every required bridge is up.
    pub fn is_ready(&self) -> bool {
        self.bridges
            .load()
            .iter()
            .filter(|bridge| bridge.required)
            .all(|bridge| bridge.metrics.is_up())
    }

    /// Names of required bridges that are down.
    pub fn not_ready(&self) -> Vec<Arc<str>> {
        self.bridges
            .load()
            .iter()
            .filter(|bridge| bridge.required && !bridge.metrics.is_up())
            .map(|bridge| Arc::clone(&bridge.name))
            .collect()
    }
}
