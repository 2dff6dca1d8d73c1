//! `hfctl submit TARGET`: queue a job, and with `--wait` or `--follow`
//! stay until it ends (streaming each activity's log with `--follow`) and
//! exit by its outcome.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{Job, JobState};
use serde_json::{Map, Value};

use super::Context;
use super::status::render_job;
use crate::error::{Error, Outcome};
use crate::output;
use crate::watch::Watcher;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to run: `chain`, `chain.process` or `chain.process.activity`.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::chains))]
    pub target: String,
    /// A parameter, sent as a string; the daemon converts it to the declared
    /// type. Repeat for more; overrides the same key from `--params`.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub param: Vec<(String, String)>,
    /// Parameters as a JSON object, from a file or `-` for stdin.
    #[arg(long = "params", value_name = "FILE|-")]
    pub params_file: Option<PathBuf>,
    /// Send this parameter as null: no value. Accepted for an optional
    /// parameter without a default (it stays absent, also when a tenant
    /// sets it, unless the tenant locked it). Repeat for more.
    #[arg(long = "null", value_name = "KEY")]
    pub null: Vec<String>,
    /// Run this process of the chain and every process it depends on
    /// (through `after`), nothing else; TARGET is then the chain. A retry
    /// of the job keeps it.
    #[arg(long, value_name = "PROCESS")]
    pub until: Option<String>,
    /// Run with this tenant's parameter set.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Queue priority: higher runs first.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Wait until the job ends, print its status and exit by its outcome.
    #[arg(long)]
    pub wait: bool,
    /// Like --wait, and stream each activity's log as it runs, lines
    /// prefixed `process.activity | ` (on stderr with --json, so stdout
    /// keeps one JSON document).
    #[arg(long)]
    pub follow: bool,
    /// Check everything and show what would run (resolved parameters, the
    /// activities in waves, each rendered argv and environment with secrets
    /// masked), creating no job.
    #[arg(long, conflicts_with_all = ["wait", "follow"])]
    pub dry_run: bool,
    /// Run a simulated job: every activity is replaced by its `[simulate]`
    /// stand-in (a no-op that succeeds, unless the file says otherwise), so
    /// failure paths, retries and alerts can be rehearsed without touching data.
    #[arg(long)]
    pub simulate: bool,
    /// A key of your choosing (up to 128 characters) that makes submitting
    /// safe to repeat: the same key again answers with the job it first made
    /// instead of queueing another, and is refused if the rest differs.
    #[arg(long, value_name = "KEY")]
    pub request_id: Option<String>,
    /// Run as of this instant (`schedule.at`, `HF_SCHEDULED_AT`):
    /// YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] in the daemon's zone, or RFC 3339.
    /// Without it, the job runs as of its submission.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// Split `KEY=VALUE` at the first `=`: values may hold more of them.
pub fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err(format!("'{text}' has no parameter name before '='")),
        None => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    // Read local input before connecting: a bad file needs no daemon.
    let mut params = match &args.params_file {
        Some(path) => read_params(path)?,
        None => Map::new(),
    };
    for (key, value) in args.param {
        params.insert(key, Value::String(value));
    }
    for key in args.null {
        params.insert(key, Value::Null);
    }

    // One connection for the whole command: a WebSocket when it stays to
    // watch the job, else one-shot calls.
    let daemon = Arc::new(if args.wait || args.follow {
        ctx.connect_subscribing().await?
    } else {
        ctx.connect().await?
    });
    if args.dry_run {
        let plan = daemon
            .call(daemon.client.job_plan(
                args.target.clone(),
                Some(params),
                args.tenant,
                args.until,
                args.at,
            ))
            .await
            .map_err(|e| e.for_target(&args.target))?;
        if ctx.json {
            output::print_json(&plan)?;
        } else {
            output::print(&render_plan(&plan))?;
        }
        return Ok(Outcome::Success);
    }
    let submitted = daemon
        .call(daemon.client.job_submit(
            args.target.clone(),
            Some(params),
            args.tenant,
            args.priority,
            Some(args.simulate),
            args.request_id,
            args.until,
            args.at,
        ))
        .await
        .map_err(|e| e.for_target(&args.target))?;

    if !ctx.json {
        output::print(&format!(
            "job {} {}\n",
            submitted.job_id,
            submitted.state.as_str()
        ))?;
    }
    if !args.wait && !args.follow {
        if ctx.json {
            output::print_json(&submitted)?;
        }
        return Ok(Outcome::Success);
    }

    // Both stay across a restart of the daemon: the watcher connects again.
    let mut watcher = Watcher::new(ctx.socket(), daemon, None);
    let job = if args.follow {
        watcher.follow_job(submitted.job_id, ctx.json).await?
    } else {
        watcher.watch(submitted.job_id, |_, _| {}).await?
    };
    if ctx.json {
        output::print_json(&job)?;
    } else {
        output::print(&render_job(&job, &ctx.palette))?;
    }
    Ok(outcome_of(&job))
}

/// A dry run for people: parameters, then each wave's activities with the
/// command and environment they would get.
fn render_plan(plan: &holdfast_api::Plan) -> String {
    let mut out = format!(
        "dry run of {}{} (chain {} version {}){}: no job created\n",
        plan.target,
        plan.until
            .as_deref()
            .map(|p| format!(" until {p} (and what it depends on)"))
            .unwrap_or_default(),
        plan.chain,
        output::short_version(&plan.version),
        plan.tenant
            .as_deref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    );
    out.push_str("parameters:\n");
    for (key, value) in &plan.params {
        out.push_str(&format!("  {key} = {}\n", output::json_value(value)));
    }
    for (n, wave) in plan.waves.iter().enumerate() {
        out.push_str(&format!("wave {}:\n", n + 1));
        for activity in wave {
            out.push_str(&format!("  {}\n", activity.path));
            out.push_str(&format!(
                "    argv: {}\n",
                super::describe::argv_line(&activity.argv)
            ));
            if let Some(dir) = &activity.working_dir {
                out.push_str(&format!("    working dir: {dir}\n"));
            }
            let limits = [
                activity
                    .timeout_seconds
                    .map(|t| format!("timeout {}", output::seconds(t))),
                Some(format!("retries {}", activity.retries)),
                activity.memory_max.map(|m| format!("memory_max {m} bytes")),
            ];
            let limits: Vec<String> = limits.into_iter().flatten().collect();
            out.push_str(&format!("    limits: {}\n", limits.join(", ")));
            if !activity.depends_on.is_empty() {
                out.push_str(&format!("    after: {}\n", activity.depends_on.join(", ")));
            }
            for (key, value) in &activity.env {
                out.push_str(&format!("    env {key}={value}\n"));
            }
        }
    }
    out
}

/// With `--wait`, the job's end decides the exit code. Alerts do not: a job
/// that succeeded with alerts still succeeded.
pub fn outcome_of(job: &Job) -> Outcome {
    match job.state {
        JobState::Failed => Outcome::JobFailed,
        JobState::Cancelled => Outcome::JobCancelled,
        JobState::Succeeded | JobState::Queued | JobState::Running => Outcome::Success,
    }
}

fn read_params(path: &Path) -> Result<Map<String, Value>, Error> {
    let read_error = |source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(read_error)?
    };
    serde_json::from_str(&text).map_err(|source| Error::ParamsFile {
        path: if path == Path::new("-") {
            PathBuf::from("standard input")
        } else {
            path.to_path_buf()
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_param("date=2026-11-23"),
            Ok(("date".into(), "2026-11-23".into()))
        );
        assert_eq!(
            parse_param("filter=a=b=c"),
            Ok(("filter".into(), "a=b=c".into()))
        );
        assert_eq!(parse_param("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn outcome_follows_the_job_state_not_its_alerts() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": 1, "target": "c", "chain": "c", "state": "succeeded", "alerts": 3,
            "params": {}, "tenant": null, "priority": 0, "submitted_by": "ana",
            "submitter_uid": null, "submitter_pid": null, "version": "abc",
            "created_at": "2026-11-23T14:02:11Z", "started_at": null, "finished_at": null,
            "progress": 100.0, "reason": null, "retry_of": null, "outputs": {},
            "activities": []
        }))
        .expect("a valid job");
        assert_eq!(outcome_of(&job), Outcome::Success);
        let failed = Job {
            state: JobState::Failed,
            ..job.clone()
        };
        assert_eq!(outcome_of(&failed), Outcome::JobFailed);
        let cancelled = Job {
            state: JobState::Cancelled,
            ..job
        };
        assert_eq!(outcome_of(&cancelled), Outcome::JobCancelled);
    }
}
