//! `switchyard bench`: runs one measurement (or a sweep) and prints the report.

use crate::bench::idle;
use crate::bench::sweep::sweep;
use crate::bench::trial::Plan;
use crate::bench::BenchArgs;

/// Runs the benchmark the arguments describe; prints a table, or JSON with `--json`.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if args.idle {
        let report = idle::hold(args).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let plan = Plan::new(args)?;
    if args.sweep {
        let report = sweep(&plan, args, |run| {
            if !args.json {
                println!("{run}");
            }
        })
        .await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{report}");
        }
    } else {
        let report = plan.run(args.rate).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{report}");
        }
    }
    Ok(())
}
