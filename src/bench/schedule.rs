//! The open-loop sender: message `i` is due at `start + i / rate`, whatever happens to the
//! messages before it. It runs on a thread of its own so that waits are as precise as
//! the OS timer (tokio's timer wheel rounds to whole milliseconds, which at 10,000 msg/s
//! would bunch ten messages together and add that to every latency). When it falls
//! behind, it sends everything that is due in one batch and never skips a message; each
//! payload carries its scheduled time, so lateness is charged to the path as latency.

use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::endpoints::Publisher;
use super::probe::{Clock, Probe};
use super::BenchError;

/// Most messages handed to the publisher per wake-up; keeps a very late schedule from
/// building one huge batch.
const MAX_BATCH: u64 = 1024;

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Messages per second.
    pub rate: f64,
    /// How long the schedule lasts.
    pub duration: Duration,
    /// Payload size in bytes.
    pub size: usize,
}

impl Schedule {
    /// How many messages the schedule holds.
    pub fn total(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round() as u64
    }

    /// When message `seq` is due, after the schedule's start.
    fn due(&self, seq: u64) -> Duration {
        Duration::from_secs_f64(seq as f64 / self.rate)
    }
}

/// What the sender did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendStats {
    /// Messages the publisher took.
    pub sent: u64,
    /// From the first due time to the last send returning.
    pub elapsed: Duration,
    /// The most any batch started behind its first message's due time.
    pub max_lateness: Duration,
}

/// Sends the whole schedule through `publisher`; blocks the calling thread (which must
/// not be a runtime worker: publisher calls run with `runtime.block_on`).
pub fn send(
    runtime: &Handle,
    publisher: &mut Publisher,
    schedule: &Schedule,
    clock: &Clock,
) -> Result<SendStats, BenchError> {
    let total = schedule.total();
    let start = Instant::now();
    let mut stats = SendStats::default();
    let mut batch = Vec::new();
    while stats.sent < total {
        let first_due = start + schedule.due(stats.sent);
        let now = Instant::now();
        if first_due > now {
            std::thread::sleep(first_due - now);
            continue;
        }
        stats.max_lateness = stats.max_lateness.max(now - first_due);
        let mut seq = stats.sent;
        while seq < total && seq - stats.sent < MAX_BATCH {
            let due = start + schedule.due(seq);
            if due > now {
                break;
            }
            let probe = Probe {
                run: clock.run,
                seq,
                scheduled: clock.offset(due),
            };
            batch.push(probe.encode(schedule.size));
            seq += 1;
        }
        runtime.block_on(async {
            for payload in batch.drain(..) {
                publisher.send(payload).await?;
            }
            Ok::<(), BenchError>(())
        })?;
        stats.sent = seq;
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}
