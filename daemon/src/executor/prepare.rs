//! What an attempt needs before it starts and that may block: who it runs
//! as, asked of the user database, and its secret files, written for that
//! user. Both run on a blocking thread. A look-up can wait seconds on LDAP
//! or SSSD when they are unwell; on the engine's turn it would hold back
//! every job and every submission, here it holds back only the attempts
//! that need a look-up (in system mode, run as root, that is every
//! attempt: `run_as_default`). At most
//! [`crate::run_as::LOOKUPS_AT_ONCE`] look-ups run at once, so a database that hangs takes that many of the blocking pool's
//! threads, not one per attempt; the others wait for a turn without a
//! thread. The items of one Slurm job array, which start together as one
//! user, share one look-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use holdfast_api::AttemptState;
use tokio::sync::oneshot;

use super::{AttemptEnd, AttemptSpec, KillReason};
use crate::run_as::RunAsError;

/// An attempt that ends before it starts.
pub(super) struct NotStarted {
    pub end: AttemptEnd,
    /// Asked to stop (a cancel, the job's timeout, the daemon stopping),
    /// rather than failed.
    pub stopped: bool,
}

/// Resolve `spec.run_as` into `spec.identity` and write `spec.secret_files`.
/// A stop asked for meanwhile (`kill`) ends the attempt at once, and so
/// does its `timeout`: the look-up is left to finish on its thread, which
/// then writes no secret files (or removes those it wrote).
pub(super) async fn prepare(
    spec: &mut AttemptSpec,
    kill: &mut oneshot::Receiver<KillReason>,
) -> Result<(), NotStarted> {
    if spec.run_as.is_none() && spec.secret_files.is_none() {
        return Ok(());
    }
    let run_as = spec.run_as.take();
    let secret_files = spec.secret_files.take();
    let abandoned = Arc::new(AtomicBool::new(false));
    let given_up = abandoned.clone();
    // The items of one Slurm job array share one look-up: they start
    // together, as one user.
    let batch = (spec.slurm.as_ref()).and_then(|slurm| slurm.batch.clone());
    // Err: the message, and whether the cause passes (out of files).
    let work = async move {
        let identity = match (run_as, &batch) {
            (None, _) => None,
            (Some(run_as), Some(batch)) => (batch.identity)
                .get_or_init(|| look_up(run_as))
                .await
                .clone()?,
            (Some(run_as), None) => look_up(run_as).await?,
        };
        let Some(files) = secret_files else {
            return Ok(identity);
        };
        tokio::task::spawn_blocking(move || {
            if !given_up.load(Ordering::SeqCst) {
                files
                    .write(identity.as_ref())
                    .map_err(|message| (message, false))?;
                // Written after the attempt ended (and the engine removed
                // its directory): nobody else will remove them.
                if given_up.load(Ordering::SeqCst) {
                    crate::secret_files::remove(&files.dir);
                }
            }
            Ok(identity)
        })
        .await
        .unwrap_or_else(|e| Err((format!("cannot write the secret files: {e}"), false)))
    };
    tokio::pin!(work);
    let timeout = async {
        match spec.timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let mut watching_kill = true;
    let prepared = loop {
        tokio::select! {
            prepared = &mut work => break prepared,
            stop = &mut *kill, if watching_kill => match stop {
                Ok(reason) => {
                    abandoned.store(true, Ordering::SeqCst);
                    return Err(NotStarted {
                        end: AttemptEnd::stopped_before_start(reason),
                        stopped: true,
                    });
                }
                // The engine dropped its handle: nobody will ask it to stop.
                Err(_) => watching_kill = false,
            },
            () = &mut timeout => {
                abandoned.store(true, Ordering::SeqCst);
                let end = AttemptEnd {
                    state: AttemptState::Timeout,
                    error: Some(format!(
                        "timeout after {} before it started (its user was still being looked up)",
                        humantime::format_duration(spec.timeout.unwrap_or_default())
                    )),
                    ..AttemptEnd::spawn_error(String::new())
                };
                return Err(NotStarted { end, stopped: false });
            }
        }
    };
    match prepared {
        Ok(identity) => {
            // The kernel does not apply RLIMIT_NPROC to uid 0 (caps.rs): a
            // run-as user that turned out to be root goes without it.
            if identity.as_ref().is_some_and(|id| id.uid == 0) {
                spec.caps.rlimits.processes = None;
            }
            spec.identity = identity;
            Ok(())
        }
        Err((message, transient)) => {
            let end = if transient {
                AttemptEnd::out_of_files(message)
            } else {
                // Said here as well as by the engine, whose line for a
                // fan-out item waiting for its retry is quieter.
                tracing::error!(HF_JOB_ID = spec.key.job_id, HF_ATTEMPT = spec.key.number, activity = %spec.path, error = %message, "cannot start the activity");
                AttemptEnd::spawn_error(message)
            };
            Err(NotStarted {
                end,
                stopped: false,
            })
        }
    }
}

/// The user `run_as` names, looked up on the blocking pool in one of the
/// daemon's look-up turns ([`crate::run_as::look_up_in_turn`]). Err: the
/// message, and whether the cause passes (out of files).
async fn look_up(
    run_as: crate::run_as::Request,
) -> Result<Option<crate::run_as::Identity>, (String, bool)> {
    crate::run_as::look_up_in_turn(crate::run_as::LookUpFor::Attempt, move || {
        run_as.resolve().map(Some).map_err(|e| {
            let transient = matches!(e, RunAsError::OutOfFiles { .. });
            (e.to_string(), transient)
        })
    })
    .await
    .unwrap_or_else(|e| Err((format!("cannot look up the user: {e}"), false)))
}
