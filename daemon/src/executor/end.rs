//! How an attempt ended ([`AttemptEnd`]): what the engine records of it,
//! and the ends of attempts that never got a process (a spawn error, out of
//! file descriptors, stopped before they started).

use holdfast_api::AttemptState;

use super::KillReason;

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub state: AttemptState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub log_bytes: u64,
    pub log_dropped: u64,
    /// The attempt could not start for a passing reason (the daemon or the
    /// system out of file descriptors): the engine requeues the activity
    /// without using up a retry.
    pub transient: bool,
    /// Why the log file could not be created, if it could not.
    pub log_error: Option<String>,
    /// For an attempt that did not succeed: the last lines of its output.
    pub error_tail: Option<String>,
    /// What the attempt's processes used, when a process ran.
    pub resources: Option<holdfast_api::ResourceUse>,
}

/// The state and error of an attempt stopped for `reason` without a
/// process to stop (simulated, or not started yet).
pub(super) fn stopped_as(reason: KillReason) -> (AttemptState, String) {
    match reason {
        KillReason::Cancel => (AttemptState::Cancelled, "cancelled".to_string()),
        KillReason::JobTimeout => (AttemptState::Timeout, "timed out".to_string()),
        KillReason::Shutdown => (
            AttemptState::Interrupted,
            crate::store::clean_stop::STOPPED.to_string(),
        ),
    }
}

impl AttemptEnd {
    /// An attempt that never got a process (bad template, unknown user,
    /// spawn failure).
    pub fn spawn_error(message: String) -> AttemptEnd {
        AttemptEnd {
            state: AttemptState::SpawnError,
            exit_code: None,
            signal: None,
            error: Some(message),
            log_bytes: 0,
            log_dropped: 0,
            transient: false,
            log_error: None,
            error_tail: None,
            resources: None,
        }
    }

    /// An attempt asked to stop before it started (while it was prepared,
    /// or before its job array went out).
    pub fn stopped_before_start(reason: KillReason) -> AttemptEnd {
        let (state, error) = stopped_as(reason);
        AttemptEnd {
            state,
            error: Some(error),
            ..AttemptEnd::spawn_error(String::new())
        }
    }

    /// An attempt that could not start because file descriptors ran out:
    /// it says so, and the activity is tried again shortly.
    pub fn out_of_files(message: String) -> AttemptEnd {
        AttemptEnd {
            transient: true,
            ..AttemptEnd::spawn_error(format!(
                "{message} (out of file descriptors; the activity is tried again shortly \
                 without using up a retry)"
            ))
        }
    }
}

/// True for an error number saying that the daemon (EMFILE) or the whole
/// system (ENFILE) has run out of file descriptors: a passing condition,
/// not a fault of the activity.
pub fn is_out_of_files(errno: Option<i32>) -> bool {
    matches!(errno, Some(nix::libc::EMFILE | nix::libc::ENFILE))
}
