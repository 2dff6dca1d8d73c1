//! What an attempt needs before it starts and that may block: who it runs
//! as, asked of the user database, and its secret files, written for that
//! user. Both run on a blocking thread. A look-up can wait seconds on LDAP
//! or SSSD when they are unwell; on the engine's turn it would hold back
//! every job and every submission, here it holds back only this attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use super::{AttemptEnd, AttemptSpec, KillReason};
use crate::run_as::RunAsError;

/// Resolve `spec.run_as` into `spec.identity` and write `spec.secret_files`;
/// Err is how the attempt ends without starting. A stop asked for
/// meanwhile (`kill`) ends it at once: the look-up is left to finish on its
/// thread, which then removes any secret files it wrote.
pub(super) async fn prepare(
    spec: &mut AttemptSpec,
    kill: &mut oneshot::Receiver<KillReason>,
) -> Result<(), AttemptEnd> {
    if spec.run_as.is_none() && spec.secret_files.is_none() {
        return Ok(());
    }
    let run_as = spec.run_as.take();
    let secret_files = spec.secret_files.take();
    let path = spec.path.clone();
    let key = spec.key;
    let abandoned = Arc::new(AtomicBool::new(false));
    let given_up = abandoned.clone();
    // Err: the message, and whether the cause passes (out of files).
    let mut task = tokio::task::spawn_blocking(move || {
        let identity = match run_as.as_ref().map(crate::run_as::Request::resolve) {
            None => None,
            Some(Ok(identity)) => Some(identity),
            Some(Err(e)) => {
                let transient = matches!(e, RunAsError::OutOfFiles { .. });
                return Err((e.to_string(), transient));
            }
        };
        if let Some(files) = &secret_files {
            files
                .write(identity.as_ref())
                .map_err(|message| (message, false))?;
            // Written after the attempt ended (and the engine removed its
            // directory): nobody else will remove them.
            if given_up.load(Ordering::SeqCst) {
                crate::secret_files::remove(&files.dir);
            }
        }
        Ok(identity)
    });
    let joined = tokio::select! {
        joined = &mut task => joined,
        stop = &mut *kill => match stop {
            Ok(reason) => {
                abandoned.store(true, Ordering::SeqCst);
                return Err(stopped_before_start(reason));
            }
            // The engine dropped its handle: nobody will ask us to stop.
            Err(_) => task.await,
        },
    };
    let prepared = joined
        .unwrap_or_else(|e| Err((format!("cannot prepare the attempt: {e}"), false)))
        .map_err(|(message, transient)| match transient {
            true => AttemptEnd::out_of_files(message),
            false => AttemptEnd::spawn_error(message),
        });
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
        Err(end) => {
            tracing::debug!(HF_JOB_ID = key.job_id, HF_ACTIVITY = %path, HF_ATTEMPT = key.number, error = end.error.as_deref().unwrap_or(""), "the attempt could not be prepared");
            Err(end)
        }
    }
}

/// How an attempt asked to stop before it started ends.
fn stopped_before_start(reason: KillReason) -> AttemptEnd {
    let (state, error) = super::stopped_as(reason);
    AttemptEnd {
        state,
        error: Some(error),
        ..AttemptEnd::spawn_error(String::new())
    }
}
