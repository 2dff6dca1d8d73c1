//! `hfctl status [JOB]`: recent jobs as a table, or one job with its
//! chain → process → activity tree. `--json` prints the `Job` of `job.get`
//! as it came: that object is the scripting contract.

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{ActivityRun, Attempt, AttemptState, FanOutItem, ItemCounts, Job};
pub use holdfast_report::text::progress;

use super::Context;
use super::list::job_table;
use crate::error::{Error, Outcome};
use crate::output::{self, Align, Cell, Palette, Style, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job to show; without it, the 20 most recent jobs.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs))]
    pub job: Option<u64>,
    /// Also list every item of each fan-out (`foreach`), one line each.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    match args.job {
        Some(job_id) => {
            let job = daemon.call(daemon.client.job_get(job_id)).await?;
            if ctx.json {
                output::print_json(&job)?;
            } else {
                let mut text = render_job(&job, &ctx.palette);
                if args.all {
                    for fan_out in job.activities.iter().filter(|a| a.items.is_some()) {
                        let path = format!("{}.{}", fan_out.process, fan_out.activity);
                        text.push_str(&format!("\nitems of {path}:\n"));
                        let mut offset = Some(0);
                        while let Some(from) = offset {
                            let page = daemon
                                .call(daemon.client.job_items(
                                    job_id,
                                    path.clone(),
                                    Some(from),
                                    Some(1000),
                                ))
                                .await?;
                            text.push_str(&item_table(&path, &page.items, &ctx.palette));
                            offset = page.next_offset;
                        }
                    }
                }
                output::print(&text)?;
            }
        }
        None => {
            let list = daemon
                .call(
                    daemon
                        .client
                        .job_list(None, None, Some(20), None, None, None),
                )
                .await?;
            if ctx.json {
                output::print_json(&list)?;
            } else if list.jobs.is_empty() {
                output::print("no jobs yet\n")?;
            } else {
                output::print(&job_table(&list.jobs, &ctx.palette))?;
            }
        }
    }
    Ok(Outcome::Success)
}

/// One job for people: a header of fields, the activity tree, outputs and
/// the errors of failed attempts.
pub fn render_job(job: &Job, palette: &Palette) -> String {
    let mut state = palette.paint(job.state.as_str(), Some(output::job_state_style(job.state)));
    if !job.state.is_terminal() && job.started_at.is_some() {
        state.push_str(&format!(" ({})", output::percent(job.progress)));
    }
    if let Some(outcome) = job.outcome.filter(|_| !job.state.is_terminal()) {
        state.push_str(&format!(
            "; handlers running, the job ends {}",
            outcome.as_str()
        ));
    }
    let alerts = match (job.alerts, &job.last_alert) {
        (0, _) => "0".to_string(),
        (n, Some(last)) => format!(
            "{} (last: {last})",
            palette.paint(&n.to_string(), Some(Style::Yellow))
        ),
        (n, None) => palette.paint(&n.to_string(), Some(Style::Yellow)),
    };
    let mut pairs: Vec<(&str, String)> = vec![
        ("job", job.id.to_string()),
        ("target", job.target.clone()),
        ("state", state),
        ("alerts", alerts),
    ];
    if let Some(until) = &job.until {
        pairs.push(("until", format!("{until} (and what it depends on)")));
    }
    // The run a retry belongs to; a job that is no retry is its own run.
    pairs.push(("run", job.run_id.to_string()));
    if job.simulated {
        pairs.push((
            "simulated",
            "yes: activities were replaced by their [simulate] stand-ins".to_string(),
        ));
    }
    if let Some(tenant) = &job.tenant {
        pairs.push(("tenant", tenant.clone()));
    }
    if job.priority != 0 {
        pairs.push(("priority", job.priority.to_string()));
    }
    if !job.params.is_empty() {
        let params: Vec<String> = job
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", output::json_value(v)))
            .collect();
        pairs.push(("params", params.join(" ")));
    }
    pairs.push(("version", output::short_version(&job.version)));
    pairs.push(("submitted by", job.submitted_by.clone()));
    pairs.push(("created", output::time(&job.created_at)));
    // The business date as the job sees it, in its own zone.
    if let Some(at) = &job.scheduled_at {
        pairs.push(("scheduled at", at.clone()));
    }
    if let Some(started) = &job.started_at {
        pairs.push(("started", output::time(started)));
    }
    if let Some(finished) = &job.finished_at {
        pairs.push(("finished", output::time(finished)));
    }
    if job.started_at.is_some() {
        pairs.push((
            "duration",
            output::elapsed_text(job.started_at.as_deref(), job.finished_at.as_deref()),
        ));
    }
    if let Some(reason) = &job.reason {
        pairs.push(("reason", reason.clone()));
    }
    if let Some(retry_of) = job.retry_of {
        pairs.push(("retry of", format!("job {retry_of}")));
    }
    let mut out = output::fields(0, &pairs);

    let (handlers, own): (Vec<&ActivityRun>, Vec<&ActivityRun>) =
        job.activities.iter().partition(|a| a.handler.is_some());
    if !own.is_empty() {
        out.push('\n');
        out.push_str(&activity_tree(
            Cell::styled(job.chain.clone(), Some(Style::Bold)),
            Cell::styled(job.state.as_str(), Some(output::job_state_style(job.state))),
            &own,
            palette,
        ));
    }
    if !handlers.is_empty() {
        // Headed by the outcome they answer.
        let outcome = job.outcome.unwrap_or(job.state);
        out.push('\n');
        out.push_str(&activity_tree(
            Cell::styled("handlers", Some(Style::Bold)),
            Cell::styled(
                format!("for {}", outcome.as_str()),
                Some(output::job_state_style(outcome)),
            ),
            &handlers,
            palette,
        ));
    }

    if !job.outputs.is_empty() {
        out.push_str("\noutputs:\n");
        let pairs: Vec<(&str, String)> = job
            .outputs
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect();
        out.push_str(&output::fields(2, &pairs));
    }

    let errors = error_lines(&job.activities);
    if !errors.is_empty() {
        out.push_str("\nerrors:\n");
        for line in errors {
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
    }

    let capped: Vec<String> = job
        .activities
        .iter()
        .flat_map(|a| {
            a.attempts
                .iter()
                .filter(|t| t.log_dropped > 0)
                .map(move |t| {
                    format!(
                        "  {}.{} attempt {}: {} kept, {} dropped\n",
                        a.process,
                        a.activity,
                        t.number,
                        output::bytes(t.log_bytes),
                        output::bytes(t.log_dropped)
                    )
                })
        })
        .collect();
    let slurm: Vec<String> = job
        .activities
        .iter()
        .flat_map(|a| {
            a.attempts.iter().filter_map(move |t| {
                t.slurm_job_id.map(|id| {
                    format!(
                        "  {}.{} attempt {}: Slurm job {id} ({})\n",
                        a.process,
                        a.activity,
                        t.number,
                        t.state.as_str()
                    )
                })
            })
        })
        .collect();
    if !slurm.is_empty() {
        out.push_str("\nSlurm jobs:\n");
        for line in slurm {
            out.push_str(&line);
        }
    }
    if !capped.is_empty() {
        out.push_str("\nlogs over the cap (log_max_bytes):\n");
        for line in capped {
            out.push_str(&line);
        }
    }
    out
}

fn activity_tree(
    title: Cell,
    state: Cell,
    activities: &[&ActivityRun],
    palette: &Palette,
) -> String {
    // Processes in the order their activities come (the daemon sends them in
    // chain order), each with its activities.
    let mut processes: Vec<(&str, Vec<&ActivityRun>)> = Vec::new();
    for &activity in activities {
        match processes.iter_mut().find(|(p, _)| *p == activity.process) {
            Some((_, list)) => list.push(activity),
            None => processes.push((&activity.process, vec![activity])),
        }
    }

    let mut table = Table::new(&[
        "ACTIVITY",
        "STATE",
        "ATTEMPTS",
        "LAST",
        "DURATION",
        "RESOURCES",
        "ERROR ID",
        "PROGRESS",
    ])
    .align(2, Align::Right);
    table.row(vec![title, state]);
    for (p, (process, activities)) in processes.iter().enumerate() {
        let last_process = p + 1 == processes.len();
        // Box-drawing characters where the locale has them, else ASCII.
        let (tee, corner, bar) = if palette.utf8() {
            ("├─ ", "└─ ", "│  ")
        } else {
            ("|- ", "`- ", "|  ")
        };
        let (branch, stem) = if last_process {
            (corner, "   ")
        } else {
            (tee, bar)
        };
        table.row(vec![format!("{branch}{process}").into()]);
        for (a, activity) in activities.iter().enumerate() {
            let twig = if a + 1 == activities.len() {
                corner
            } else {
                tee
            };
            let last = activity.attempts.iter().max_by_key(|at| at.number);
            table.row(vec![
                format!("{stem}{twig}{}", activity.activity).into(),
                Cell::styled(
                    if activity.undone {
                        format!("{} (undone)", activity.state.as_str())
                    } else {
                        activity.state.as_str().to_string()
                    },
                    output::activity_state_style(activity.state),
                ),
                match &activity.items {
                    Some(items) => format!("{} items", items.total),
                    None => activity.attempts.len().to_string(),
                }
                .into(),
                last.map_or_else(String::new, attempt_end).into(),
                last.map_or_else(String::new, |at| {
                    output::elapsed_text(Some(&at.started_at), at.finished_at.as_deref())
                })
                .into(),
                output::resources(last.and_then(|at| at.resources.as_ref())).into(),
                last.and_then(|at| at.error_id.clone())
                    .unwrap_or_default()
                    .into(),
                match &activity.items {
                    Some(items) => item_summary(items),
                    None => progress(activity),
                }
                .into(),
            ]);
        }
    }
    table.render(palette)
}

/// A fan-out's items, one line each: `load.chunk[17]  failed  2  exit 1  E...`.
fn item_table(path: &str, items: &[FanOutItem], palette: &Palette) -> String {
    // Items on Slurm also show their array task (`ARRAYID_ITEM`, with the
    // task's own job id once it ran).
    let slurm = items.iter().any(|i| i.slurm_job.is_some());
    let mut headers = vec!["ITEM", "STATE", "ATTEMPTS", "LAST", "ERROR ID", "ERROR"];
    if slurm {
        headers.insert(4, "SLURM JOB");
    }
    let mut table = Table::new(&headers).align(2, Align::Right);
    for item in items {
        let last = match (item.exit_code, item.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => signal_name(signal),
            (None, None) if item.state == "running" => "-".to_string(),
            (None, None) => String::new(),
        };
        let style = match item.state.as_str() {
            "succeeded" => Some(Style::Green),
            "failed" => Some(Style::Red),
            "running" | "retry_wait" => Some(Style::Yellow),
            _ => None,
        };
        let mut row = vec![
            format!("{path}[{}]", item.index).into(),
            Cell::styled(item.state.clone(), style),
            item.attempts.to_string().into(),
            last.into(),
            item.error_id.clone().unwrap_or_default().into(),
            item.error.clone().unwrap_or_default().into(),
        ];
        if slurm {
            let job = match (&item.slurm_job, item.slurm_task_job_id) {
                (Some(task), Some(own)) => format!("{task} ({own})"),
                (Some(task), None) => task.clone(),
                (None, _) => String::new(),
            };
            row.insert(4, job.into());
        }
        table.row(row);
    }
    table.render(palette)
}

/// A fan-out on one line: a bar and its counts,
/// `[####      ] 412/1000 succeeded, 2 failed, 4 running`.
pub fn item_summary(items: &ItemCounts) -> String {
    const WIDTH: u32 = 10;
    let filled = (items.succeeded + items.failed + items.cancelled)
        .saturating_mul(WIDTH)
        .checked_div(items.total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let mut line = format!(
        "[{}{}] {}/{} succeeded",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        items.succeeded,
        items.total
    );
    for (n, what) in [
        (items.failed, "failed"),
        (items.running, "running"),
        (items.retry_wait, "waiting to retry"),
        (items.cancelled, "cancelled"),
    ] {
        if n > 0 {
            line.push_str(&format!(", {n} {what}"));
        }
    }
    line
}

/// How an attempt ended, in a few characters: `exit 1`, `SIGKILL`,
/// `timeout`; `-` while it runs.
pub fn attempt_end(attempt: &Attempt) -> String {
    match (attempt.state, attempt.exit_code, attempt.signal) {
        (AttemptState::Running, _, _) => "-".to_string(),
        (AttemptState::Succeeded | AttemptState::Failed, Some(code), _) => format!("exit {code}"),
        (AttemptState::Signaled, _, Some(signal)) => signal_name(signal),
        (AttemptState::SpawnError, _, _) => "spawn error".to_string(),
        (state, _, _) => state.as_str().to_string(),
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// One line per failed attempt that carries an error id or a message.
fn error_lines(activities: &[ActivityRun]) -> Vec<String> {
    let mut lines = Vec::new();
    for activity in activities {
        let name = format!("{}.{}", activity.process, activity.activity);
        if let Some(items) = activity.items.as_ref().filter(|i| i.failed > 0) {
            lines.push(format!(
                "{name}: {} of {} items failed; `--all` lists them, `hfctl logs JOB {name}[N]` \
                 shows one",
                items.failed, items.total
            ));
        }
        for attempt in &activity.attempts {
            if attempt.error_id.is_none() && attempt.error.is_none() {
                continue;
            }
            let mut line = format!("{name} attempt {}", attempt.number);
            if let Some(id) = &attempt.error_id {
                line.push_str(&format!(" [{id}]"));
            }
            line.push_str(": ");
            match &attempt.error {
                Some(error) => line.push_str(error),
                None => line.push_str(&attempt_end(attempt)),
            }
            if let Some(message) = &attempt.error_message {
                line.push_str(&format!("\n    said: {message}"));
            }
            // The last lines of its output, so the cause is seen without
            // opening the log.
            if let Some(tail) = &attempt.error_tail {
                for tail_line in tail.lines() {
                    line.push_str(&format!("\n    | {tail_line}"));
                }
            }
            lines.push(line);
        }
    }
    lines
}
