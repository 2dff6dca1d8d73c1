//! Staying with a job until it ends, across restarts of the daemon: the
//! reconnecting `job.watch` that `wait`, `submit --wait/--follow` and
//! `logs -f` share, and the following of every attempt's log of a job,
//! lines prefixed with the activity.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{Job, LogChunk};
use jsonrpsee::core::client::SubscriptionCloseReason;
use tokio::task::JoinSet;

use crate::daemon::Daemon;
use crate::error::{Error, is_lost};
use crate::output;

/// How long to keep trying to reach a daemon that went away when no
/// `--timeout` bounds the wait: a restart takes seconds, a package upgrade
/// or a host reboot minutes.
const RECONNECT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The longest pause between two tries to reach the daemon again.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Subscriptions in a row that the daemon closed on a job that had not
/// ended, with the connection still up, before giving up.
const MAX_CLOSES: u32 = 5;

/// How one `job.watch` subscription ended.
enum Watched {
    /// The job is terminal (or the caller's condition holds).
    Ended(Box<Job>),
    /// The subscriber fell behind and was dropped.
    Lagged,
    /// The daemon closed it on a connection still up, the job not ended.
    Closed,
}

/// A connection that is opened again when the daemon goes away.
pub struct Watcher {
    socket: PathBuf,
    daemon: Arc<Daemon>,
    deadline: Option<Instant>,
}

impl Watcher {
    /// `deadline`: when to give up waiting (`--timeout`); reconnecting
    /// tries until then.
    pub fn new(socket: PathBuf, daemon: Arc<Daemon>, deadline: Option<Instant>) -> Watcher {
        Watcher {
            socket,
            daemon,
            deadline,
        }
    }

    /// Connect to a daemon that runs: refused at once when nothing listens
    /// on the socket, but a connection dropped during the handshake (a
    /// daemon restarting) is tried again as [`Watcher::reconnect`] does.
    pub async fn connect(socket: PathBuf, deadline: Option<Instant>) -> Result<Watcher, Error> {
        let daemon = match Daemon::connect(&socket).await {
            Ok(daemon) => daemon,
            Err(error @ Error::NotRunning { .. }) => return Err(error),
            Err(error) if is_lost(&error) => {
                eprintln!(
                    "hfctl: lost the daemon on {} ({error}); connecting again",
                    socket.display()
                );
                connect_again(&socket, deadline).await?
            }
            Err(error) => return Err(error),
        };
        Ok(Watcher::new(socket, Arc::new(daemon), deadline))
    }

    /// The connection now (a new one after a reconnect).
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.daemon
    }

    /// Connect again, waiting (with backoff) while the daemon is away:
    /// nothing listens on the socket, or a daemon that is starting or
    /// dying drops the connection. A daemon that answers but refuses (for
    /// example another protocol after an upgrade) ends the wait.
    pub async fn reconnect(&mut self) -> Result<(), Error> {
        self.daemon = Arc::new(connect_again(&self.socket, self.deadline).await?);
        Ok(())
    }

    /// Follow `job_watch` until the job is terminal, calling `on_update`
    /// with the connection and every state seen, and return the terminal
    /// job. A lost connection is opened again and the watch goes on from
    /// the job's current state (the daemon sends it first).
    pub async fn watch(
        &mut self,
        job_id: u64,
        mut on_update: impl FnMut(&Arc<Daemon>, &Job),
    ) -> Result<Job, Error> {
        self.watch_until(job_id, |daemon, job| {
            on_update(daemon, job);
            false
        })
        .await
    }

    /// Like [`Watcher::watch`], but also return the first state for which
    /// `stop` says so.
    pub async fn watch_until(
        &mut self,
        job_id: u64,
        mut stop: impl FnMut(&Arc<Daemon>, &Job) -> bool,
    ) -> Result<Job, Error> {
        let mut closes = 0;
        loop {
            match self.watch_once(job_id, &mut stop).await {
                Ok(Watched::Ended(job)) => return Ok(*job),
                Ok(Watched::Lagged) => {}
                Ok(Watched::Closed) => {
                    closes += 1;
                    if closes >= MAX_CLOSES {
                        return Err(Error::WatchEnded { job_id });
                    }
                }
                Err(error) if is_lost(&error) => {
                    eprintln!(
                        "hfctl: lost the daemon on {} while watching job {job_id}; connecting again",
                        self.socket.display()
                    );
                    self.reconnect().await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One subscription, until the job ends or the subscription does.
    async fn watch_once(
        &self,
        job_id: u64,
        stop: &mut impl FnMut(&Arc<Daemon>, &Job) -> bool,
    ) -> Result<Watched, Error> {
        let daemon = &self.daemon;
        // The daemon sends the current state first, then every change.
        let mut subscription = daemon.call(daemon.client.job_watch(job_id)).await?;
        while let Some(item) = subscription.next().await {
            let job = item.map_err(|e| daemon.bad_item(e))?;
            if stop(daemon, &job) || job.state.is_terminal() {
                return Ok(Watched::Ended(Box::new(job)));
            }
        }
        // Closed before the end: the job may have ended in between, or the
        // daemon went away (then this call says so).
        let job = daemon.call(daemon.client.job_get(job_id)).await?;
        if stop(daemon, &job) || job.state.is_terminal() {
            return Ok(Watched::Ended(Box::new(job)));
        }
        if matches!(
            subscription.close_reason(),
            Some(SubscriptionCloseReason::Lagged)
        ) {
            // Fell behind: open it again at once, not a reason to give up.
            return Ok(Watched::Lagged);
        }
        Ok(Watched::Closed)
    }

    /// Watch the job and follow the log of every attempt as it appears,
    /// each in its own task, lines prefixed with `process.activity`; return
    /// the terminal job once every log has been written to its end. With
    /// `to_stderr`, lines go to stderr (stdout is kept for a JSON document).
    pub async fn follow_job(&mut self, job_id: u64, to_stderr: bool) -> Result<Job, Error> {
        let mut followed: HashSet<(String, u32)> = HashSet::new();
        let mut tasks: JoinSet<(String, u32, Result<(), Error>)> = JoinSet::new();
        let socket = self.socket.clone();
        let deadline = self.deadline;
        let job = self
            .watch(job_id, |daemon, job| {
                for activity in &job.activities {
                    for attempt in &activity.attempts {
                        if !followed.insert((activity.path.clone(), attempt.number)) {
                            continue;
                        }
                        let mut watcher =
                            Watcher::new(socket.clone(), Arc::clone(daemon), deadline);
                        let path = activity.path.clone();
                        let number = attempt.number;
                        let mut lines =
                            Prefixed::new(format!("{}.{} | ", activity.process, activity.activity));
                        tasks.spawn(async move {
                            let result = watcher
                                .follow_log(job_id, Some(path.clone()), Some(number), |chunk| {
                                    write_log_lines(lines.push(&chunk.data), to_stderr)
                                })
                                .await
                                .and_then(|_| write_log_lines(lines.finish(), to_stderr));
                            (path, number, result)
                        });
                    }
                }
            })
            .await?;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, _, Ok(()))) => {}
                // The reader went away; main says nothing about that either.
                Ok((_, _, Err(Error::Stdout(e)))) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                }
                // A log that cannot be followed does not change the job's
                // outcome: say so and go on.
                Ok((path, number, Err(error))) => {
                    eprintln!("hfctl: cannot follow the log of {path} attempt {number}: {error}");
                }
                Err(error) => eprintln!("hfctl: a log follower stopped: {error}"),
            }
        }
        Ok(job)
    }

    /// Follow one attempt's log to its end, connecting again (and going on
    /// from the last byte written) when the daemon goes away. `activity`
    /// and `attempt` as `job.follow_logs` takes them; returns the activity
    /// path and attempt number the daemon resolved them to.
    pub async fn follow_log(
        &mut self,
        job_id: u64,
        mut activity: Option<String>,
        mut attempt: Option<u32>,
        mut sink: impl FnMut(LogChunk) -> Result<(), Error>,
    ) -> Result<(String, u32), Error> {
        let mut offset = 0;
        let mut resolved: Option<(String, u32)> = None;
        loop {
            let result = crate::cmd::logs::follow_from(
                &self.daemon,
                job_id,
                activity.clone(),
                attempt,
                offset,
                |chunk| {
                    offset = chunk.next_offset;
                    resolved = Some((chunk.activity.clone(), chunk.attempt));
                    sink(chunk)
                },
            )
            .await;
            // Go on with the same attempt, also after a retry started.
            if let Some((path, number)) = &resolved {
                activity = Some(path.clone());
                attempt = Some(*number);
            }
            match result {
                Err(error) if is_lost(&error) => self.reconnect().await?,
                Err(error) => return Err(error),
                Ok(()) => {
                    return resolved.ok_or_else(|| Error::NotFound {
                        message: format!("job {job_id} has no log to follow"),
                    });
                }
            }
        }
    }
}

/// Connect, trying again with backoff while the daemon is away, until
/// `deadline` (or [`RECONNECT_WAIT`]).
pub async fn connect_again(socket: &Path, deadline: Option<Instant>) -> Result<Daemon, Error> {
    let deadline = deadline.unwrap_or_else(|| Instant::now() + RECONNECT_WAIT);
    let mut pause = Duration::from_millis(20);
    loop {
        match Daemon::connect(socket).await {
            Ok(daemon) => return Ok(daemon),
            Err(error) if is_lost(&error) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(error);
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Cuts a log stream into lines, each with a prefix. A partial line waits
/// for its end (or for the log's end).
pub struct Prefixed {
    prefix: String,
    pending: String,
}

impl Prefixed {
    pub fn new(prefix: String) -> Prefixed {
        Prefixed {
            prefix,
            pending: String::new(),
        }
    }

    /// Add data; the complete lines it ends, prefixed.
    pub fn push(&mut self, data: &str) -> Option<String> {
        self.pending.push_str(data);
        let end = self.pending.rfind('\n')?;
        let complete: String = self.pending.drain(..=end).collect();
        Some(prefix_lines(&self.prefix, &complete))
    }

    /// The log has ended: what is left, as a last line.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.pending);
        Some(prefix_lines(&self.prefix, &rest))
    }
}

/// Write followed log lines: to stdout, or to stderr when stdout is kept for
/// the final JSON document.
pub fn write_log_lines(text: Option<String>, to_stderr: bool) -> Result<(), Error> {
    let Some(text) = text else {
        return Ok(());
    };
    if to_stderr {
        // Nothing sensible is left to do when stderr is gone.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        Ok(())
    } else {
        output::print(&text)
    }
}

/// Every line of `text` with `prefix` in front, each ending in a newline.
fn prefix_lines(prefix: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + prefix.len() * 4);
    for line in text.split_terminator('\n') {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_and_partial_lines_wait() {
        assert_eq!(
            prefix_lines("load.facts | ", "a\nb\n"),
            "load.facts | a\nload.facts | b\n"
        );
        assert_eq!(prefix_lines("p | ", "tail"), "p | tail\n");
        assert_eq!(prefix_lines("p | ", "\n"), "p | \n");

        let mut lines = Prefixed::new("p | ".into());
        assert_eq!(lines.push("first pa"), None);
        assert_eq!(lines.push("rt\nsecond"), Some("p | first part\n".into()));
        assert_eq!(
            lines.push("\nthird\nfou"),
            Some("p | second\np | third\n".into())
        );
        assert_eq!(lines.finish(), Some("p | fou\n".into()));
        assert_eq!(lines.finish(), None);
    }
}
