//! `hfctl report JOB --html FILE`: the job's execution report, one
//! self-contained HTML file (`holdfast_report::html`), from `job.get` and
//! the chain's recent jobs.

use std::path::PathBuf;

use holdfast_api::Job;
use holdfast_api::rpc::HoldfastClient;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use serde_json::Value;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs))]
    pub job: u64,
    /// Where to write the report (replaced if it exists; `-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
}

/// How many of the chain's jobs the recent runs section lists.
const RECENT_RUNS: u32 = 20;

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    // Read loosely first, so fields this hfctl does not know yet (resource
    // use) still reach the report.
    let mut params = ObjectParams::new();
    params
        .insert("job_id", args.job)
        .map_err(|source| Error::BadAnswer {
            socket: daemon.socket.clone(),
            source,
        })?;
    let raw: Value = daemon
        .call(daemon.client.request("job.get", params))
        .await?;
    let job: Job = serde_json::from_value(raw.clone()).map_err(|e| daemon.bad_item(e))?;
    let recent = daemon
        .call(daemon.client.job_list(
            None,
            Some(job.chain.clone()),
            Some(RECENT_RUNS),
            None,
            None,
            None,
        ))
        .await?;
    let html = holdfast_report::html::render(&job, &raw, &recent.jobs, "hfctl");
    if args.html.as_os_str() == "-" {
        output::print(&html)?;
    } else {
        std::fs::write(&args.html, html).map_err(|source| Error::WriteFile {
            path: args.html.clone(),
            source,
        })?;
        if !ctx.json {
            eprintln!(
                "hfctl: wrote the report of job {} to {}",
                job.id,
                args.html.display()
            );
        }
    }
    Ok(Outcome::Success)
}
