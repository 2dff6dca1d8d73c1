//! `hfctl schedule pause|resume|trigger|backfill CHAIN.NAME`: operate one
//! schedule.

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
    Trigger {
        name: String,
        /// Run the fire as of this instant (`schedule.at`), read in the
        /// schedule's zone: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] or RFC 3339.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Submit one fire per instant the schedule's rule gives from --from to
    /// --to (at most 1000), oldest first, each job as of its own instant.
    /// Unless the schedule's overlap is "allow", each fire waits for the
    /// previous one's jobs.
    Backfill {
        name: String,
        /// First instant of the range, read in the schedule's zone
        /// (YYYY-MM-DD is midnight).
        #[arg(long, value_name = "DATE")]
        from: String,
        /// Last instant of the range; a date (YYYY-MM-DD) includes that
        /// whole day.
        #[arg(long, value_name = "DATE")]
        to: String,
        /// List the instants, submitting nothing.
        #[arg(long)]
        dry_run: bool,
    },
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
        Action::Trigger { name, at } => (
            "triggered",
            daemon
                .call(daemon.client.schedule_trigger(name, at))
                .await?,
        ),
        Action::Backfill {
            name,
            from,
            to,
            dry_run,
        } => {
            let done = daemon
                .call(
                    daemon
                        .client
                        .schedule_backfill(name, from, to, Some(dry_run)),
                )
                .await?;
            if ctx.json {
                output::print_json(&done)?;
            } else {
                let mut out = String::new();
                let what = if done.dry_run {
                    "would submit"
                } else {
                    "submits"
                };
                out.push_str(&format!(
                    "{}: {what} {} fires, oldest first\n",
                    done.schedule,
                    done.fires.len()
                ));
                for fire in &done.fires {
                    out.push_str(&format!("  {fire}\n"));
                }
                if !done.dry_run {
                    let jobs: Vec<String> = done.jobs.iter().map(u64::to_string).collect();
                    out.push_str(&format!("jobs submitted now: {}\n", jobs.join(" ")));
                    if done.queued > 0 {
                        out.push_str(&format!(
                            "{} fires wait for the previous fire's jobs (overlap)\n",
                            done.queued
                        ));
                    }
                }
                output::print(&out)?;
            }
            return Ok(Outcome::Success);
        }
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
