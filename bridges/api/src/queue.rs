//! The bounded outbound queue every destination bridge has.
//!
//! The router pushes, the bridge pops in batches. Limits are `max_messages` and `max_bytes`.
//! When full, `overflow` decides for QoS 0 (`drop-oldest`, `drop-newest`, or `block`); QoS 1
//! always waits for space, which holds back the source (backpressure) instead of losing it.
//! Entries older than `ttl` are dropped when they reach the front.
//!
//! With a disk spool ([`OutboundQueue::with_spool`]) the limits bound the spool, and only a
//! window of the oldest entries is held in memory; newer ones wait on disk (spilled) and
//! are read back in order as the window empties. Every QoS 1 entry is also written ahead to
//! the spool, and its source's share is confirmed once the record is durable. Entries carry
//! a receipt for their record (see [`crate::ack`]), so a bridge that confirms what it
//! delivered also deletes it from disk, without knowing there is a spool.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::ack::Ack;
use crate::message::{now_ms, Message, QoS};
use crate::record;
use crate::spool::{Spool, SpoolSetup};
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

/// An entry that waits only on disk.
#[derive(Debug, Clone, Copy)]
struct Spilled {
    seq: u64,
    size: usize,
    qos: QoS,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Entries in memory, oldest first.
    entries: VecDeque<Outbound>,
    /// Their bytes.
    bytes: usize,
    /// With a spool: entries only on disk, all newer than `entries`, oldest first.
    tail: VecDeque<Spilled>,
    /// Their bytes.
    tail_bytes: usize,
    /// The spool number of the next entry.
    next_seq: u64,
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue of [`Outbound`] entries.
pub struct OutboundQueue {
    state: Mutex<QueueState>,
    /// Wakes the consumer when entries arrive (or spilled ones become readable).
    filled: Arc<Notify>,
    /// Wakes producers waiting for room (or for the spool writer to catch up).
    drained: Arc<Notify>,
    limits: QueueLimits,
    metrics: Arc<BridgeMetrics>,
    spool: Option<Spool>,
}

impl std::fmt::Debug for OutboundQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundQueue")
            .field("limits", &self.limits)
            .field("spooled", &self.spool.is_some())
            .finish()
    }
}

impl OutboundQueue {
    /// An empty queue whose drops are counted in `metrics`.
    pub fn new(limits: QueueLimits, metrics: Arc<BridgeMetrics>) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            filled: Arc::new(Notify::new()),
            drained: Arc::new(Notify::new()),
            limits,
            metrics,
            spool: None,
        }
    }

    /// A queue kept in a disk spool, starting with the records the spool already holds.
    /// Fails only if the writer thread cannot be started.
    pub fn with_spool(
        limits: QueueLimits,
        metrics: Arc<BridgeMetrics>,
        setup: SpoolSetup,
    ) -> std::io::Result<Self> {
        let mut queue = Self::new(limits, Arc::clone(&metrics));
        let spool = Spool::start(
            &setup,
            metrics,
            Arc::clone(&queue.filled),
            Arc::clone(&queue.drained),
        )?;
        let state = queue.state.get_mut().unwrap_or_else(|p| p.into_inner());
        state.tail = setup
            .recovered
            .iter()
            .map(|entry| Spilled {
                seq: entry.seq,
                size: entry.size,
                qos: entry.qos,
            })
            .collect();
        state.tail_bytes = setup.recovered.iter().map(|entry| entry.size).sum();
        state.next_seq = setup.recovered.last().map_or(1, |entry| entry.seq + 1);
        queue.spool = Some(spool);
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `size` more bytes fit within the limits (memory and disk together).
    fn fits(&self, state: &QueueState, size: usize) -> bool {
        let count = state.entries.len() + state.tail.len();
        count == 0
            || (count < self.limits.max_messages
                && state.bytes + state.tail_bytes + size <= self.limits.max_bytes)
    }

    /// Whether an entry of `size` bytes joins the memory window (always without a spool).
    fn fits_memory(&self, state: &QueueState, size: usize) -> bool {
        let Some(spool) = &self.spool else {
            return true;
        };
        state.tail.is_empty()
            && (state.entries.is_empty()
                || (state.entries.len() < spool.window.messages
                    && state.bytes + size <= spool.window.bytes))
    }

    /// Whether `entry` cannot be taken now because it needs the spool writer, which is behind.
    fn writer_behind(&self, state: &QueueState, entry: &Outbound, size: usize) -> bool {
        self.spool.as_ref().is_some_and(|spool| {
            (durable(entry) || !self.fits_memory(state, size)) && spool.backlogged()
        })
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
                let room = !self.writer_behind(&state, &entry, size);
                if room && self.fits(&state, size) {
                    self.admit(&mut state, entry, size);
                    drop(state);
                    self.filled.notify_one();
                    return;
                }
                if !waits {
                    if room
                        && self.limits.overflow == Overflow::DropOldest
                        && self.make_room(&mut state, size)
                    {
                        self.admit(&mut state, entry, size);
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

    /// Takes an entry that fits: into memory, or onto disk when spooled and the window is
    /// full; a durable entry is written ahead either way.
    fn admit(&self, state: &mut QueueState, mut entry: Outbound, size: usize) {
        let in_memory = self.fits_memory(state, size);
        if let Some(spool) = &self.spool {
            let seq = state.next_seq;
            state.next_seq += 1;
            let written = durable(&entry) || !in_memory;
            if written {
                let source = entry.ack.take();
                spool.write(seq, &entry, source);
            }
            if !in_memory {
                state.tail_bytes += size;
                state.tail.push_back(Spilled {
                    seq,
                    size,
                    qos: entry.qos,
                });
                return;
            }
            entry.ack = Some(spool.receipt(seq, written));
        }
        state.bytes += size;
        state.entries.push_back(entry);
    }

    /// Drops the oldest QoS 0 entries until `size` more bytes fit; false if it cannot.
    fn make_room(&self, state: &mut QueueState, size: usize) -> bool {
        while !self.fits(state, size) {
            if let Some(index) = state
                .entries
                .iter()
                .position(|entry| entry.qos == QoS::AtMostOnce)
            {
                if let Some(old) = state.entries.remove(index) {
                    state.bytes -= old.message.size();
                    // Settled on purpose: a spool record of it is deleted.
                    if let Some(ack) = old.ack {
                        ack.confirm();
                    }
                }
            } else if let (Some(spool), Some(index)) = (
                &self.spool,
                state.tail.iter().position(|e| e.qos == QoS::AtMostOnce),
            ) {
                if let Some(old) = state.tail.remove(index) {
                    state.tail_bytes -= old.size;
                    spool.delete(old.seq);
                }
            } else {
                return false;
            }
            self.metrics
                .dropped(DropReason::QueueFull, "the outbound queue is full");
        }
        true
    }

    /// Moves up to `max` entries into `batch`, waiting while the queue is empty. Expired
    /// entries are dropped on the way. Returns false once the queue is closed and empty.
    pub async fn pop_batch(&self, batch: &mut Vec<Outbound>, max: usize) -> bool {
        loop {
            let filled = self.filled.notified();
            let refill = {
                let mut state = self.lock();
                if !state.entries.is_empty() {
                    self.take_batch(&mut state, batch, max);
                    drop(state);
                    self.drained.notify_waiters();
                    if !batch.is_empty() {
                        return true;
                    }
                    continue;
                }
                if state.tail.is_empty() && state.closed {
                    return false;
                }
                self.refill_range(&state)
            };
            match refill {
                Some((first, last)) => self.refill(first, last),
                None => filled.await,
            }
        }
    }

    /// Moves up to `max` entries from memory into `batch`, dropping expired ones.
    fn take_batch(&self, state: &mut QueueState, batch: &mut Vec<Outbound>, max: usize) {
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
    }

    /// The numbers of the spilled entries to read into the empty memory window: those
    /// already written, up to the window's size. `None` when there are none yet.
    fn refill_range(&self, state: &QueueState) -> Option<(u64, u64)> {
        let spool = self.spool.as_ref()?;
        let written = spool.written_through();
        let first = state.tail.front().filter(|e| e.seq <= written)?.seq;
        let (mut last, mut count, mut bytes) = (first, 0, 0);
        for entry in &state.tail {
            let full = count >= spool.window.messages || bytes + entry.size > spool.window.bytes;
            if entry.seq > written || (count > 0 && full) {
                break;
            }
            (last, count, bytes) = (entry.seq, count + 1, bytes + entry.size);
        }
        Some((first, last))
    }

    /// Reads spilled entries `first..=last` back into memory. The read happens outside the
    /// lock; entries dropped for room meanwhile are skipped, and records that cannot be
    /// read are counted and reported.
    fn refill(&self, first: u64, last: u64) {
        let Some(spool) = &self.spool else {
            return;
        };
        let records: Vec<_> = spool
            .read(first, last)
            .unwrap_or_else(|error| {
                self.metrics.record_error(&format!(
                    "spool: cannot read records {first}..={last}: {error}"
                ));
                Vec::new()
            })
            .into_iter()
            .map(|(seq, bytes)| (seq, record::decode(&bytes)))
            .collect();
        let now = Instant::now();
        let wall = now_ms();
        let mut lost = 0u64;
        let mut state = self.lock();
        for (seq, read) in records {
            lost += self.discard_tail_before(&mut state, seq);
            if state.tail.front().is_none_or(|entry| entry.seq != seq) {
                continue; // Dropped for room while the record was read.
            }
            let Some(spilled) = state.tail.pop_front() else {
                continue;
            };
            state.tail_bytes -= spilled.size;
            match read {
                Ok(read) => {
                    let waited = Duration::from_millis(wall.saturating_sub(read.enqueued_ms));
                    state.bytes += read.message.size();
                    state.entries.push_back(Outbound {
                        message: Arc::new(read.message),
                        rule: read.rule,
                        qos: read.qos,
                        ack: Some(spool.receipt(seq, true)),
                        received_at: now.checked_sub(waited).unwrap_or(now),
                    });
                }
                Err(error) => {
                    lost += 1;
                    spool.delete(seq);
                    self.metrics
                        .record_error(&format!("spool: record {seq} is unreadable: {error}"));
                }
            }
        }
        lost += self.discard_tail_before(&mut state, last + 1);
        drop(state);
        for _ in 0..lost {
            self.metrics.dropped(
                DropReason::Invalid,
                "its spool record was missing or damaged",
            );
        }
    }

    /// Removes spilled entries numbered below `seq` (their records were not found).
    fn discard_tail_before(&self, state: &mut QueueState, seq: u64) -> u64 {
        let mut lost = 0;
        while let Some(entry) = state.tail.front().copied().filter(|entry| entry.seq < seq) {
            state.tail.pop_front();
            state.tail_bytes -= entry.size;
            if let Some(spool) = &self.spool {
                spool.delete(entry.seq);
            }
            lost += 1;
        }
        lost
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

    /// Messages and bytes queued now, in memory and spilled to disk.
    pub fn depth(&self) -> (usize, usize) {
        let state = self.lock();
        (
            state.entries.len() + state.tail.len(),
            state.bytes + state.tail_bytes,
        )
    }

    /// Records and bytes in the spool file (spilled entries, and the write-ahead copies of
    /// QoS 1 entries until delivered); `None` without a spool.
    pub fn spool_depth(&self) -> Option<(u64, u64)> {
        self.spool.as_ref().map(Spool::depth)
    }

    /// Refuses further entries and wakes everyone; queued entries can still be popped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.filled.notify_one();
        self.drained.notify_waiters();
    }

    /// After [`OutboundQueue::close`] and once the bridge has stopped: writes the entries
    /// still in memory that have no record yet to the spool, and waits (blocking) until
    /// the spool's writer has made everything durable. Does nothing without a spool.
    pub fn persist(&self) {
        let Some(spool) = &self.spool else {
            return;
        };
        let mut state = self.lock();
        let entries = std::mem::take(&mut state.entries);
        state.bytes = 0;
        drop(state);
        for entry in &entries {
            if let Some(receipt) = entry.ack.as_ref().and_then(Ack::receipt) {
                if !receipt.written {
                    spool.write(receipt.seq, entry, None);
                }
            }
        }
        spool.finish();
    }
}

/// Whether an entry must be on disk before its source is acknowledged.
fn durable(entry: &Outbound) -> bool {
    entry.qos == QoS::AtLeastOnce || entry.ack.is_some()
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
