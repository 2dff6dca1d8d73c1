//! `hfctl list`: jobs filtered by state, chain, tenant and age, newest
//! first, one page at a time. `--json` prints the `JobList` (`{"jobs": [...], "next_before"}`).

use clap::builder::TypedValueParser;
use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{JobState, JobSummary};

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Align, Cell, Palette, Style, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only jobs in this state: queued, running, succeeded, failed or
    /// cancelled.
    // (Listed here rather than by clap, whose list of possible values
    // renders as misplaced paragraph macros in the man page.)
    #[arg(long, value_parser = states(), hide_possible_values = true)]
    pub state: Option<JobState>,
    /// Only jobs of this chain.
    #[arg(long)]
    pub chain: Option<String>,
    /// Only this tenant's jobs.
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// Only jobs created since: a duration back from now (7d, 12h), a date
    /// (2026-12-01, from its midnight in the daemon's zone) or an RFC 3339
    /// instant.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many jobs, 1 to 1000 (default 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Only jobs older than this id (the next page).
    #[arg(long, value_name = "ID")]
    pub before: Option<u64>,
}

/// The job states by name: clap lists them in `--help`, in its error for
/// another word, and offers them to shell completion.
fn states() -> impl TypedValueParser<Value = JobState> {
    let names: Vec<&'static str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    clap::builder::PossibleValuesParser::new(names).try_map(|name: String| {
        JobState::parse(&name).ok_or_else(|| format!("{name} is not a job state"))
    })
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let list = daemon
        .call(daemon.client.job_list(
            args.state.map(|s| s.as_str().to_string()),
            args.chain,
            args.limit,
            args.before,
            args.tenant,
            args.since,
        ))
        .await?;
    if ctx.json {
        output::print_json(&list)?;
        return Ok(Outcome::Success);
    }
    if list.jobs.is_empty() {
        output::print("no jobs match\n")?;
        return Ok(Outcome::Success);
    }
    let mut text = job_table(&list.jobs, &ctx.palette);
    if let Some(before) = list.next_before {
        text.push_str(&ctx.palette.paint(
            &format!("more: hfctl list --before {before}"),
            Some(Style::Dim),
        ));
        text.push('\n');
    }
    output::print(&text)?;
    Ok(Outcome::Success)
}

/// The job table shared by `list` and `status` without a job.
pub fn job_table(jobs: &[JobSummary], palette: &Palette) -> String {
    let mut table = Table::new(&[
        "ID",
        "CHAIN/TARGET",
        "STATE",
        "PROGRESS",
        "ALERTS",
        "SUBMITTED BY",
        "CREATED",
        "DURATION",
    ])
    .align(0, Align::Right)
    .align(3, Align::Right)
    .align(4, Align::Right)
    .align(7, Align::Right);
    for job in jobs {
        let target = match &job.tenant {
            Some(tenant) => format!("{} ({tenant})", job.target),
            None => job.target.clone(),
        };
        let progress = if job.state == JobState::Queued {
            "-".to_string()
        } else {
            output::percent(job.progress)
        };
        let alerts = if job.alerts > 0 {
            Cell::styled(job.alerts.to_string(), Some(Style::Yellow))
        } else {
            Cell::from("-")
        };
        table.row(vec![
            job.id.to_string().into(),
            target.into(),
            Cell::styled(
                if job.simulated {
                    format!("{} (sim)", job.state.as_str())
                } else {
                    job.state.as_str().to_string()
                },
                Some(output::job_state_style(job.state)),
            ),
            progress.into(),
            alerts,
            job.submitted_by.clone().into(),
            output::time(&job.created_at).into(),
            output::elapsed_text(job.started_at.as_deref(), job.finished_at.as_deref()).into(),
        ]);
    }
    table.render(palette)
}
