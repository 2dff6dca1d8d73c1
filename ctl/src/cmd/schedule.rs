//! `hfctl schedule pause|resume|trigger CHAIN.NAME`: operate one schedule.

use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Stop the schedule from firing until resumed (kept across restarts).
    Pause { name: String },
    /// Let it fire again; fires missed while paused are not run.
    Resume { name: String },
    /// Fire it now.
    Trigger { name: String },
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let (verb, info) = match args.action {
        Action::Pause { name } => (
            "paused",
            daemon.call(daemon.client.schedule_pause(name)).await?,
        ),
        Action::Resume { name } => (
            "resumed",
            daemon.call(daemon.client.schedule_resume(name)).await?,
        ),
        Action::Trigger { name } => (
            "triggered",
            daemon.call(daemon.client.schedule_trigger(name)).await?,
        ),
    };
    if ctx.json {
        output::print_json(&info)?;
    } else {
        let job = info
            .last_job
            .map(|j| format!("; last job {j}"))
            .unwrap_or_default();
        output::print(&format!("{}.{} {verb}{job}\n", info.chain, info.name))?;
    }
    Ok(Outcome::Success)
}
