//! The last retained message per topic, for new subscribers of server bridges.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_api::{BridgeId, Message, Topic};

use super::table::RouteTable;

/// Retained messages by topic, bounded by topic count.
#[derive(Debug)]
pub struct RetainedStore {
    max_topics: AtomicUsize,
    messages: Mutex<HashMap<Topic, (BridgeId, Arc<Message>)>>,
}

impl RetainedStore {
    /// An empty store that holds at most `max_topics` topics.
    pub fn new(max_topics: usize) -> Self {
        Self {
            max_topics: AtomicUsize::new(max_topics),
            messages: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the bound (on reload); topics already kept stay.
    pub fn set_max_topics(&self, max_topics: usize) {
        self.max_topics.store(max_topics, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Topic, (BridgeId, Arc<Message>)>> {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `message` as its topic's retained message; an empty payload clears it.
    pub fn store(&self, origin: BridgeId, message: &Arc<Message>) {
        let max_topics = self.max_topics.load(Ordering::Relaxed);
        let mut messages = self.lock();
        if message.payload.is_empty() {
            messages.remove(&message.topic);
        } else if messages.len() < max_topics || messages.contains_key(&message.topic) {
            messages.insert(message.topic.clone(), (origin, Arc::clone(message)));
        } else {
            tracing::warn!(
                topic = %message.topic,
                "Not keeping a retained message: the store is full (hub.retained_max = {max_topics})."
            );
        }
    }

    /// The retained messages `bridge` may send, each with the `out` rule that passes it.
    pub fn for_bridge(&self, bridge: BridgeId, table: &RouteTable) -> Vec<(Arc<Message>, usize)> {
        self.lock()
            .values()
            .filter_map(|(origin, message)| {
                let rule = table.out_rule(*origin, bridge, &message.topic)?;
                Some((Arc::clone(message), rule))
            })
            .collect()
    }
}
