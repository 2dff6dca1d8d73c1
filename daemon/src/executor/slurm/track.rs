//! Watching one submitted Slurm job (or array task) to its end: its
//! output and control file tailed into the attempt's log and the control
//! parser, a cancel or timeout turned into `scancel`, and Slurm's final
//! state mapped to the attempt's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use holdfast_api::AttemptState;
use tokio::sync::{mpsc, oneshot, watch};

use super::poll::{self, JobStatus, SlurmRef};
use super::submit::scancel;
use super::{CANCEL_WAIT, SlurmAttempt, tail};
use crate::executor::logs::{self, LogSink};
use crate::executor::{AttemptEnd, AttemptSpec, ExecEvent, KillReason, control};

/// Watch the submitted job `id` until Slurm says it ended, tailing its
/// output and control file, cancelling it when the engine or the timeout
/// asks. None when the daemon stops: the job keeps running.
#[allow(clippy::too_many_arguments)]
pub(super) async fn watch_to_end(
    spec: AttemptSpec,
    slurm: SlurmAttempt,
    id: SlurmRef,
    output: PathBuf,
    control_file: PathBuf,
    sink: Arc<LogSink>,
    masker: crate::mask::Masker,
    events: &mpsc::Sender<ExecEvent>,
    kill: oneshot::Receiver<KillReason>,
) -> Option<AttemptEnd> {
    let key = spec.key;
    let finish = |sink: &LogSink, mut end: AttemptEnd| {
        end.log_bytes = sink.written();
        end.log_dropped = sink.dropped();
        end.log_error = sink.create_error();
        if end.state != AttemptState::Succeeded {
            end.error_tail = sink.tail();
        }
        end
    };
    let (status_tx, mut status) = watch::channel(None);
    if slurm
        .client
        .watch
        .send(poll::Watch {
            id,
            task_job_id: slurm.task_job_id,
            status: status_tx,
        })
        .await
        .is_err()
    {
        return Some(finish(
            &sink,
            AttemptEnd::spawn_error("the Slurm poller stopped".into()),
        ));
    }

    // Output and control file, tailed until the job ended.
    let finished = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    let forward = spec
        .journal
        .then(|| logs::JournalForward::new(key, &spec.path));
    // The files are the job's user's: only theirs are read (`tail`).
    let owner = job_user(&spec, &slurm);
    let refused = |sink: &Arc<LogSink>| -> tail::OnRefused {
        let sink = sink.clone();
        Box::new(move |why: &str| sink.note_now(why))
    };
    readers.spawn(logs::copy_stream(
        tail::Tail::new(output, finished.clone(), owner, refused(&sink)),
        sink.clone(),
        forward,
        crate::mask::StreamMasker::new(spec.secrets.iter().cloned()),
    ));
    readers.spawn(crate::executor::read_control_lines(
        tail::Tail::new(control_file, finished.clone(), owner, refused(&sink))
            .starting_at(slurm.control_offset),
        slurm.control_offset,
        key,
        control::Gate::new(std::time::Instant::now(), &spec.outputs),
        events.clone(),
        sink.clone(),
        masker,
        None,
    ));

    // An array task waits its turn under `%max_parallel`: its timeout
    // counts from Slurm starting it, as Slurm's `--time` does.
    let mut deadline = match id {
        SlurmRef::Task { .. } => None,
        SlurmRef::Job(_) => spec.timeout.map(|t| tokio::time::Instant::now() + t),
    };
    let mut kill = Some(kill);
    let mut stopped_for: Option<AttemptState> = None;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut task_job_id = slurm.task_job_id;
    let final_status = loop {
        let kill_wait = async {
            match kill.as_mut() {
                Some(k) => k.await.ok(),
                None => std::future::pending().await,
            }
        };
        let timeout_wait = async {
            match deadline.filter(|_| stopped_for.is_none()) {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let give_up = async {
            match stop_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break None;
                }
                let now = status.borrow_and_update().clone();
                // An array task's own id, committed once seen: after the
                // task leaves the queue its record is found by it.
                if let Some(own) = now.as_ref().and_then(|n| n.task_job_id)
                    && task_job_id != Some(own)
                {
                    task_job_id = Some(own);
                    let _ = events.send(ExecEvent::SlurmTaskJob { key, task_job_id: own }).await;
                }
                if deadline.is_none()
                    && let Some(timeout) = spec.timeout
                    && now.as_ref().is_some_and(|n| n.state != "PENDING")
                {
                    deadline = Some(tokio::time::Instant::now() + timeout);
                }
                if let Some(now) = now.filter(JobStatus::is_final) {
                    break Some(now);
                }
            }
            reason = kill_wait => {
                kill = None;
                let Some(reason) = reason else {
                    // The engine dropped its handle: nobody will ask us to stop.
                    continue;
                };
                let (state, why) = match reason {
                    KillReason::Cancel => (AttemptState::Cancelled, "job cancelled"),
                    KillReason::JobTimeout => (AttemptState::Timeout, "job timeout"),
                    KillReason::Shutdown => {
                        // Slurm runs it on; the next start adopts it.
                        sink.note(&format!("daemon stopping; Slurm job {id} keeps running")).await;
                        readers.abort_all();
                        return None;
                    }
                };
                stopped_for = Some(state);
                stop_deadline = Some(tokio::time::Instant::now() + CANCEL_WAIT);
                let cancel = async {
                    match id {
                        // The whole job stops: one scancel of the array for
                        // all its tasks.
                        SlurmRef::Task { array, .. } if state == AttemptState::Cancelled => {
                            if slurm.client.cancel_array_once(array) {
                                scancel(&array.to_string(), &sink).await;
                            }
                        }
                        _ => scancel(&id.to_string(), &sink).await,
                    }
                };
                // The note waits for the log writer, the cancel does not.
                let note = format!("{why}; cancelling Slurm job {id}");
                tokio::join!(sink.note(&note), cancel);
            }
            () = timeout_wait => {
                stopped_for = Some(AttemptState::Timeout);
                stop_deadline = Some(tokio::time::Instant::now() + CANCEL_WAIT);
                let note = format!(
                    "timeout after {}; cancelling Slurm job {id}",
                    humantime::format_duration(spec.timeout.unwrap_or_default())
                );
                let job = id.to_string();
                tokio::join!(sink.note(&note), scancel(&job, &sink));
            }
            () = give_up => {
                sink.note(&format!("Slurm did not confirm the end of job {id} within {}s", CANCEL_WAIT.as_secs())).await;
                break None;
            }
        }
    };
    finished.store(true, Ordering::Release);
    if !logs::drain(&mut readers, &sink).await {
        sink.note("output of the Slurm job still unread 5s after its end; stopped reading")
            .await;
    }
    sink.settle().await;
    let end = outcome(id, final_status, stopped_for);
    if let Some(error) = &end.error
        && end.state != AttemptState::Succeeded
    {
        sink.note(error).await;
    }
    // The spool keeps nothing once the attempt's log has it all.
    let _ = std::fs::remove_dir_all(&slurm.dir);
    if slurm.task.is_some()
        && let Some(array_dir) = slurm.dir.parent()
    {
        // The array's own directory goes with its last task's (its script
        // is all that is left then).
        let left = std::fs::read_dir(array_dir)
            .map(|entries| entries.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(1);
        if left == 0 {
            let _ = std::fs::remove_dir_all(array_dir);
        }
    }
    Some(finish(&sink, end))
}

/// The attempt's end from Slurm's final state and why HoldFast stopped it.
fn outcome(
    id: SlurmRef,
    status: Option<JobStatus>,
    stopped_for: Option<AttemptState>,
) -> AttemptEnd {
    let mut end = AttemptEnd::spawn_error(String::new());
    end.error = None;
    let Some(status) = status else {
        end.state = stopped_for.unwrap_or(AttemptState::Interrupted);
        end.error = Some(format!("Slurm job {id}: end not confirmed by Slurm"));
        return end;
    };
    end.exit_code = status.exit_code;
    end.signal = status.signal;
    let (state, error) = match (stopped_for, status.state.as_str()) {
        (Some(state), _) if status.state != "COMPLETED" => {
            (state, format!("Slurm job {id} stopped ({})", status.state))
        }
        (_, "COMPLETED") if status.exit_code.unwrap_or(0) == 0 && status.signal.is_none() => {
            (AttemptState::Succeeded, String::new())
        }
        (_, "COMPLETED" | "FAILED") => (
            AttemptState::Failed,
            match (status.exit_code, status.signal) {
                (_, Some(signal)) => {
                    format!(
                        "Slurm job {id} killed by {}",
                        crate::executor::signal_name(signal)
                    )
                }
                (code, None) => format!("Slurm job {id} exited with code {}", code.unwrap_or(-1)),
            },
        ),
        (_, "TIMEOUT" | "DEADLINE") => (
            AttemptState::Timeout,
            format!("Slurm job {id} reached its time limit ({})", status.state),
        ),
        (_, "OUT_OF_MEMORY") => (
            AttemptState::Oom,
            format!("Slurm job {id} ran out of memory"),
        ),
        (_, "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "LOST") => (
            AttemptState::Interrupted,
            format!(
                "Slurm job {id} interrupted ({}); it is resumed",
                status.state
            ),
        ),
        (_, other) => (
            AttemptState::Failed,
            format!("Slurm job {id} ended as {other} (cancelled outside HoldFast?)"),
        ),
    };
    if state == AttemptState::Timeout || state == AttemptState::Interrupted {
        end.exit_code = None;
    }
    end.state = state;
    end.error = (!error.is_empty()).then_some(error);
    end
}

/// The uid a Slurm attempt's files must belong to: its run-as user's, the
/// daemon's own for an attempt without one. An adopted attempt (after a
/// restart) carries no resolved user: its user is the owner of its
/// directory on the spool, which the daemon made and gave that user when
/// it submitted the job (the job's user cannot hand it on, nor replace it
/// in the daemon's directory above). No look-up of the user database,
/// and the uid the job really runs as even if that database changed since.
fn job_user(spec: &AttemptSpec, slurm: &SlurmAttempt) -> u32 {
    use std::os::unix::fs::MetadataExt;
    match (&spec.identity, slurm.adopt) {
        (Some(identity), _) => identity.uid,
        // No such directory: nobody's files are read.
        (None, Some(_)) => std::fs::symlink_metadata(&slurm.dir)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .map_or(u32::MAX, |meta| meta.uid()),
        (None, None) => nix::unistd::geteuid().as_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, exit_code: i32, signal: Option<i32>) -> Option<JobStatus> {
        Some(JobStatus {
            state: state.into(),
            exit_code: Some(exit_code),
            signal,
            task_job_id: None,
        })
    }

    /// Slurm's final states map to HoldFast's attempt states; a stop asked
    /// by HoldFast wins over the CANCELLED it causes.
    #[test]
    fn slurm_states_map_to_attempt_states() {
        let cases = [
            (
                status("COMPLETED", 0, None),
                None,
                AttemptState::Succeeded,
                Some(0),
            ),
            (
                status("FAILED", 3, None),
                None,
                AttemptState::Failed,
                Some(3),
            ),
            (
                status("TIMEOUT", 0, None),
                None,
                AttemptState::Timeout,
                None,
            ),
            (
                status("OUT_OF_MEMORY", 0, None),
                None,
                AttemptState::Oom,
                Some(0),
            ),
            (
                status("NODE_FAIL", 0, None),
                None,
                AttemptState::Interrupted,
                None,
            ),
            (
                status("PREEMPTED", 0, None),
                None,
                AttemptState::Interrupted,
                None,
            ),
            (
                status("CANCELLED", 0, Some(15)),
                None,
                AttemptState::Failed,
                Some(0),
            ),
            (
                status("CANCELLED", 0, Some(15)),
                Some(AttemptState::Cancelled),
                AttemptState::Cancelled,
                Some(0),
            ),
            (
                None,
                Some(AttemptState::Cancelled),
                AttemptState::Cancelled,
                None,
            ),
            (None, None, AttemptState::Interrupted, None),
        ];
        for (found, stopped_for, state, exit_code) in cases {
            let end = outcome(SlurmRef::Job(7), found.clone(), stopped_for);
            assert_eq!(end.state, state, "{found:?} {stopped_for:?}");
            assert_eq!(end.exit_code, exit_code, "{found:?} {stopped_for:?}");
        }
    }
}
