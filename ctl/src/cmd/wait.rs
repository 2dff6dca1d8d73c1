//! `hfctl wait JOB...`: stay until every job has ended, across restarts of
//! the daemon, and exit by their outcome as `submit --wait` does.

use std::time::{Duration, Instant};

use holdfast_api::Job;
use serde::Serialize;

use super::Context;
use super::submit::outcome_of;
use crate::error::{Error, Outcome};
use crate::output::{self, Style};
use crate::watch::Watcher;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The jobs to wait for.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs), required = true, value_name = "JOB")]
    pub jobs: Vec<u64>,
    /// Give up after this many seconds (exit code 12); without it, wait as
    /// long as the jobs take, also while the daemon is down.
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<f64>,
}

#[derive(Serialize)]
struct Ended {
    jobs: Vec<Job>,
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => Ok(secs),
        _ => Err(format!("expected a number of seconds, got '{text}'")),
    }
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let timeout = args.timeout.map(Duration::from_secs_f64);
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut watcher = Watcher::connect(ctx.socket(), deadline).await?;
    let mut ended = Vec::with_capacity(args.jobs.len());
    // One after the other: a job that ended meanwhile answers at once.
    for &job_id in &args.jobs {
        let watch = watcher.watch(job_id, |_, _| {});
        let job = match timeout {
            None => watch.await?,
            Some(limit) => {
                let left = deadline.map_or(limit, |d| d.saturating_duration_since(Instant::now()));
                tokio::time::timeout(left, watch)
                    .await
                    .map_err(|_| Error::WaitTimedOut {
                        job_id,
                        seconds: limit.as_secs_f64(),
                    })??
            }
        };
        if !ctx.json {
            output::print(&line(&job, &ctx.palette))?;
        }
        ended.push(job);
    }
    if ctx.json {
        output::print_json(&Ended {
            jobs: ended.clone(),
        })?;
    }
    Ok(worst(&ended))
}

/// The exit outcome of several jobs: failed before cancelled before success.
fn worst(jobs: &[Job]) -> Outcome {
    let outcomes: Vec<Outcome> = jobs.iter().map(outcome_of).collect();
    [Outcome::JobFailed, Outcome::JobCancelled]
        .into_iter()
        .find(|o| outcomes.contains(o))
        .unwrap_or(Outcome::Success)
}

/// `job 7 etl succeeded in 3s`.
fn line(job: &Job, palette: &output::Palette) -> String {
    let mut text = format!(
        "job {} {} {}",
        job.id,
        palette.paint(&job.target, Some(Style::Bold)),
        palette.paint(job.state.as_str(), Some(output::job_state_style(job.state)))
    );
    if job.started_at.is_some() {
        text.push_str(&format!(
            " in {}",
            output::elapsed_text(job.started_at.as_deref(), job.finished_at.as_deref())
        ));
    }
    if let Some(reason) = &job.reason {
        text.push_str(&format!(": {reason}"));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_api::JobState;

    fn job(state: JobState) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "id": 1, "target": "c", "chain": "c", "state": "succeeded", "alerts": 0,
            "params": {}, "tenant": null, "priority": 0, "submitted_by": "ana",
            "submitter_uid": null, "submitter_pid": null, "version": "abc",
            "created_at": "2026-11-23T14:02:11Z", "started_at": null, "finished_at": null,
            "progress": 100.0, "reason": null, "retry_of": null, "outputs": {},
            "activities": []
        }))
        .expect("a valid job");
        job.state = state;
        job
    }

    #[test]
    fn failed_wins_over_cancelled_over_success() {
        use JobState::{Cancelled, Failed, Succeeded};
        assert_eq!(worst(&[job(Succeeded)]), Outcome::Success);
        assert_eq!(
            worst(&[job(Succeeded), job(Cancelled)]),
            Outcome::JobCancelled
        );
        assert_eq!(
            worst(&[job(Cancelled), job(Failed), job(Succeeded)]),
            Outcome::JobFailed
        );
    }
}
