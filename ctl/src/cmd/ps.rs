//! `hfctl ps`: what runs now and what waits: running jobs and, under each,
//! the activities that run or wait to retry, with progress and elapsed
//! time, then queued jobs; each with why it waits (`Job::waiting`).
//! `--json` prints `{"jobs": [Job, ...]}`.

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{ActivityState, Job, JobState, Waiting};
use serde::Serialize;

use super::Context;
use super::status::{item_summary, progress};
use crate::error::{Error, Outcome};
use crate::output::{self, Align, Cell, Palette, Style, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Serialize)]
struct Running {
    jobs: Vec<Job>,
}

/// More running jobs than this would not fit on a screen anyway.
const MAX_JOBS: u32 = 200;

pub async fn run(ctx: &Context, _args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let mut summaries = Vec::new();
    for state in [JobState::Running, JobState::Queued] {
        let mut list = daemon
            .call(daemon.client.job_list(
                Some(state.as_str().to_string()),
                None,
                Some(MAX_JOBS),
                None,
                None,
                None,
            ))
            .await?;
        // Oldest first: the order in which they started or were queued.
        list.jobs.reverse();
        summaries.extend(list.jobs);
    }
    let mut jobs = Vec::with_capacity(summaries.len());
    for summary in &summaries {
        match daemon.call(daemon.client.job_get(summary.id)).await {
            Ok(job) => jobs.push(job),
            // Finished and swept between the two calls: nothing to show.
            Err(Error::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    if ctx.json {
        output::print_json(&Running { jobs })?;
    } else if jobs.is_empty() {
        output::print("no jobs running or queued\n")?;
    } else {
        output::print(&render(&jobs, &ctx.palette))?;
    }
    Ok(Outcome::Success)
}

fn render(jobs: &[Job], palette: &Palette) -> String {
    let mut table = Table::new(&[
        "JOB", "TARGET", "STATE", "ATTEMPT", "PROGRESS", "ELAPSED", "WAITING",
    ])
    .align(0, Align::Right)
    .align(3, Align::Right)
    .align(5, Align::Right);
    for job in jobs {
        let target = match &job.tenant {
            Some(tenant) => format!("{} ({tenant})", job.target),
            None => job.target.clone(),
        };
        table.row(vec![
            job.id.to_string().into(),
            Cell::styled(target, Some(Style::Bold)),
            Cell::styled(job.state.as_str(), Some(output::job_state_style(job.state))),
            "".into(),
            output::percent(job.progress).into(),
            match job.state {
                // How long it has been queued.
                JobState::Queued => output::elapsed_text(Some(&job.created_at), None),
                _ => output::elapsed_text(job.started_at.as_deref(), job.finished_at.as_deref()),
            }
            .into(),
            job.waiting
                .as_ref()
                .map_or_else(String::new, waiting_text)
                .into(),
        ]);
        let active = job
            .activities
            .iter()
            .filter(|a| matches!(a.state, ActivityState::Running | ActivityState::RetryWait));
        for activity in active {
            let last = activity.attempts.iter().max_by_key(|at| at.number);
            table.row(vec![
                "".into(),
                format!("  {}.{}", activity.process, activity.activity).into(),
                Cell::styled(
                    activity.state.as_str(),
                    output::activity_state_style(activity.state),
                ),
                last.map_or_else(String::new, |at| at.number.to_string())
                    .into(),
                match &activity.items {
                    Some(items) => item_summary(items),
                    None => progress(activity),
                }
                .into(),
                last.map_or_else(String::new, |at| {
                    output::elapsed_text(Some(&at.started_at), at.finished_at.as_deref())
                })
                .into(),
                "".into(),
            ]);
        }
    }
    table.render(palette)
}

/// `max_parallel: 3 ready, the daemon runs 4 of its max_parallel 4`, with
/// the time a retry delay ends.
pub fn waiting_text(waiting: &Waiting) -> String {
    let mut text = format!("{}: {}", waiting.reason.as_str(), waiting.detail);
    if let Some(until) = &waiting.until {
        text.push_str(&format!(" until {}", output::time(until)));
    }
    text
}
