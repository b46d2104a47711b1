//! Counters every bridge keeps, read by the hub's `/metrics` and `/api/bridges`.
//!
//! Labels are fixed (bridge name, drop reason): never a topic or a client id.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::message::now_ms;

/// Why a message was dropped; the `reason` label of `switchyard_messages_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A QoS 0 message met a full queue under a drop policy.
    QueueFull,
    /// Older than the queue's `ttl`.
    Expired,
    /// It would have gone back where it came from, or it carries this hub's origin.
    Loop,
    /// It crossed more hubs than `hub.max_hops`.
    HopLimit,
    /// Its id was seen recently from the same source.
    Duplicate,
    /// Malformed for its protocol or format.
    Invalid,
    /// Larger than the bridge accepts.
    TooLarge,
    /// Refused by an access rule.
    Denied,
    /// The remote side could not route it anywhere (an AMQP exchange with no matching
    /// binding returned it).
    Unroutable,
    /// A consumer fell so far behind that messages were skipped for it.
    Lagged,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 10] = [
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::Loop,
        DropReason::HopLimit,
        DropReason::Duplicate,
        DropReason::Invalid,
        DropReason::TooLarge,
        DropReason::Denied,
        DropReason::Unroutable,
        DropReason::Lagged,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::Loop => "loop",
            DropReason::HopLimit => "hop_limit",
            DropReason::Duplicate => "duplicate",
            DropReason::Invalid => "invalid",
            DropReason::TooLarge => "too_large",
            DropReason::Denied => "denied",
            DropReason::Unroutable => "unroutable",
            DropReason::Lagged => "lagged",
        }
    }
}

/// Repeated reports of the same drop reason are logged at most this often per bridge.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// State and last error of a bridge, for `/api/bridges`.
#[derive(Debug, Clone, Default)]
pub struct BridgeStatus {
    /// Milliseconds since the epoch when `up` last changed.
    pub since_ms: u64,
    /// The most recent error, if any.
    pub last_error: Option<String>,
}

/// The counters of one bridge.
#[derive(Debug)]
pub struct BridgeMetrics {
    /// The bridge's name, for logs.
    bridge: Arc<str>,
    received: AtomicU64,
    sent: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Milliseconds since the epoch of the last log line per reason.
    last_drop_log_ms: [AtomicU64; DropReason::ALL.len()],
    up: AtomicBool,
    /// Tells watchers (the hub's `$SYS` state topics) when `up` changes.
    up_changes: watch::Sender<bool>,
    reconnects: AtomicU64,
    connections: AtomicU64,
    status: Mutex<BridgeStatus>,
}

/// A point-in-time copy of a bridge's counters.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Messages that entered the hub from this bridge.
    pub received: u64,
    /// Messages this bridge handed to its remote side.
    pub sent: u64,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub dropped: [u64; DropReason::ALL.len()],
    /// Whether the bridge is connected or listening.
    pub up: bool,
    /// Reconnections since start.
    pub reconnects: u64,
    /// Open client connections (server bridges).
    pub connections: u64,
    /// State change time and last error.
    pub status: BridgeStatus,
}

impl BridgeMetrics {
    /// Zeroed counters for bridge `bridge`, marked down.
    pub fn new(bridge: &str) -> Self {
        Self {
            bridge: Arc::from(bridge),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: Default::default(),
            last_drop_log_ms: Default::default(),
            up: AtomicBool::new(false),
            up_changes: watch::Sender::new(false),
            reconnects: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            status: Mutex::new(BridgeStatus {
                since_ms: now_ms(),
                last_error: None,
            }),
        }
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// `count` messages entered the hub from this bridge.
    pub fn received(&self, count: u64) {
        self.received.fetch_add(count, Ordering::Relaxed);
    }

    /// `count` messages left through this bridge.
    pub fn sent(&self, count: u64) {
        self.sent.fetch_add(count, Ordering::Relaxed);
    }

    /// A message was dropped; logged at most once per [`DROP_LOG_INTERVAL`] per reason.
    pub fn dropped(&self, reason: DropReason, detail: impl std::fmt::Display) {
        let index = reason as usize;
        self.dropped[index].fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let last = self.last_drop_log_ms[index].load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= DROP_LOG_INTERVAL.as_millis() as u64;
        if due
            && self.last_drop_log_ms[index]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                bridge = %self.bridge,
                reason = reason.as_str(),
                "Dropped a message: {detail} (further drops for this reason are counted, \
                 and logged at most every {}s).",
                DROP_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// The bridge came up or went down; logs the change once.
    pub fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.lock_status().since_ms = now_ms();
            self.up_changes.send_replace(up);
            if up {
                tracing::info!(bridge = %self.bridge, "Bridge is up.");
            } else {
                tracing::warn!(bridge = %self.bridge, "Bridge is down.");
            }
        }
    }

    /// A receiver that sees every change of the bridge's up state.
    pub fn watch_up(&self) -> watch::Receiver<bool> {
        self.up_changes.subscribe()
    }

    /// Whether the bridge is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The bridge connected again after losing its connection.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connected to a server bridge.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A client of a server bridge went away.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open client connections now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Records the latest error for `/api/bridges`.
    pub fn record_error(&self, error: &str) {
        self.lock_status().last_error = Some(error.to_owned());
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: std::array::from_fn(|index| self.dropped[index].load(Ordering::Relaxed)),
            up: self.is_up(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connections: self.connections(),
            status: self.lock_status().clone(),
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, BridgeStatus> {
        // A panic while holding this lock cannot leave the status inconsistent.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Upper bounds (seconds) of the forward latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// `switchyard_forward_latency_seconds`: time from entering the hub to leaving a bridge.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Counts per bucket of [`LATENCY_BUCKETS`], plus one for +Inf (not cumulative).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one forwarded message.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is +Inf, i.e. the total) and the sum in seconds.
    pub fn cumulative(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let counts = self
            .buckets
            .iter()
            .map(|bucket| {
                total += bucket.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (counts, sum)
    }
}
