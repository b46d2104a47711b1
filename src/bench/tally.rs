//! The receiver's accounting: which sequence numbers arrived, how often, in what order,
//! and how late against their scheduled send time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::probe::{Clock, Probe};
use super::BenchError;

/// Highest latency the histogram resolves, in nanoseconds (60 s); longer ones count as
/// 60 s. Three significant digits keep the histogram near 200 KiB.
const MAX_LATENCY_NS: u64 = 60_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// Counts for one run, filled in as messages arrive.
#[derive(Debug, Clone)]
pub struct Tally {
    /// The run whose messages count; others are `foreign`.
    clock: Clock,
    /// One bit per sequence number seen.
    seen: Vec<u64>,
    /// Distinct sequence numbers received.
    pub received: u64,
    /// Arrivals of a sequence number already seen.
    pub duplicated: u64,
    /// Arrivals of a sequence number lower than one seen before.
    pub reordered: u64,
    /// Messages without a probe, or with another run's.
    pub foreign: u64,
    /// The highest sequence number seen.
    highest: Option<u64>,
    /// Latency from the scheduled send time, in nanoseconds (first arrivals only).
    pub latency: Histogram<u64>,
}

impl Tally {
    /// An empty tally for the run of `clock`.
    pub fn new(clock: Clock) -> Result<Tally, BenchError> {
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS)
            .map_err(|e| BenchError::Usage(format!("latency histogram: {e}")))?;
        Ok(Tally {
            clock,
            seen: Vec::new(),
            received: 0,
            duplicated: 0,
            reordered: 0,
            foreign: 0,
            highest: None,
            latency,
        })
    }

    /// Accounts for one message that arrived at `at`.
    pub fn record(&mut self, bytes: &[u8], at: Instant) {
        let Some(probe) = Probe::find(bytes).filter(|probe| probe.run == self.clock.run) else {
            self.foreign += 1;
            return;
        };
        if self.highest.is_some_and(|highest| probe.seq < highest) {
            self.reordered += 1;
        }
        self.highest = self.highest.max(Some(probe.seq));
        let (word, bit) = ((probe.seq / 64) as usize, probe.seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.received += 1;
        let latency = at.saturating_duration_since(self.clock.instant(probe.scheduled));
        self.latency
            .saturating_record(latency.as_nanos().min(u128::from(MAX_LATENCY_NS)) as u64);
    }
}

/// A [`Tally`] shared between the receiving task or thread and the run that reads it.
#[derive(Debug, Clone)]
pub struct SharedTally(Arc<Mutex<Tally>>);

impl SharedTally {
    /// An empty shared tally for the run of `clock`.
    pub fn new(clock: Clock) -> Result<SharedTally, BenchError> {
        Ok(SharedTally(Arc::new(Mutex::new(Tally::new(clock)?))))
    }

    /// Records one message, stamped now.
    pub fn record(&self, bytes: &[u8]) {
        let at = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(bytes, at);
    }

    /// Distinct messages received so far.
    pub fn received(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
    }

    /// A copy of the counts as they are now.
    pub fn snapshot(&self) -> Tally {
        self.0
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
        let mut tally = Tally::new(clock).expect("histogram");
        let at = clock.base + Duration::from_millis(1);
        for seq in [0, 2, 1, 2, 3] {
            tally.record(&payload(&clock, seq), at);
        }
        tally.record(b"hello", at);
        let other = Clock {
            run: clock.run.wrapping_add(1),
            ..clock
        };
        tally.record(&payload(&other, 4), at);
        assert_eq!(tally.received, 4);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.reordered, 1);
        assert_eq!(tally.foreign, 2);
        assert_eq!(tally.latency.len(), 4);
        // Within the histogram's resolution (three significant digits) of 1 ms.
        assert!(tally.latency.max() < 1_002_000);
    }
}
