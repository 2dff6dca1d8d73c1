//! `hfctl cancel JOB...`: cancel queued or running jobs and say, per job,
//! what happened. Fails (exit 1) if any job could not be cancelled.

use holdfast_api::JobState;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The jobs to cancel.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs), required = true, value_name = "JOB")]
    pub jobs: Vec<u64>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let outcomes = daemon.call(daemon.client.job_cancel(args.jobs)).await?;
    let failed = outcomes.iter().any(|o| o.error.is_some());
    if ctx.json {
        output::print_json(&outcomes)?;
    } else {
        let mut text = String::new();
        for outcome in &outcomes {
            match (&outcome.error, outcome.state) {
                (Some(error), _) => {
                    eprintln!("hfctl: cannot cancel job {}: {error}", outcome.job_id)
                }
                (None, Some(JobState::Cancelled)) => {
                    text.push_str(&format!("job {} cancelled\n", outcome.job_id));
                }
                (None, None) => {
                    text.push_str(&format!("job {} cancel requested\n", outcome.job_id));
                }
                (None, Some(state)) => text.push_str(&format!(
                    "job {} cancelling (still {} while its activities stop)\n",
                    outcome.job_id,
                    state.as_str()
                )),
            }
        }
        output::print(&text)?;
    }
    Ok(if failed {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}
