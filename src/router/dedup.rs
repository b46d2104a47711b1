//! A window of the most recent message ids from one source.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Remembers the last `capacity` ids; 0 turns suppression off.
#[derive(Debug)]
pub struct DedupWindow {
    capacity: usize,
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl DedupWindow {
    /// An empty window.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id`; false when it is already in the window (a duplicate).
    pub fn insert(&mut self, id: &Arc<str>) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if !self.seen.insert(Arc::clone(id)) {
            return false;
        }
        self.order.push_back(Arc::clone(id));
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
}
