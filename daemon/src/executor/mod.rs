//! Runs one attempt of an activity as a child process: its own process
//! group, stdout and stderr into a capped log file, the control channel on
//! fd 3, timeout and kill handling. It reports to the engine through
//! [`ExecEvent`]s and owns nothing the engine needs to look at.

pub mod control;
mod control_lines;
mod end;
mod exec_size;
mod log_writer;
pub mod logs;
mod prepare;
mod report;
mod simulated;
pub mod slurm;
mod spawn;
pub mod start_time;
mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use holdfast_api::AttemptState;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};

pub use control::ControlMessage;
use control_lines::{read_control, read_control_lines};
pub use end::{AttemptEnd, is_out_of_files};
use logs::LogSink;
pub use logs::{AttemptKey, LogHub};
use report::StartReport;
pub use report::StartedPid;
use simulated::run_simulated;

/// The fd number activities find the control channel on.
pub const CONTROL_FD: i32 = 3;

/// Everything needed to run one attempt; rendered by the engine.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    pub key: AttemptKey,
    /// `chain.process.activity`, for messages.
    pub path: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    /// Set for simulated jobs: nothing is run, the attempt ends as this
    /// stand-in says.
    pub simulated: Option<holdfast_workflow::Simulate>,
    /// Run as this user instead of the daemon's: set by [`prepare`] from
    /// `run_as`.
    pub identity: Option<crate::run_as::Identity>,
    /// Who the attempt runs as when not the daemon's user, not yet looked
    /// up.
    pub run_as: Option<crate::run_as::Request>,
    /// Secret files to write for the attempt's user before it starts.
    pub secret_files: Option<crate::secret_files::Pending>,
    /// The caps, split between the attempt's cgroup and rlimits.
    pub caps: crate::caps::Plan,
    /// The daemon's cgroup subtree, when attempts get cgroups.
    pub cgroups: Option<Arc<crate::cgroup::Cgroups>>,
    /// Also forward output lines to the journal (the chain's `journal`).
    pub journal: bool,
    /// The job's secret values, masked in the captured output.
    pub secrets: Vec<String>,
    /// The activity's outputs from earlier attempts, which stay and count
    /// against the cap on outputs.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Set for `executor = "slurm"`: the attempt is a Slurm batch job.
    pub slurm: Option<slurm::SlurmAttempt>,
}

/// Why the engine asks an attempt to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Cancel,
    /// The job's own timeout expired.
    JobTimeout,
    /// The daemon is stopping; the attempt will be resumed.
    Shutdown,
}

/// What an attempt reports to the engine.
#[derive(Debug)]
pub enum ExecEvent {
    Started {
        key: AttemptKey,
        pid: u32,
        start_time: Option<u64>,
    },
    Control {
        key: AttemptKey,
        message: ControlMessage,
        /// Bytes of the attempt's control input read up to the end of this
        /// message's line (a Slurm attempt's control file is read on from
        /// there after a restart).
        offset: u64,
        /// The message's share of its attempt's in-flight budget, given back
        /// when the engine drops the event.
        held: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Ended {
        key: AttemptKey,
        end: AttemptEnd,
        /// The attempt's pid when it ended before it was reported
        /// (`report.rs`): recorded in the batch of its end.
        started: Option<StartedPid>,
    },
    /// A Slurm attempt was accepted by `sbatch` under this job id (a
    /// fan-out item's: its array's id).
    SlurmSubmitted { key: AttemptKey, slurm_job_id: u64 },
    /// A fan-out item's array task was seen with its own Slurm job id.
    SlurmTaskJob { key: AttemptKey, task_job_id: u64 },
    /// The daemon is stopping and the attempt's Slurm job keeps running:
    /// it stays `running` in the store, for the next start to adopt.
    Detached { key: AttemptKey },
}

/// Start the attempt in its own task. The engine keeps `kill` to stop it.
pub fn spawn(
    spec: AttemptSpec,
    events: mpsc::Sender<ExecEvent>,
    kill: oneshot::Receiver<KillReason>,
    hub: LogHub,
) {
    tokio::spawn(async move {
        let key = spec.key;
        let mut spec = spec;
        let mut kill = kill;
        if let Err(prepare::NotStarted { end, stopped }) =
            prepare::prepare(&mut spec, &mut kill).await
        {
            slurm::leave_array(&spec, stopped).await;
            let _ = events
                .send(ExecEvent::Ended {
                    key,
                    end,
                    started: None,
                })
                .await;
            return;
        }
        let (end, started) = match (spec.simulated.clone(), spec.slurm.is_some()) {
            (Some(simulate), _) => (
                run_simulated(&spec, simulate, &events, kill, &hub).await,
                None,
            ),
            (None, true) => match slurm::run(spec, &events, kill, &hub).await {
                Some(end) => (end, None),
                None => {
                    // Left running in Slurm for the next daemon to adopt.
                    hub.unregister(key);
                    let _ = events.send(ExecEvent::Detached { key }).await;
                    return;
                }
            },
            (None, false) => run(spec, &events, kill, &hub).await,
        };
        hub.unregister(key);
        let _ = events.send(ExecEvent::Ended { key, end, started }).await;
    });
}

/// Run one attempt as a process: its end, and its pid when that was not
/// reported yet.
async fn run(
    spec: AttemptSpec,
    events: &mpsc::Sender<ExecEvent>,
    kill: oneshot::Receiver<KillReason>,
    hub: &LogHub,
) -> (AttemptEnd, Option<StartedPid>) {
    let mut report = None;
    let end = run_process(spec, events, kill, hub, &mut report).await;
    (end, report.and_then(|r: Arc<StartReport>| r.take()))
}

/// [`run`], leaving in `report` the attempt's pid once it has a process.
async fn run_process(
    spec: AttemptSpec,
    events: &mpsc::Sender<ExecEvent>,
    kill: oneshot::Receiver<KillReason>,
    hub: &LogHub,
    report: &mut Option<Arc<StartReport>>,
) -> AttemptEnd {
    let key = spec.key;
    let Some(first) = spec.argv.first() else {
        return AttemptEnd::spawn_error("empty command".into());
    };
    let masker = crate::mask::Masker::new(spec.secrets.iter().cloned());
    let sink = Arc::new(
        LogSink::new(spec.log_path.clone(), spec.log_max_bytes, hub.register(key))
            .masking(masker.clone()),
    );

    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).and_then(|output| {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map(|control| (output, control))
    });
    let ((output_read, output_write), (control_read, control_write)) = match pipes {
        Ok(p) => p,
        Err(e) if is_out_of_files(Some(e as i32)) => {
            return AttemptEnd::out_of_files(format!("cannot create pipes: {e}"));
        }
        Err(e) => return AttemptEnd::spawn_error(format!("cannot create pipes: {e}")),
    };
    // Another user gets a clean environment of its own, not the daemon's.
    let env = match &spec.identity {
        Some(id) => spawn::clean_environment(id, &spec.env),
        None => spawn::environment(&spec.env),
    };
    let env = match env {
        Ok(env) => env,
        Err(e) => return AttemptEnd::spawn_error(e.to_string()),
    };
    if let Err(message) = exec_size::check(&spec.argv, &env) {
        sink.note(&message).await;
        let mut end = AttemptEnd::spawn_error(message);
        end.log_bytes = sink.written();
        return end;
    }
    let cgroup = match &spec.cgroups {
        Some(cgroups) => {
            let name = key.name();
            match cgroups.create(&name, &spec.caps.cgroup) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    let message = format!("cannot set up the attempt's cgroup: {e}");
                    sink.note(&message).await;
                    let mut end = AttemptEnd::spawn_error(message);
                    end.log_bytes = sink.written();
                    return end;
                }
            }
        }
        None => None,
    };
    let cgroup_procs = match cgroup
        .as_ref()
        .and_then(crate::cgroup::AttemptCgroup::procs_fd)
    {
        Some(fd) => match fd.try_clone_to_owned() {
            Ok(fd) => Some(fd),
            Err(e) => {
                return AttemptEnd::spawn_error(format!("cannot set up the attempt's cgroup: {e}"));
            }
        },
        None => None,
    };
    let request = spawn::Request {
        argv: spec.argv.clone(),
        env,
        working_dir: spec.working_dir.clone(),
        identity: spec.identity.clone(),
        rlimits: spec.caps.rlimits,
        output: output_write,
        control: control_write,
        cgroup_procs,
    };
    // The start waits for the child's exec. Joining a cgroup, entering a
    // directory (a user's home too) can be slow, so such a start runs on a
    // blocking thread; one that only execs takes a fraction of a
    // millisecond, less than the hand-off to a blocking thread and back,
    // and runs right here. The request, with the daemon's copies of the
    // pipes' write ends, is dropped at the end of `start`, so the readers
    // see EOF when the child exits.
    let inline = request.cgroup_procs.is_none()
        && request.working_dir.is_none()
        && request.identity.is_none();
    let start = move || {
        let spawned = spawn::spawn(&request).map_err(|e| {
            let transient = is_out_of_files(e.source.raw_os_error());
            (spawn::describe(&e, &request), transient)
        });
        // Consumed here (the closure is FnOnce), whichever thread runs it.
        drop(request);
        spawned
    };
    let spawned = if inline {
        start()
    } else {
        tokio::task::spawn_blocking(start)
            .await
            .unwrap_or_else(|e| Err((format!("cannot start {first:?}: {e}"), false)))
    };
    let (pid, start_tick) = match spawned {
        Ok(spawned) => spawned,
        Err((message, transient)) => {
            sink.note(&message).await;
            tracing::debug!(activity = %spec.path, error = %message, "spawn failed");
            if let Some(cgroup) = cgroup {
                tokio::spawn(cgroup.remove());
            }
            let mut end = if transient {
                AttemptEnd::out_of_files(message)
            } else {
                AttemptEnd::spawn_error(message)
            };
            end.log_bytes = sink.written();
            return end;
        }
    };
    let spawned_at = std::time::Instant::now();
    let mut child = spawn::ChildWait::new(pid);
    let started = StartedPid {
        pid: pid.as_raw() as u32,
        start_time: start_tick.or_else(|| start_time::of_pid(pid.as_raw() as u32)),
    };
    let start_report = report.insert(Arc::new(StartReport::new(key, started, events.clone())));

    let mut readers = tokio::task::JoinSet::new();
    match tokio::net::unix::pipe::Receiver::from_owned_fd(output_read) {
        Ok(output) => {
            let forward = spec
                .journal
                .then(|| logs::JournalForward::new(key, &spec.path));
            let masker = crate::mask::StreamMasker::new(spec.secrets.iter().cloned());
            readers.spawn(logs::copy_stream(output, sink.clone(), forward, masker));
        }
        Err(e) => {
            sink.note(&format!("cannot read the output pipe: {e}"))
                .await;
        }
    }
    let gate = control::Gate::new(std::time::Instant::now(), &spec.outputs);
    readers.spawn(read_control(
        control_read,
        key,
        gate,
        events.clone(),
        sink.clone(),
        masker,
        start_report.clone(),
    ));

    let pgid = pid;
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let kill_wait = async {
        match kill.await {
            Ok(reason) => reason,
            // The engine dropped its handle: nobody will ask us to stop.
            Err(_) => std::future::pending().await,
        }
    };
    let timeout_wait = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };

    let report_due = tokio::time::sleep(report::START_REPORT_DELAY);
    tokio::pin!(kill_wait, timeout_wait, report_due);
    let mut reported = false;
    let (status, stopped_for) = loop {
        tokio::select! {
            status = child.wait() => break (status, None),
            () = &mut report_due, if !reported => {
                reported = true;
                start_report.send().await;
            }
            () = &mut timeout_wait => {
                // The note waits for the log writer, the stop does not.
                let note = format!("timeout after {}; stopping the process group", humantime::format_duration(spec.timeout.unwrap_or_default()));
                let ((), status) = tokio::join!(sink.note(&note), stop_group(&mut child, pgid, spec.kill_grace, cgroup.as_ref()));
                break (status, Some(AttemptState::Timeout));
            }
            reason = &mut kill_wait => {
                let (state, why) = match reason {
                    KillReason::Cancel => (AttemptState::Cancelled, "job cancelled"),
                    KillReason::JobTimeout => (AttemptState::Timeout, "job timeout"),
                    KillReason::Shutdown => (AttemptState::Interrupted, "daemon stopping"),
                };
                let note = format!("{why}; stopping the process group");
                let ((), status) = tokio::join!(sink.note(&note), stop_group(&mut child, pgid, spec.kill_grace, cgroup.as_ref()));
                break (status, Some(state));
            }
        }
    };
    let wall = spawned_at.elapsed();
    // Whatever the leader left behind goes with it; this also closes pipes
    // a lingering grandchild would hold open. The cgroup reaches processes
    // that left the group too.
    let _ = killpg(pgid, Signal::SIGKILL);
    if let Some(cgroup) = &cgroup {
        cgroup.kill();
    }

    // Drain the pipes. A process that escaped the group (setsid) could hold
    // them open forever, so the wait is bounded.
    if !logs::drain(&mut readers, &sink).await {
        sink.note(
            "output pipes still open 5s after exit (a process left the group); stopped reading",
        )
        .await;
    }
    // What the readers handed over is in the file before it is counted.
    sink.settle().await;

    let mut end = match status {
        Ok(status) => {
            let (exit_code, signal) = match status {
                WaitStatus::Exited(_, code) => (Some(code), None),
                WaitStatus::Signaled(_, signal, _) => (None, Some(signal as i32)),
                _ => (None, None),
            };
            let oom_killed = cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
            let state = match (stopped_for, exit_code) {
                (Some(state), _) => state,
                (None, Some(0)) => AttemptState::Succeeded,
                (None, _) if oom_killed => AttemptState::Oom,
                (None, Some(_)) => AttemptState::Failed,
                (None, None) => AttemptState::Signaled,
            };
            let error = match state {
                AttemptState::Succeeded => None,
                AttemptState::Failed => {
                    Some(format!("exited with code {}", exit_code.unwrap_or(-1)))
                }
                AttemptState::Signaled => Some(format!(
                    "killed by signal {}",
                    signal.map(signal_name).unwrap_or_else(|| "?".into())
                )),
                AttemptState::Oom => Some(format!(
                    "killed by the OOM killer: memory_max of {} reached",
                    spec.caps
                        .cgroup
                        .memory_max
                        .map(|b| format!("{} MiB", b >> 20))
                        .unwrap_or_else(|| "its cgroup".into())
                )),
                AttemptState::Timeout => Some("timed out".to_string()),
                AttemptState::Cancelled => Some("cancelled".to_string()),
                AttemptState::Interrupted => Some(crate::store::clean_stop::STOPPED.to_string()),
                _ => None,
            };
            AttemptEnd {
                state,
                exit_code,
                signal,
                error,
                ..AttemptEnd::spawn_error(String::new())
            }
        }
        Err(e) => AttemptEnd::spawn_error(format!("cannot wait for the process: {e}")),
    };
    if sink.dropped() > 0 {
        // The file is full; the count is recorded on the attempt instead.
        tracing::debug!(activity = %spec.path, dropped = sink.dropped(), "log cap reached");
    }
    end.log_bytes = sink.written();
    end.log_dropped = sink.dropped();
    end.log_error = sink.create_error();
    if end.state != AttemptState::Succeeded {
        end.error_tail = sink.tail();
    }
    // Read just before the cgroup goes: every process in it has been
    // killed and the pipes drained, so its figures are final.
    let rusage = child.rusage();
    end.resources = match &cgroup {
        Some(cgroup) => usage::from_cgroup(cgroup, rusage.as_ref(), wall),
        None => None,
    }
    .or_else(|| rusage.map(|ru| usage::from_rusage(&ru, wall)));
    if let Some(cgroup) = cgroup {
        tokio::spawn(cgroup.remove());
    }
    end
}

/// SIGTERM the group, wait up to `grace`, then SIGKILL it (and everything
/// in the attempt's cgroup).
async fn stop_group(
    child: &mut spawn::ChildWait,
    pgid: Pid,
    grace: Duration,
    cgroup: Option<&crate::cgroup::AttemptCgroup>,
) -> std::io::Result<WaitStatus> {
    let _ = killpg(pgid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
            if let Some(cgroup) = cgroup {
                cgroup.kill();
            }
            child.wait().await
        }
    }
}

/// `SIGTERM` for 15, or the number.
pub fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| signal.to_string())
}
