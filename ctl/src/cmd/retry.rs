//! `hfctl retry JOB [--from-start | --from PROCESS] [--wait]`: reprocess a finished job as a
//! new job that keeps what succeeded (or re-runs everything).

use std::sync::Arc;

use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output;
use crate::watch::Watcher;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The finished job to reprocess.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs), value_name = "JOB")]
    pub job: u64,
    /// Re-run every activity, not only those that did not succeed.
    #[arg(long, conflicts_with = "from")]
    pub from_start: bool,
    /// Re-run this process and every process after it, even where they
    /// succeeded (what comes before is kept).
    #[arg(long, value_name = "PROCESS")]
    pub from: Option<String>,
    /// Wait for the new job to end; the exit code follows its outcome.
    #[arg(long)]
    pub wait: bool,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = if args.wait {
        ctx.connect_subscribing().await?
    } else {
        ctx.connect().await?
    };
    let result = daemon
        .call(
            daemon
                .client
                .job_retry(args.job, Some(args.from_start), args.from.clone()),
        )
        .await?;
    if args.wait {
        if !ctx.json {
            output::print(&format!(
                "job {} queued (reprocessing job {})\n",
                result.job_id, args.job
            ))?;
        }
        let mut watcher = Watcher::new(ctx.socket(), Arc::new(daemon), None);
        let job = watcher.watch(result.job_id, |_, _| {}).await?;
        if ctx.json {
            output::print_json(&job)?;
        } else {
            output::print(&super::status::render_job(&job, &ctx.palette))?;
        }
        return Ok(super::submit::outcome_of(&job));
    }
    if ctx.json {
        output::print_json(&result)?;
    } else {
        output::print(&format!(
            "job {} {} (reprocessing job {})\n",
            result.job_id,
            result.state.as_str(),
            args.job
        ))?;
    }
    Ok(Outcome::Success)
}
