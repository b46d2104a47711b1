//! A destination's disk spool as its queue sees it: the store the hub provides, the
//! journal of records waiting to be written or deleted, and the thread that writes them.
//!
//! Every record has a sequence number, in queue order. The queue hands the journal a
//! write for each QoS 1 entry as it arrives (the write-ahead copy) and for every entry
//! that does not fit in memory (the spill); a deletion when a destination is done with
//! a record. The writer thread commits whatever has gathered in one durable transaction
//! (group commit), then confirms the sources' shares of what it wrote: a source is
//! acknowledged once the message is on disk, as DESIGN.md promises ("confirmed or
//! spooled"). If the commit fails, those shares are dropped unconfirmed and the sources
//! deliver again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use thiserror::Error;
use tokio::sync::Notify;

use crate::ack::{Ack, Receipt, Settle};
use crate::message::{now_ms, Message, QoS};
use crate::queue::Outbound;
use crate::record;
use crate::telemetry::BridgeMetrics;

/// A failure of the spool's storage.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct SpoolError(pub String);

/// What a commit removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Records that existed and were deleted.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Durable storage of records keyed by sequence number, provided by the hub.
pub trait SpoolStore: Send + Sync + 'static {
    /// Inserts `records` and removes `removed` in one durable transaction.
    fn commit(&self, records: &[(u64, &[u8])], removed: &[u64]) -> Result<Removed, SpoolError>;

    /// Appends the records numbered `first..=last` that exist to `out`, in order.
    fn read(&self, first: u64, last: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), SpoolError>;
}

/// How much of a spooled queue is kept in memory; the rest waits on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolWindow {
    /// Most entries in memory.
    pub messages: usize,
    /// Most message bytes in memory (also the most bytes waiting for the writer).
    pub bytes: usize,
}

/// One record found in a spool when the hub opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredEntry {
    /// Its sequence number.
    pub seq: u64,
    /// The message's size as counted against queue limits.
    pub size: usize,
    /// The QoS for the destination.
    pub qos: QoS,
}

/// What a queue needs to use a spool.
pub struct SpoolSetup {
    /// The storage.
    pub store: Arc<dyn SpoolStore>,
    /// The memory window.
    pub window: SpoolWindow,
    /// The records already in the store, in sequence order (replayed first).
    pub recovered: Vec<RecoveredEntry>,
    /// The bytes of those records on disk.
    pub stored_bytes: u64,
}

/// A record to write.
struct Write {
    seq: u64,
    message: Arc<Message>,
    rule: usize,
    qos: QoS,
    enqueued_ms: u64,
    /// The source's share, confirmed once the record is durable.
    source: Option<Ack>,
}

/// Work waiting for the writer.
#[derive(Default)]
struct Journal {
    writes: Vec<Write>,
    /// Message bytes in `writes`.
    write_bytes: usize,
    deletes: Vec<u64>,
    /// Finish what is queued, then end.
    stopping: bool,
}

/// What the queue, the receipts and the writer share.
struct Shared {
    store: Arc<dyn SpoolStore>,
    journal: Mutex<Journal>,
    /// Wakes the writer.
    wake: Condvar,
    /// Every write numbered up to this has been attempted (records readable if it worked).
    written_through: AtomicU64,
    stored_records: AtomicU64,
    stored_bytes: AtomicU64,
    /// The queue's consumer waits on this for records to refill from.
    filled: Arc<Notify>,
    /// The queue's producers wait on this for the writer to catch up.
    drained: Arc<Notify>,
    metrics: Arc<BridgeMetrics>,
}

impl Shared {
    fn journal(&self) -> MutexGuard<'_, Journal> {
        // Every critical section leaves the journal consistent.
        self.journal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Settle for Shared {
    fn settle(&self, seq: u64) {
        self.journal().deletes.push(seq);
        self.wake.notify_one();
    }
}

/// A queue's spool: the journal and its writer thread.
pub(crate) struct Spool {
    shared: Arc<Shared>,
    /// The memory window.
    pub(crate) window: SpoolWindow,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Spool {
    /// Starts the writer thread of bridge `metrics.bridge()`'s spool.
    pub(crate) fn start(
        setup: &SpoolSetup,
        metrics: Arc<BridgeMetrics>,
        filled: Arc<Notify>,
        drained: Arc<Notify>,
    ) -> std::io::Result<Spool> {
        let shared = Arc::new(Shared {
            store: Arc::clone(&setup.store),
            journal: Mutex::new(Journal::default()),
            wake: Condvar::new(),
            written_through: AtomicU64::new(setup.recovered.last().map_or(0, |e| e.seq)),
            stored_records: AtomicU64::new(setup.recovered.len() as u64),
            stored_bytes: AtomicU64::new(setup.stored_bytes),
            filled,
            drained,
            metrics,
        });
        let writing = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name(format!("spool-{}", shared.metrics.bridge()))
            .spawn(move || write_loop(&writing))?;
        Ok(Spool {
            shared,
            window: setup.window,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues the record of `entry` as number `seq`; `source` is confirmed once it is durable.
    pub(crate) fn write(&self, seq: u64, entry: &Outbound, source: Option<Ack>) {
        let waited = Instant::now().saturating_duration_since(entry.received_at);
        let write = Write {
            seq,
            message: Arc::clone(&entry.message),
            rule: entry.rule,
            qos: entry.qos,
            enqueued_ms: now_ms().saturating_sub(waited.as_millis() as u64),
            source,
        };
        let mut journal = self.shared.journal();
        journal.write_bytes += write.message.size();
        journal.writes.push(write);
        drop(journal);
        self.shared.wake.notify_one();
    }

    /// Deletes record `seq` (dropped or lost).
    pub(crate) fn delete(&self, seq: u64) {
        self.shared.settle(seq);
    }

    /// The receipt an entry numbered `seq` carries; `written` if it has a record.
    pub(crate) fn receipt(&self, seq: u64, written: bool) -> Ack {
        Ack::spooled(Receipt {
            journal: Arc::clone(&self.shared) as Arc<dyn Settle>,
            seq,
            written,
        })
    }

    /// Whether the writer is so far behind that producers should wait.
    pub(crate) fn backlogged(&self) -> bool {
        self.shared.journal().write_bytes >= self.window.bytes.max(1)
    }

    /// Every record numbered up to this has been written (or failed to be).
    pub(crate) fn written_through(&self) -> u64 {
        self.shared.written_through.load(Ordering::Acquire)
    }

    /// Reads records `first..=last`.
    pub(crate) fn read(&self, first: u64, last: u64) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut records = Vec::new();
        self.shared.store.read(first, last, &mut records)?;
        Ok(records)
    }

    /// Records and bytes in the spool now.
    pub(crate) fn depth(&self) -> (u64, u64) {
        (
            self.shared.stored_records.load(Ordering::Relaxed),
            self.shared.stored_bytes.load(Ordering::Relaxed),
        )
    }

    /// Lets the writer finish what is queued and waits for it to end.
    pub(crate) fn finish(&self) {
        self.shared.journal().stopping = true;
        self.shared.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::error!(
                    bridge = %self.shared.metrics.bridge(),
                    "The spool writer panicked; the last records may not be on disk."
                );
            }
        }
    }
}

impl Drop for Spool {
    /// A queue dropped without [`crate::queue::OutboundQueue::persist`] still lets its
    /// writer finish, so the file is closed (and unlocked) when the queue is gone.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer thread: commits the journal in batches until told to stop.
fn write_loop(shared: &Shared) {
    let mut buffer = Vec::new();
    let mut spans = Vec::new();
    let mut failing = false;
    loop {
        let (writes, deletes) = {
            let mut journal = shared.journal();
            while journal.writes.is_empty() && journal.deletes.is_empty() {
                if journal.stopping {
                    return;
                }
                journal = shared
                    .wake
                    .wait(journal)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            journal.write_bytes = 0;
            (
                std::mem::take(&mut journal.writes),
                std::mem::take(&mut journal.deletes),
            )
        };
        buffer.clear();
        spans.clear();
        for write in &writes {
            let start = buffer.len();
            let meta = record::RecordMeta {
                seq: write.seq,
                rule: write.rule,
                qos: write.qos,
                enqueued_ms: write.enqueued_ms,
            };
            record::encode(&write.message, meta, &mut buffer);
            spans.push((write.seq, start..buffer.len()));
        }
        let records: Vec<(u64, &[u8])> = spans
            .iter()
            .map(|(seq, span)| (*seq, &buffer[span.clone()]))
            .collect();
        let outcome = shared.store.commit(&records, &deletes);
        if let Some(last) = spans.last() {
            shared.written_through.store(last.0, Ordering::Release);
        }
        match outcome {
            Ok(removed) => {
                let stored = &shared.stored_records;
                stored.fetch_add(writes.len() as u64, Ordering::Relaxed);
                stored.fetch_sub(removed.records, Ordering::Relaxed);
                let bytes = &shared.stored_bytes;
                bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                bytes.fetch_sub(removed.bytes, Ordering::Relaxed);
                if failing {
                    failing = false;
                    tracing::info!(bridge = %shared.metrics.bridge(), "The spool is writable again.");
                }
                for source in writes.into_iter().filter_map(|write| write.source) {
                    source.confirm();
                }
            }
            Err(error) => {
                let reason = format!("spool: cannot write {} record(s): {error}", writes.len());
                shared.metrics.record_error(&reason);
                if !failing {
                    failing = true;
                    tracing::error!(
                        bridge = %shared.metrics.bridge(),
                        "{reason}; their sources are not acknowledged and will send them again."
                    );
                }
                // Dropping the writes drops the sources' shares unconfirmed.
                drop(writes);
            }
        }
        shared.filled.notify_one();
        shared.drained.notify_waiters();
    }
}
