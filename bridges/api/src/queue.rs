//! The bounded outbound queue every destination bridge has.
//!
//! The router pushes, the bridge pops in batches. Limits are `max_messages` and `max_bytes`.
//! When full, `overflow` decides for QoS 0 (`drop-oldest`, `drop-newest`, or `block`); QoS 1
//! always waits for space, which holds back the source (backpressure) instead of losing it.
//! Entries older than `ttl` are dropped when they reach the front.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::ack::Ack;
use crate::message::{Message, QoS};
use crate::telemetry::{BridgeMetrics, DropReason};

/// What a full queue does with a QoS 0 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Make room by dropping the oldest QoS 0 message (a live feed prefers fresh data).
    #[default]
    DropOldest,
    /// Drop the message that does not fit.
    DropNewest,
    /// Wait for room, holding back the source.
    Block,
}

/// Bounds of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages held.
    pub max_messages: usize,
    /// Most payload, topic and header bytes held.
    pub max_bytes: usize,
    /// Policy for QoS 0 when full.
    pub overflow: Overflow,
    /// Messages older than this are dropped instead of sent.
    pub ttl: Option<Duration>,
}

/// One message waiting for a destination.
#[derive(Debug)]
pub struct Outbound {
    /// The shared message.
    pub message: Arc<Message>,
    /// Index of the destination bridge's rule that matched (for the remote name).
    pub rule: usize,
    /// The QoS for this destination: the message's, capped by the rule.
    pub qos: QoS,
    /// This destination's share of the source's acknowledgement.
    pub ack: Option<Ack>,
    /// When the message entered the hub.
    pub received_at: Instant,
}

#[derive(Debug, Default)]
struct QueueState {
    entries: VecDeque<Outbound>,
    bytes: usize,
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue of [`Outbound`] entries.
#[derive(Debug)]
pub struct OutboundQueue {
    state: Mutex<QueueState>,
    /// Wakes the consumer when entries arrive.
    filled: Notify,
    /// Wakes producers waiting for room.
    drained: Notify,
    limits: QueueLimits,
    metrics: Arc<BridgeMetrics>,
}

impl OutboundQueue {
    /// An empty queue whose drops are counted in `metrics`.
    pub fn new(limits: QueueLimits, metrics: Arc<BridgeMetrics>) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            filled: Notify::new(),
            drained: Notify::new(),
            limits,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fits(&self, state: &QueueState, size: usize) -> bool {
        state.entries.is_empty()
            || (state.entries.len() < self.limits.max_messages
                && state.bytes + size <= self.limits.max_bytes)
    }

    /// Adds an entry, waiting for room when the policy says so. An entry offered to a
    /// closed queue is dropped (its acknowledgement share reports it not delivered).
    pub async fn push(&self, entry: Outbound) {
        let size = entry.message.size();
        let waits = entry.qos == QoS::AtLeastOnce || self.limits.overflow == Overflow::Block;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            {
                let mut state = self.lock();
                if state.closed {
                    return;
                }
                if self.fits(&state, size) {
                    state.bytes += size;
                    state.entries.push_back(entry);
                    drop(state);
                    self.filled.notify_one();
                    return;
                }
                if !waits {
                    if self.limits.overflow == Overflow::DropOldest
                        && self.make_room(&mut state, size)
                    {
                        state.bytes += size;
                        state.entries.push_back(entry);
                        drop(state);
                        self.filled.notify_one();
                    } else {
                        drop(state);
                        self.metrics
                            .dropped(DropReason::QueueFull, "the outbound queue is full");
                    }
                    return;
                }
                // Register for the wake-up before releasing the lock, so none is missed.
                drained.as_mut().enable();
            }
            drained.await;
        }
    }

    /// Drops the oldest QoS 0 entries until `size` more bytes fit; false if it cannot.
    fn make_room(&self, state: &mut QueueState, size: usize) -> bool {
        while !self.fits(state, size) {
            let Some(index) = state
                .entries
                .iter()
                .position(|entry| entry.qos == QoS::AtMostOnce)
            else {
                return false;
            };
            if let Some(old) = state.entries.remove(index) {
                state.bytes -= old.message.size();
                self.metrics
                    .dropped(DropReason::QueueFull, "the outbound queue is full");
            }
        }
        true
    }

    /// Moves up to `max` entries into `batch`, waiting while the queue is empty. Expired
    /// entries are dropped on the way. Returns false once the queue is closed and empty.
    pub async fn pop_batch(&self, batch: &mut Vec<Outbound>, max: usize) -> bool {
        loop {
            let filled = self.filled.notified();
            {
                let mut state = self.lock();
                if state.entries.is_empty() {
                    if state.closed {
                        return false;
                    }
                } else {
                    let count = state.entries.len().min(max.max(1));
                    let mut freed = 0;
                    for entry in state.entries.drain(..count) {
                        freed += entry.message.size();
                        match self.limits.ttl {
                            Some(ttl) if entry.received_at.elapsed() > ttl => {
                                self.metrics.dropped(
                                    DropReason::Expired,
                                    format_args!("older than the queue's ttl of {ttl:?}"),
                                );
                                if let Some(ack) = entry.ack {
                                    ack.confirm();
                                }
                            }
                            _ => batch.push(entry),
                        }
                    }
                    state.bytes -= freed;
                    drop(state);
                    self.drained.notify_waiters();
                    if !batch.is_empty() {
                        return true;
                    }
                    continue;
                }
            }
            filled.await;
        }
    }

    /// Puts entries that could not be sent back at the front, in their original order, so
    /// they are retried first (after a reconnect). They are accepted even over the limits.
    pub fn requeue_front(&self, entries: Vec<Outbound>) {
        let mut state = self.lock();
        for entry in entries.into_iter().rev() {
            state.bytes += entry.message.size();
            state.entries.push_front(entry);
        }
        drop(state);
        self.filled.notify_one();
    }

    /// Messages and bytes queued now.
    pub fn depth(&self) -> (usize, usize) {
        let state = self.lock();
        (state.entries.len(), state.bytes)
    }

    /// Refuses further entries and wakes everyone; queued entries can still be popped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.filled.notify_one();
        self.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckOutcome;
    use crate::topic::Topic;
    use bytes::Bytes;

    fn queue(max_messages: usize, overflow: Overflow) -> (Arc<OutboundQueue>, Arc<BridgeMetrics>) {
        let metrics = Arc::new(BridgeMetrics::new("test"));
        let limits = QueueLimits {
            max_messages,
            max_bytes: usize::MAX,
            overflow,
            ttl: None,
        };
        (
            Arc::new(OutboundQueue::new(limits, Arc::clone(&metrics))),
            metrics,
        )
    }

    fn entry(payload: &'static str, qos: QoS) -> Outbound {
        Outbound {
            message: Arc::new(Message::new(Topic::new("t").unwrap(), Bytes::from(payload))),
            rule: 0,
            qos,
            ack: None,
            received_at: Instant::now(),
        }
    }

    async fn payloads(queue: &OutboundQueue) -> Vec<Bytes> {
        let mut batch = Vec::new();
        queue.pop_batch(&mut batch, usize::MAX).await;
        batch
            .into_iter()
            .map(|e| e.message.payload.clone())
            .collect()
    }

    fn dropped_full(metrics: &BridgeMetrics) -> u64 {
        metrics.snapshot().dropped[DropReason::QueueFull as usize]
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest() {
        let (queue, metrics) = queue(2, Overflow::DropOldest);
        for payload in ["1", "2", "3"] {
            queue.push(entry(payload, QoS::AtMostOnce)).await;
        }
        assert_eq!(payloads(&queue).await, ["2", "3"]);
        assert_eq!(dropped_full(&metrics), 1);
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_oldest() {
        let (queue, metrics) = queue(2, Overflow::DropNewest);
        for payload in ["1", "2", "3"] {
            queue.push(entry(payload, QoS::AtMostOnce)).await;
        }
        assert_eq!(payloads(&queue).await, ["1", "2"]);
        assert_eq!(dropped_full(&metrics), 1);
    }

    #[tokio::test]
    async fn block_and_qos1_wait_for_room() {
        for (overflow, qos) in [
            (Overflow::Block, QoS::AtMostOnce),
            (Overflow::DropOldest, QoS::AtLeastOnce),
        ] {
            let (queue, metrics) = queue(1, overflow);
            queue.push(entry("1", qos)).await;
            let producer = {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move { queue.push(entry("2", qos)).await })
            };
            tokio::task::yield_now().await;
            assert!(!producer.is_finished(), "{overflow:?} {qos:?} must wait");
            assert_eq!(payloads(&queue).await, ["1"]);
            tokio::time::timeout(Duration::from_secs(5), producer)
                .await
                .expect("producer resumes once there is room")
                .unwrap();
            assert_eq!(payloads(&queue).await, ["2"]);
            assert_eq!(dropped_full(&metrics), 0);
        }
    }

    #[tokio::test]
    async fn drop_oldest_never_drops_qos1() {
        let (queue, _) = queue(1, Overflow::DropOldest);
        queue.push(entry("kept", QoS::AtLeastOnce)).await;
        queue.push(entry("dropped", QoS::AtMostOnce)).await;
        assert_eq!(payloads(&queue).await, ["kept"]);
    }

    #[tokio::test]
    async fn expired_entries_are_dropped_and_confirmed() {
        let metrics = Arc::new(BridgeMetrics::new("test"));
        let limits = QueueLimits {
            max_messages: 10,
            max_bytes: usize::MAX,
            overflow: Overflow::DropOldest,
            ttl: Some(Duration::from_millis(1)),
        };
        let queue = OutboundQueue::new(limits, Arc::clone(&metrics));
        let (ack, receiver) = Ack::new();
        let mut stale = entry("old", QoS::AtLeastOnce);
        stale.received_at = Instant::now() - Duration::from_secs(1);
        stale.ack = Some(ack);
        queue.push(stale).await;
        queue.push(entry("fresh", QoS::AtMostOnce)).await;
        assert_eq!(payloads(&queue).await, ["fresh"]);
        assert_eq!(receiver.await, AckOutcome::Delivered);
        assert_eq!(metrics.snapshot().dropped[DropReason::Expired as usize], 1);
    }

    #[tokio::test]
    async fn closing_drops_new_entries_unconfirmed() {
        let (queue, _) = queue(1, Overflow::DropOldest);
        queue.close();
        let (ack, receiver) = Ack::new();
        let mut late = entry("late", QoS::AtLeastOnce);
        late.ack = Some(ack);
        queue.push(late).await;
        assert_eq!(receiver.await, AckOutcome::NotDelivered);
        let mut batch = Vec::new();
        assert!(!queue.pop_batch(&mut batch, 10).await);
    }
}
