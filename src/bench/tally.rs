//! The receivers' accounting: which sequence numbers arrived at each receiver, how often,
//! in what order, and how late against their scheduled send time. A run has one receiver,
//! or many in fan-out (`--subscribers N`), each of which should get every message.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::probe::{Clock, Probe};
use super::BenchError;

/// Highest latency the histogram resolves, in nanoseconds (60 s); longer ones count as
/// 60 s. Three significant digits keep the histogram near 200 KiB.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// What one receiver has seen.
#[derive(Debug, Clone, Default)]
struct Receiver {
    /// One bit per sequence number seen.
    seen: Vec<u64>,
    /// The highest sequence number seen.
    highest: Option<u64>,
}

/// Counts for one run, filled in as messages arrive.
#[derive(Debug, Clone)]
pub struct Tally {
    /// The run whose messages count; others are `foreign`.
    clock: Clock,
    /// Each receiver's own record, by index.
    receivers: Vec<Receiver>,
    /// Distinct sequence numbers received, summed over the receivers (deliveries).
    pub received: u64,
    /// Arrivals of a sequence number already seen.
    pub duplicated: u64,
    /// Arrivals of a sequence number lower than one seen before.
    pub reordered: u64,
    /// Messages without a probe, or with another run's.
    pub foreign: u64,
    /// Latency from the scheduled send time, in nanoseconds (first arrivals only).
    pub latency: Histogram<u64>,
}

impl Tally {
    /// An empty tally for the run of `clock` and `receivers` receivers (at least one).
    pub fn new(clock: Clock, receivers: usize) -> Result<Tally, BenchError> {
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS)
            .map_err(|e| BenchError::Usage(format!("latency histogram: {e}")))?;
        Ok(Tally {
            clock,
            receivers: vec![Receiver::default(); receivers.max(1)],
            received: 0,
            duplicated: 0,
            reordered: 0,
            foreign: 0,
            latency,
        })
    }

    /// How many receivers the run has.
    pub fn receivers(&self) -> usize {
        self.receivers.len()
    }

    /// Accounts for one message that arrived at receiver `index` at `at`.
    pub fn record(&mut self, index: usize, bytes: &[u8], at: Instant) {
        let Some(probe) = Probe::find(bytes).filter(|probe| probe.run == self.clock.run) else {
            self.foreign += 1;
            return;
        };
        let Some(receiver) = self.receivers.get_mut(index) else {
            self.foreign += 1;
            return;
        };
        if receiver.highest.is_some_and(|highest| probe.seq < highest) {
            self.reordered += 1;
        }
        receiver.highest = receiver.highest.max(Some(probe.seq));
        let (word, bit) = ((probe.seq / 64) as usize, probe.seq % 64);
        if word >= receiver.seen.len() {
            receiver.seen.resize(word + 1, 0);
        }
        if receiver.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        receiver.seen[word] |= 1 << bit;
        self.received += 1;
        let latency = at.saturating_duration_since(self.clock.instant(probe.scheduled));
        self.latency
            .saturating_record(latency.as_nanos().min(u128::from(MAX_LATENCY_NS)) as u64);
    }
}

/// A [`Tally`] shared between the receiving tasks or threads and the run that reads it;
/// each handle records for one receiver (the first, unless [`SharedTally::receiver`]).
#[derive(Debug, Clone)]
pub struct SharedTally {
    /// The counts.
    tally: Arc<Mutex<Tally>>,
    /// The receiver this handle records for.
    index: usize,
}

impl SharedTally {
    /// An empty shared tally for the run of `clock` and `receivers` receivers.
    pub fn new(clock: Clock, receivers: usize) -> Result<SharedTally, BenchError> {
        Ok(SharedTally {
            tally: Arc::new(Mutex::new(Tally::new(clock, receivers)?)),
            index: 0,
        })
    }

    /// A handle on the same counts that records for receiver `index`.
    pub fn receiver(&self, index: usize) -> SharedTally {
        SharedTally {
            tally: Arc::clone(&self.tally),
            index,
        }
    }

    /// Records one message, stamped now.
    pub fn record(&self, bytes: &[u8]) {
        let at = Instant::now();
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(self.index, bytes, at);
    }

    /// Deliveries received so far (distinct messages, summed over the receivers).
    pub fn received(&self) -> u64 {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
    }

    /// A copy of the counts as they are now.
    pub fn snapshot(&self) -> Tally {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn payload(clock: &Clock, seq: u64) -> Vec<u8> {
        Probe {
            run: clock.run,
            seq,
            scheduled: seq * 1_000,
        }
        .encode(100)
    }

    #[test]
    fn counts_duplicates_reordering_and_foreign_messages() {
        let clock = Clock::new();
        let mut tally = Tally::new(clock, 1).expect("histogram");
        let at = clock.base + Duration::from_millis(1);
        for seq in [0, 2, 1, 2, 3] {
            tally.record(0, &payload(&clock, seq), at);
        }
        tally.record(0, b"hello", at);
        let other = Clock {
            run: clock.run.wrapping_add(1),
            ..clock
        };
        tally.record(0, &payload(&other, 4), at);
        assert_eq!(tally.received, 4);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.reordered, 1);
        assert_eq!(tally.foreign, 2);
        assert_eq!(tally.latency.len(), 4);
        // Within the histogram's resolution (three significant digits) of 1 ms.
        assert!(tally.latency.max() < 1_002_000);
    }

    #[test]
    fn counts_each_receiver_of_a_fan_out_on_its_own() {
        let clock = Clock::new();
        let mut tally = Tally::new(clock, 3).expect("histogram");
        let at = clock.base + Duration::from_millis(1);
        for receiver in 0..3 {
            for seq in [0, 1] {
                tally.record(receiver, &payload(&clock, seq), at);
            }
        }
        // The same message at another receiver is a delivery, not a duplicate; again at
        // the same receiver it is one; out of range, it belongs to nobody.
        tally.record(2, &payload(&clock, 1), at);
        tally.record(3, &payload(&clock, 0), at);
        assert_eq!(tally.receivers(), 3);
        assert_eq!(tally.received, 6);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.reordered, 0);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.latency.len(), 6);
    }
}
