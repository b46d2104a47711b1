//! The central router: from a source bridge to the outbound queues of every destination.
//!
//! Routing runs on the source's task (no extra hop): loop and hop checks, duplicate
//! suppression, the retained store, then one queue push per destination, sharing the
//! message (`Arc`) and the source's acknowledgement. A full QoS 1 destination makes the
//! source wait, which is the backpressure DESIGN.md promises. A reload swaps the whole
//! [`Routing`] (table, targets, limits) atomically; messages being routed finish with the
//! routing they started with.

mod dedup;
mod retained;
mod table;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

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
    /// Recent message ids from the bridge, for duplicate suppression (kept across reloads).
    pub dedup: Arc<Mutex<DedupWindow>>,
}

/// One configuration's routing: the table and every bridge's target, by bridge id.
/// Replaced as a whole when the configuration is reloaded.
pub struct Routing {
    table: RouteTable,
    /// `None` for ids of bridges that no longer exist.
    targets: Vec<Option<RouteTarget>>,
    max_hops: u8,
}

impl Routing {
    /// Routing over `table`, whose bridge ids index `targets`.
    pub fn new(table: RouteTable, targets: Vec<Option<RouteTarget>>, max_hops: u8) -> Self {
        Self {
            table,
            targets,
            max_hops,
        }
    }

    fn target(&self, bridge: BridgeId) -> Option<&RouteTarget> {
        self.targets.get(bridge).and_then(Option::as_ref)
    }

    /// Whether `message` should be dropped before routing; counts the reason. A source
    /// that left the configuration (still draining) has no counters or window any more.
    fn refuse(&self, origin: BridgeId, message: &Message) -> bool {
        let Some(source) = self.target(origin) else {
            return message.hops > self.max_hops;
        };
        if message.hops > self.max_hops {
            source.metrics.dropped(
                DropReason::HopLimit,
                format_args!(
                    "it crossed {} hubs, more than hub.max_hops = {}",
                    message.hops, self.max_hops
                ),
            );
            return true;
        }
        if let Some(id) = &message.id {
            let mut window = source
                .dedup
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !window.insert(id) {
                source.metrics.dropped(
                    DropReason::Duplicate,
                    format_args!("message id {id:?} was seen recently from this bridge"),
                );
                return true;
            }
        }
        false
    }
}

/// The hub's router. The routing is swapped atomically on reload; routing a message
/// loads it without a lock.
pub struct HubRouter {
    routing: ArcSwap<Routing>,
    retained: RetainedStore,
}

impl HubRouter {
    /// A router over `routing`, keeping at most `retained_max` retained topics.
    pub fn new(routing: Routing, retained_max: usize) -> Self {
        Self {
            routing: ArcSwap::from_pointee(routing),
            retained: RetainedStore::new(retained_max),
        }
    }

    /// Puts `routing` in force for every message routed from now on.
    pub fn replace(&self, routing: Routing, retained_max: usize) {
        self.routing.store(Arc::new(routing));
        self.retained.set_max_topics(retained_max);
    }

    async fn route_message(&self, origin: BridgeId, message: Message, ack: Option<Ack>) {
        let routing = self.routing.load_full();
        if routing.refuse(origin, &message) {
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
        let looped = routing.table.destinations(
            Some(origin),
            &message.topic,
            message.qos,
            &mut destinations,
        );
        if looped {
            if let Some(source) = routing.target(origin) {
                source.metrics.dropped(
                    DropReason::Loop,
                    "a message would have gone back out through the bridge it came in by",
                );
            }
        }
        let received_at = Instant::now();
        for destination in destinations {
            let Some(target) = routing.target(destination.bridge) else {
                continue;
            };
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
            target.queue.push(entry).await;
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
        self.retained.for_bridge(bridge, &self.routing.load().table)
    }
}

#[cfg(test)]
mod tests;
