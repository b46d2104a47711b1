//! The benchmark payload: `"SYB1 <run> <seq> <scheduled>....."`, a JSON string, so that it
//! passes every hub format unchanged (raw, the JSON envelope of the firehose, fedmsg,
//! which requires JSON). The three fields are fixed-width hex: the run id (to ignore
//! messages of an earlier run), the sequence number, and the scheduled send time in
//! nanoseconds after the run's clock base. Dots pad it to the requested size.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Marks the start of the probe fields, wherever an envelope puts the payload.
const MAGIC: &[u8] = b"SYB1 ";
/// Width of each hex field.
const FIELD: usize = 16;
/// `"` + magic + three fields with a space between them + `"`.
pub const MIN_SIZE: usize = 1 + MAGIC.len() + 3 * FIELD + 2 + 1;

/// One run's time base and identity, shared by sender and receiver (same process).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Scheduled times are nanoseconds after this instant.
    pub base: Instant,
    /// Tells this run's messages from stragglers of an earlier one.
    pub run: u64,
}

impl Clock {
    /// A new clock whose run id comes from the wall clock and the process id.
    pub fn new() -> Clock {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            base: Instant::now(),
            run: nanos ^ (u64::from(std::process::id()) << 32),
        }
    }

    /// Nanoseconds from the base to `at` (0 for instants before it).
    pub fn offset(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// The instant `offset` nanoseconds after the base.
    pub fn instant(&self, offset: u64) -> Instant {
        self.base + Duration::from_nanos(offset)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The run that sent it.
    pub run: u64,
    /// Its position in the schedule, from 0.
    pub seq: u64,
    /// When it was due to be sent, in nanoseconds after the run's clock base.
    pub scheduled: u64,
}

impl Probe {
    /// The payload for this probe, padded with dots to `size` bytes (never shorter than
    /// [`MIN_SIZE`]).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut payload = Vec::with_capacity(size.max(MIN_SIZE));
        payload.push(b'"');
        payload.extend_from_slice(MAGIC);
        let fields = format!(
            "{:016x} {:016x} {:016x}",
            self.run, self.seq, self.scheduled
        );
        payload.extend_from_slice(fields.as_bytes());
        payload.resize(size.max(MIN_SIZE) - 1, b'.');
        payload.push(b'"');
        payload
    }

    /// Finds the probe in `bytes` (a payload, or an envelope that contains it).
    pub fn find(bytes: &[u8]) -> Option<Probe> {
        let start = bytes
            .windows(MAGIC.len())
            .position(|window| window == MAGIC)?
            + MAGIC.len();
        let field = |i: usize| {
            let from = start + i * (FIELD + 1);
            let text = std::str::from_utf8(bytes.get(from..from + FIELD)?).ok()?;
            u64::from_str_radix(text, 16).ok()
        };
        Some(Probe {
            run: field(0)?,
            seq: field(1)?,
            scheduled: field(2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_size_and_inside_envelopes() {
        let probe = Probe {
            run: 0xfeed,
            seq: 42,
            scheduled: 1_000_000_007,
        };
        for size in [0, MIN_SIZE, 100, 1024] {
            let payload = probe.encode(size);
            assert_eq!(payload.len(), size.max(MIN_SIZE));
            assert_eq!(Probe::find(&payload), Some(probe));
            let json: serde_json::Value = serde_json::from_slice(&payload).expect("a JSON string");
            assert!(json.is_string());
        }
        let envelope = format!(
            r#"{{"topic":"bench/x","payload":{}}}"#,
            String::from_utf8(probe.encode(100)).expect("ASCII")
        );
        assert_eq!(Probe::find(envelope.as_bytes()), Some(probe));
        assert_eq!(Probe::find(b"SYB1 not hex"), None);
    }
}
