//! `hfctl logs JOB [ACTIVITY]`: an attempt's captured stdout and stderr,
//! paged through `job.logs`, or streamed with `-f` through the
//! `job.follow_logs` subscription. Also the reading and following that
//! `submit --follow` reuses.

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{AttemptState, LogChunk};
use jsonrpsee::core::client::SubscriptionCloseReason;

use std::sync::Arc;

use super::Context;
use crate::daemon::Daemon;
use crate::error::{Error, Outcome};
use crate::output;
use crate::watch::Watcher;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs))]
    pub job: u64,
    /// `process.activity` or `chain.process.activity`; may be left out when
    /// the job has a single activity.
    pub activity: Option<String>,
    /// Which attempt (1 is the first); the latest when not given.
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// Keep writing the log as it grows: through the activity's retries
    /// until it is done (or only attempt N with --attempt); without
    /// ACTIVITY on a job of several activities, every activity's log, each
    /// line prefixed with `process.activity`, until the job ends. Goes on
    /// across a restart of the daemon.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// How much to ask for per `job.logs` call.
const PAGE_BYTES: u64 = 1 << 20;

/// Resubscriptions in a row that brought nothing new before giving up.
const MAX_STALLS: u32 = 5;

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = if args.follow {
        ctx.connect_subscribing().await?
    } else {
        ctx.connect().await?
    };
    let mut seen = Seen::default();
    if args.follow {
        let mut watcher = Watcher::new(ctx.socket(), Arc::new(daemon), None);
        if args.activity.is_none() && args.attempt.is_none() {
            let job = {
                let daemon = watcher.daemon();
                daemon.call(daemon.client.job_get(args.job)).await?
            };
            if job.activities.len() != 1 {
                watcher.follow_job(args.job, false).await?;
                return Ok(Outcome::Success);
            }
        }
        let json = ctx.json;
        follow_retries(
            &mut watcher,
            args.job,
            args.activity,
            args.attempt,
            |chunk| {
                seen.add(&chunk);
                if json {
                    output::print_json_line(&chunk)
                } else {
                    output::print(&chunk.data)
                }
            },
        )
        .await?;
    } else if ctx.json {
        let mut chunks = Vec::new();
        read_from(&daemon, args.job, args.activity, args.attempt, 0, |chunk| {
            chunks.push(chunk);
            Ok(())
        })
        .await?;
        output::print_json(&chunks)?;
    } else {
        read_from(&daemon, args.job, args.activity, args.attempt, 0, |chunk| {
            seen.add(&chunk);
            output::print(&chunk.data)
        })
        .await?;
    }
    if !ctx.json {
        let not_started = match seen.empty_attempt() {
            Some((path, number)) => not_started(ctx, args.job, path, number).await?,
            None => None,
        };
        if let Some(note) = not_started.or_else(|| seen.note()) {
            eprintln!("hfctl: {note}");
        }
    }
    Ok(Outcome::Success)
}

/// Why attempt `number` of `path` has no log when it never started (its
/// command could not be rendered, its user or a connection not found, the
/// program not executed): its error, in place of "printed no output".
async fn not_started(
    ctx: &Context,
    job_id: u64,
    path: &str,
    number: u32,
) -> Result<Option<String>, Error> {
    let daemon = ctx.connect().await?;
    let job = daemon.call(daemon.client.job_get(job_id)).await?;
    let attempt = job
        .activities
        .iter()
        .filter(|a| a.path == path)
        .flat_map(|a| a.attempts.iter())
        .find(|a| a.number == number);
    Ok(attempt.and_then(|a| {
        let error = a.error.as_deref()?;
        (a.state == AttemptState::SpawnError)
            .then(|| format!("attempt {number} of {path} did not start: {error}"))
    }))
}

/// What the chunks of one log said about it, for the note after it.
#[derive(Default)]
struct Seen {
    bytes: u64,
    dropped: u64,
    complete: bool,
    log_error: Option<String>,
    /// The attempt of the last chunk: `chain.process.activity` and number.
    attempt: Option<(String, u32)>,
}

impl Seen {
    fn add(&mut self, chunk: &LogChunk) {
        self.attempt = Some((chunk.activity.clone(), chunk.attempt));
        self.bytes += chunk.data.len() as u64;
        self.dropped = self.dropped.max(chunk.dropped);
        self.complete |= chunk.complete;
        if chunk.log_error.is_some() {
            self.log_error.clone_from(&chunk.log_error);
        }
    }

    /// The attempt whose ended log is empty, with nothing dropped: it may
    /// never have started.
    fn empty_attempt(&self) -> Option<(&str, u32)> {
        let (path, number) = self.attempt.as_ref()?;
        (self.bytes == 0 && self.complete && self.dropped == 0 && self.log_error.is_none())
            .then_some((path.as_str(), *number))
    }

    /// Why the log is empty or short, when it is: the file could not be
    /// created, output went past the cap, or the attempt printed nothing.
    fn note(&self) -> Option<String> {
        if let Some(reason) = &self.log_error {
            return Some(format!(
                "the daemon could not create this attempt's log ({reason}); \
                 its {} bytes of output were not kept",
                self.dropped
            ));
        }
        if self.dropped > 0 {
            return Some(format!(
                "{} bytes of this log were dropped at the daemon's log size cap",
                self.dropped
            ));
        }
        (self.bytes == 0 && self.complete).then(|| "this attempt printed no output".to_string())
    }
}

/// Follow an activity's log: the attempt asked for, or the latest and then
/// each retry that starts after it, until the activity (or its job) is
/// done. A line on stderr marks where a retry begins.
async fn follow_retries(
    watcher: &mut Watcher,
    job_id: u64,
    activity: Option<String>,
    attempt: Option<u32>,
    mut sink: impl FnMut(LogChunk) -> Result<(), Error>,
) -> Result<(), Error> {
    let (path, mut number) = watcher
        .follow_log(job_id, activity, attempt, &mut sink)
        .await?;
    loop {
        if attempt.is_some() {
            return Ok(());
        }
        // Stay for the next attempt while the activity may still retry.
        let next = number + 1;
        let job = watcher
            .watch_until(job_id, |_, job| {
                job.activities.iter().any(|a| {
                    a.path == path
                        && (a.state.is_terminal() || a.attempts.iter().any(|at| at.number >= next))
                })
            })
            .await?;
        let started = job
            .activities
            .iter()
            .find(|a| a.path == path)
            .is_some_and(|a| a.attempts.iter().any(|at| at.number == next));
        if !started {
            return Ok(());
        }
        eprintln!("hfctl: {path} attempt {next} starts");
        number = next;
        watcher
            .follow_log(job_id, Some(path.clone()), Some(number), &mut sink)
            .await?;
    }
}

/// Page through an attempt's log from `offset` until it is complete or has
/// nothing more for now, handing each chunk to `sink`.
pub async fn read_from(
    daemon: &Daemon,
    job_id: u64,
    mut activity: Option<String>,
    mut attempt: Option<u32>,
    mut offset: u64,
    mut sink: impl FnMut(LogChunk) -> Result<(), Error>,
) -> Result<(), Error> {
    loop {
        let chunk = daemon
            .call(daemon.client.job_logs(
                job_id,
                activity.clone(),
                attempt,
                Some(offset),
                Some(PAGE_BYTES),
            ))
            .await?;
        // Stay on the attempt the first answer resolved, so a retry that
        // starts meanwhile does not switch logs halfway.
        activity = Some(chunk.activity.clone());
        attempt = Some(chunk.attempt);
        let done = chunk.complete || chunk.next_offset <= offset;
        offset = chunk.next_offset;
        sink(chunk)?;
        if done {
            return Ok(());
        }
    }
}

/// Follow an attempt's log from `offset` until the attempt has ended and
/// all of it was handed to `sink`. Chunks arrive in order without gaps: a subscription
/// that fell behind or skipped is replaced by a new one from the last
/// offset written.
pub async fn follow_from(
    daemon: &Daemon,
    job_id: u64,
    mut activity: Option<String>,
    mut attempt: Option<u32>,
    mut offset: u64,
    mut sink: impl FnMut(LogChunk) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut stalls = 0;
    loop {
        let mut subscription = daemon
            .call(
                daemon
                    .client
                    .job_follow_logs(job_id, activity.clone(), attempt, Some(offset)),
            )
            .await?;
        let start = offset;
        let mut gap = false;
        while let Some(item) = subscription.next().await {
            let chunk = item.map_err(|e| daemon.bad_item(e))?;
            if chunk.offset != offset {
                gap = true;
                break;
            }
            activity = Some(chunk.activity.clone());
            attempt = Some(chunk.attempt);
            offset = chunk.next_offset;
            let complete = chunk.complete;
            sink(chunk)?;
            if complete {
                return Ok(());
            }
        }
        let lagged = matches!(
            subscription.close_reason(),
            Some(SubscriptionCloseReason::Lagged)
        );
        if gap || lagged {
            stalls = if offset == start { stalls + 1 } else { 0 };
            if stalls < MAX_STALLS {
                continue;
            }
        }
        // The stream ended without its last chunk (the daemon closed it, or
        // it kept skipping): read what is left directly.
        return read_from(daemon, job_id, activity, attempt, offset, sink).await;
    }
}
