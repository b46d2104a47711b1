//! `--idle`: opens `--subscribers` receiving connections on `--to`, says so on stdout once
//! they are all up (`{"connected":N,"connect_s":S}`), holds them for `--duration` and sends
//! nothing, so a caller can read the server's memory per idle connection meanwhile.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use super::endpoint::Endpoint;
use super::endpoints::{ClientName, Subscription};
use super::probe::Clock;
use super::tally::SharedTally;
use super::{BenchArgs, BenchError};

/// What `--idle` prints, once when the connections are up and again when it lets go.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// The endpoint held.
    pub to: String,
    /// Connections open (and subscribed).
    pub connected: usize,
    /// Seconds it took to open them all.
    pub connect_s: f64,
    /// Messages that arrived meanwhile (none are sent; anything here is someone else's).
    pub received: u64,
}

/// Opens the connections, prints an [`IdleReport`] line, holds them, and returns the
/// report at the end.
pub async fn hold(args: &BenchArgs) -> Result<IdleReport, BenchError> {
    let to = Endpoint::parse(&args.to)?;
    if !to.can_receive() {
        return Err(BenchError::Url {
            url: to.url,
            reason: "cannot hold receiving connections on this endpoint".into(),
        });
    }
    let count = args.subscribers as usize;
    let clock = Clock::new();
    let name = ClientName(format!("switchyard-idle-{:x}", clock.run & 0xff_ffff));
    let tally = SharedTally::new(clock, count)?;
    let started = Instant::now();
    let subscription = Subscription::start_many(&to, args.qos, &name, tally.clone(), count).await?;
    let mut report = IdleReport {
        to: to.url.clone(),
        connected: count,
        connect_s: started.elapsed().as_secs_f64(),
        received: 0,
    };
    let line = serde_json::to_string(&report).map_err(|e| BenchError::Usage(e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    // The caller waits for this line; a closed stdout only means nobody reads it.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    tokio::time::sleep(args.duration).await;
    let seen = tally.snapshot();
    report.received = seen.received + seen.foreign;
    drop(subscription);
    Ok(report)
}
