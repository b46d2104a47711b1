//! One measured run at one rate: subscribe, connect the publisher, let subscriptions
//! settle, send the schedule from the sender thread, wait for stragglers, report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::endpoint::Endpoint;
use super::endpoints::{ClientName, Publisher, Subscription};
use super::probe::{Clock, MIN_SIZE};
use super::report::{Measured, Report};
use super::schedule::{self, Schedule};
use super::tally::SharedTally;
use super::{BenchArgs, BenchError};

/// How often the drain looks whether everything arrived.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Both endpoints, checked for direction, and the timing of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where messages are sent.
    pub from: Endpoint,
    /// Where they are received.
    pub to: Endpoint,
    /// QoS of both sides.
    pub qos: u8,
    /// Payload size.
    pub size: usize,
    /// How long each run sends.
    pub duration: Duration,
    /// Pause between subscribing and sending.
    pub settle: Duration,
    /// Most time to wait for stragglers.
    pub drain: Duration,
    /// Receiving connections, each of which should get every message.
    pub subscribers: usize,
}

impl Plan {
    /// Parses and checks the command line (cheap; connects to nothing).
    pub fn new(args: &BenchArgs) -> Result<Plan, BenchError> {
        let from = args
            .from
            .as_deref()
            .ok_or_else(|| BenchError::Usage("--from is needed (except with --idle)".into()))?;
        let from = Endpoint::parse(from)?;
        let to = Endpoint::parse(&args.to)?;
        if !from.can_send() {
            return Err(BenchError::Url {
                url: from.url,
                reason: "cannot send through this endpoint (--from needs mqtt, redis, amqp, \
                         zmq+pub or zmq+push)"
                    .into(),
            });
        }
        if !to.can_receive() {
            return Err(BenchError::Url {
                url: to.url,
                reason: "cannot receive through this endpoint (--to needs mqtt, ws, redis, \
                         amqp, zmq+sub or zmq+pull)"
                    .into(),
            });
        }
        if !(args.rate.is_finite() && args.rate > 0.0) {
            return Err(BenchError::Usage(format!(
                "--rate {} must be above 0",
                args.rate
            )));
        }
        if args.duration.is_zero() {
            return Err(BenchError::Usage("--duration must be above 0".into()));
        }
        if args.size < MIN_SIZE {
            eprintln!(
                "switchyard bench: --size {} is below the probe header; sending {MIN_SIZE} B",
                args.size
            );
        }
        Ok(Plan {
            from,
            to,
            qos: args.qos,
            size: args.size.max(MIN_SIZE),
            duration: args.duration,
            settle: args.settle,
            drain: args.drain,
            subscribers: args.subscribers as usize,
        })
    }

    /// Runs once at `rate` messages per second.
    pub async fn run(&self, rate: f64) -> Result<Report, BenchError> {
        let clock = Clock::new();
        let name = ClientName(format!("switchyard-bench-{:x}", clock.run & 0xff_ffff));
        let tally = SharedTally::new(clock, self.subscribers)?;
        let subscription =
            Subscription::start_many(&self.to, self.qos, &name, tally.clone(), self.subscribers)
                .await?;
        let failures = Arc::new(AtomicU64::new(0));
        let publisher =
            Publisher::connect(&self.from, self.qos, &name, Arc::clone(&failures)).await?;
        tokio::time::sleep(self.settle).await;
        let schedule = Schedule {
            rate,
            duration: self.duration,
            size: self.size,
        };
        let (publisher, sent) = send_on_thread(publisher, schedule, clock).await?;
        let deadline = Instant::now() + self.drain;
        let expected = sent.sent * self.subscribers as u64;
        while tally.received() < expected && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        drop(subscription);
        drop(publisher);
        Ok(Report::new(Measured {
            from: &self.from.url,
            to: &self.to.url,
            rate,
            size: self.size,
            qos: self.qos,
            subscribers: self.subscribers,
            sent,
            failed: failures.load(Ordering::Relaxed),
            tally: tally.snapshot(),
        }))
    }
}

/// Runs [`schedule::send`] on a new thread; hands the publisher back for the drain
/// (QoS 1 acknowledgements still flow through it).
async fn send_on_thread(
    mut publisher: Publisher,
    schedule: Schedule,
    clock: Clock,
) -> Result<(Publisher, schedule::SendStats), BenchError> {
    let runtime = Handle::current();
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("bench-sender".into())
        .spawn(move || {
            let result = schedule::send(&runtime, &mut publisher, &schedule, &clock);
            let _ = done.send(result.map(|sent| (publisher, sent)));
        })
        .map_err(|e| BenchError::Sender(e.to_string()))?;
    finished
        .await
        .map_err(|_| BenchError::Sender("ended without a result".into()))?
}
