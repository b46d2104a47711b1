//! `--sweep`: the highest rate at which a run loses nothing and keeps p99 under a bound.
//! Rates double from the first until a run fails (or the ceiling is reached), then the
//! interval between the last pass and the first failure is bisected (geometrically)
//! until it is narrower than [`PRECISION`]. A rate fails only when two runs in a row fail
//! there: on a shared machine one stall of another process is enough to push a short
//! run's p99 over the bound, and that says nothing about the path.

use super::report::SweepReport;
use super::trial::Plan;
use super::{BenchArgs, BenchError};

/// Stop bisecting when the failing rate is within this factor of the passing one.
const PRECISION: f64 = 1.1;
/// At most this many runs in all, whatever the rates (retries included).
const MAX_RUNS: usize = 20;

/// Runs the sweep; `progress` is called after each run (to print it as it happens).
pub async fn sweep(
    plan: &Plan,
    args: &BenchArgs,
    mut progress: impl FnMut(&super::report::Report),
) -> Result<SweepReport, BenchError> {
    let mut runs = Vec::new();
    let mut best: Option<super::report::Report> = None;
    let mut failed_at: Option<f64> = None;
    let mut rate = args.rate.min(args.max_rate);
    while runs.len() < MAX_RUNS {
        let mut report = plan.run(rate).await?;
        progress(&report);
        let mut passed = report.passes(args.max_p99);
        if !passed && runs.len() + 1 < MAX_RUNS {
            runs.push(report);
            report = plan.run(rate).await?;
            progress(&report);
            passed = report.passes(args.max_p99);
        }
        runs.push(report.clone());
        if passed {
            best = Some(report);
        } else {
            failed_at = Some(failed_at.map_or(rate, |failed: f64| failed.min(rate)));
        }
        let passed_at = best.as_ref().map(|best| best.rate);
        rate = match (passed_at, failed_at) {
            (Some(low), None) if low >= args.max_rate => break,
            (Some(low), None) => (low * 2.0).min(args.max_rate),
            (Some(low), Some(high)) if high / low > PRECISION => (low * high).sqrt(),
            (None, Some(high)) if high > 1.0 => high / 4.0,
            _ => break,
        };
    }
    let max_sustainable_rate = best.as_ref().map_or(0.0, |best| best.rate);
    Ok(SweepReport {
        max_p99_us: args.max_p99.as_secs_f64() * 1e6,
        max_sustainable_rate,
        best,
        runs,
    })
}
