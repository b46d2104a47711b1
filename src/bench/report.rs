//! What a run found, printed as a table or as JSON.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::schedule::SendStats;
use super::tally::Tally;

/// Latency percentiles from the scheduled send time, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One run at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where messages were sent.
    pub from: String,
    /// Where they were received.
    pub to: String,
    /// The scheduled rate, messages per second.
    pub rate: f64,
    /// The rate the sender kept, messages per second.
    pub send_rate: f64,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Payload bytes.
    pub size: usize,
    /// QoS asked for.
    pub qos: u8,
    /// Receiving connections, each of which should get every message.
    pub subscribers: usize,
    /// Messages sent.
    pub sent: u64,
    /// Distinct messages received, summed over the subscribers (deliveries).
    pub received: u64,
    /// Deliveries that never happened (within the drain time): sent x subscribers -
    /// received.
    pub lost: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Messages that arrived after one sent later.
    pub reordered: u64,
    /// Sends that failed after the publisher took them (nacked confirms, failed
    /// pipelines).
    pub failed: u64,
    /// Messages received that belong to no message of this run.
    pub foreign: u64,
    /// How far behind its schedule the sender fell at worst, in milliseconds.
    pub sender_lateness_ms: f64,
    /// Latency of the received messages.
    pub latency_us: Latency,
}

/// What a run measured, before it becomes a [`Report`].
pub struct Measured<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub rate: f64,
    pub size: usize,
    pub qos: u8,
    pub subscribers: usize,
    pub sent: SendStats,
    pub failed: u64,
    pub tally: Tally,
}

impl Report {
    /// Summarises a run.
    pub fn new(measured: Measured<'_>) -> Report {
        let Measured {
            from,
            to,
            rate,
            size,
            qos,
            subscribers,
            sent,
            failed,
            tally,
        } = measured;
        let histogram = &tally.latency;
        let micros = |nanos: u64| nanos as f64 / 1_000.0;
        let quantile = |q: f64| micros(histogram.value_at_quantile(q));
        let seconds = sent.elapsed.as_secs_f64();
        Report {
            from: from.to_owned(),
            to: to.to_owned(),
            rate,
            send_rate: if seconds > 0.0 {
                sent.sent as f64 / seconds
            } else {
                0.0
            },
            duration_s: seconds,
            size,
            qos,
            subscribers,
            sent: sent.sent,
            received: tally.received,
            lost: (sent.sent * subscribers as u64).saturating_sub(tally.received),
            duplicated: tally.duplicated,
            reordered: tally.reordered,
            failed,
            foreign: tally.foreign,
            sender_lateness_ms: sent.max_lateness.as_secs_f64() * 1_000.0,
            latency_us: Latency {
                p50: quantile(0.5),
                p90: quantile(0.9),
                p99: quantile(0.99),
                p999: quantile(0.999),
                max: micros(histogram.max()),
                mean: histogram.mean() / 1_000.0,
            },
        }
    }

    /// Whether the run lost nothing and kept p99 under `max_p99`.
    pub fn passes(&self, max_p99: Duration) -> bool {
        self.lost == 0 && self.failed == 0 && self.latency_us.p99 <= max_p99.as_secs_f64() * 1e6
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let latency = &self.latency_us;
        let ms = |micros: f64| micros / 1_000.0;
        writeln!(f, "{} -> {}", self.from, self.to)?;
        writeln!(
            f,
            "  rate {:.0}/s (sent at {:.0}/s, at worst {:.2} ms behind), {:.1} s, {} B, qos {}, \
             {} subscriber(s)",
            self.rate,
            self.send_rate,
            self.sender_lateness_ms,
            self.duration_s,
            self.size,
            self.qos,
            self.subscribers
        )?;
        writeln!(
            f,
            "  sent {}  received {}  lost {}  duplicated {}  reordered {}  failed {}",
            self.sent, self.received, self.lost, self.duplicated, self.reordered, self.failed
        )?;
        write!(
            f,
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(latency.p50),
            ms(latency.p90),
            ms(latency.p99),
            ms(latency.p999),
            ms(latency.max)
        )
    }
}

/// A sweep: every run, and the highest rate that passed.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The p99 bound a passing run stays under, in microseconds.
    pub max_p99_us: f64,
    /// The highest rate that lost nothing and met the bound (0 if none did).
    pub max_sustainable_rate: f64,
    /// The report of that run, if any.
    pub best: Option<Report>,
    /// Every run, in the order they ran.
    pub runs: Vec<Report>,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for run in &self.runs {
            let verdict =
                if run.lost == 0 && run.failed == 0 && run.latency_us.p99 <= self.max_p99_us {
                    "pass"
                } else {
                    "fail"
                };
            writeln!(
                f,
                "  {:>9.0}/s  {verdict}  lost {:>7}  p99 {:>9.3} ms",
                run.rate,
                run.lost,
                run.latency_us.p99 / 1_000.0
            )?;
        }
        write!(
            f,
            "max sustainable rate: {:.0}/s (no loss, p99 <= {:.3} ms)",
            self.max_sustainable_rate,
            self.max_p99_us / 1_000.0
        )
    }
}
