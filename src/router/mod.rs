//! The central router: from a source bridge to the outbound queues of every destination.
//!
//! Routing runs on the source's task (no extra hop): loop and hop checks, duplicate
//! suppression, the retained store, then one queue push per destination, sharing the
//! message (`Arc`) and the source's acknowledgement. A full QoS 1 destination makes the
//! source wait, which is the backpressure DESIGN.md promises.

mod dedup;
mod retained;
mod table;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchyard_api::{
    Ack, BoxFuture, BridgeId, BridgeMetrics, DropReason, Message, Outbound, OutboundQueue, QoS,
    Router,
};

pub use dedup::DedupWindow;
pub use retained::RetainedStore;
pub use table::{Destination, RouteTable};

/// What the router holds for each bridge.
pub struct RouteTarget {
    /// Messages waiting to leave through the bridge.
    pub queue: Arc<OutboundQueue>,
    /// Its counters (drops are counted against the source).
    pub metrics: Arc<BridgeMetrics>,
}

/// The hub's router.
pub struct HubRouter {
    table: RouteTable,
    targets: Vec<RouteTarget>,
    max_hops: u8,
    /// One window of recent ids per source bridge.
    dedup: Vec<Mutex<DedupWindow>>,
    retained: RetainedStore,
}

impl HubRouter {
    /// A router over `table`, with one target per bridge in the same order.
    pub fn new(
        table: RouteTable,
        targets: Vec<RouteTarget>,
        max_hops: u8,
        dedup_window: usize,
        retained_max: usize,
    ) -> Self {
        let dedup = targets
            .iter()
            .map(|_| Mutex::new(DedupWindow::new(dedup_window)))
            .collect();
        Self {
            table,
            targets,
            max_hops,
            dedup,
            retained: RetainedStore::new(retained_max),
        }
    }

    /// Whether `message` should be dropped before routing; counts the reason.
    fn refuse(&self, origin: BridgeId, message: &Message) -> bool {
        let source = &self.targets[origin].metrics;
        if message.hops > self.max_hops {
            source.dropped(
                DropReason::HopLimit,
                format_args!(
                    "it crossed {} hubs, more than hub.max_hops = {}",
                    message.hops, self.max_hops
                ),
            );
            return true;
        }
        if let Some(id) = &message.id {
            let mut window = self.dedup[origin]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !window.insert(id) {
                source.dropped(
                    DropReason::Duplicate,
                    format_args!("message id {id:?} was seen recently from this bridge"),
                );
                return true;
            }
        }
        false
    }

    async fn route_message(&self, origin: BridgeId, message: Message, ack: Option<Ack>) {
        if self.refuse(origin, &message) {
            if let Some(ack) = ack {
                ack.confirm();
            }
            return;
        }
        let message = Arc::new(message);
        if message.retain {
            self.retained.store(origin, &message);
        }
        let mut destinations = Vec::new();
        let looped =
            self.table
                .destinations(Some(origin), &message.topic, message.qos, &mut destinations);
        if looped {
            self.targets[origin].metrics.dropped(
                DropReason::Loop,
                "a message would have gone back out through the bridge it came in by",
            );
        }
        let received_at = Instant::now();
        for destination in destinations {
            let share = match (&ack, destination.qos) {
                (Some(ack), QoS::AtLeastOnce) => Some(ack.share()),
                _ => None,
            };
            let entry = Outbound {
                message: Arc::clone(&message),
                rule: destination.rule,
                qos: destination.qos,
                ack: share,
                received_at,
            };
            self.targets[destination.bridge].queue.push(entry).await;
        }
        if let Some(ack) = ack {
            ack.confirm();
        }
    }
}

impl Router for HubRouter {
    fn route(&self, origin: BridgeId, message: Message, ack: Option<Ack>) -> BoxFuture<'_, ()> {
        Box::pin(self.route_message(origin, message, ack))
    }

    fn retained(&self, bridge: BridgeId) -> Vec<(Arc<Message>, usize)> {
        self.retained.for_bridge(bridge, &self.table)
    }
}

#[cfg(test)]
mod tests;
