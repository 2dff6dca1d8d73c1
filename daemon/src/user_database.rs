//! Asking the user database (NSS: files, LDAP, SSSD) with a bound on the
//! wait, for the checks that run before `READY=1` and in the engine's
//! recovery: who a chain runs as, who submitted a job being resumed, who
//! owns a dead daemon's leftover processes. A database that hangs must
//! not hold back the start or a reload; what it did not confirm in time is
//! treated as unconfirmed, never as an answer.

/// How long, by default (the `user_database_wait` setting), a check of
/// who a chain runs as or who submitted a job (at load, at a resume after
/// a restart) waits for the user database before it counts as not
/// confirmed. A chain refused for that is read again every
/// `run_as_recheck`; a resumed job resumes, and its attempts look their
/// user up again when they start.
pub const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Look-ups given up on by [`ask_within`] that have not returned yet;
/// while this many hang, checks do not ask the database at all, so a
/// daemon starting on a hung database waits at most this many
/// `user_database_wait`s before it is ready.
const UNANSWERED_AT_MOST: usize = 2;

static UNANSWERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where a look-up run by [`ask_within`] stands.
enum Waiting {
    Asked,
    GivenUp,
    Answered,
}

/// Why [`ask_within`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The database did not answer within this long.
    GaveUp(std::time::Duration),
    /// Earlier look-ups given up on have not returned: not asked.
    NotAsked,
}

/// Run `ask`, which asks the user database, waiting at most `wait` for
/// it: it runs on a thread of its own, left to finish by itself when it
/// takes longer (a database that hangs keeps it). While
/// [`UNANSWERED_AT_MOST`] such threads have not returned, the database is
/// not asked at all. For the checks at load and at a resume, which run
/// before `READY=1` and in the engine's recovery; an attempt's own look-up
/// waits as long as its timeout allows instead (`executor/prepare.rs`).
pub fn ask_within<T: Send + 'static>(
    wait: std::time::Duration,
    ask: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    use std::sync::atomic::Ordering;
    if UNANSWERED.load(Ordering::Acquire) >= UNANSWERED_AT_MOST {
        return Err(Unanswered::NotAsked);
    }
    let state = std::sync::Arc::new(std::sync::Mutex::new(Waiting::Asked));
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let asked = state.clone();
    let spawned = std::thread::Builder::new()
        .name("user-lookup".into())
        .spawn(move || {
            let result = ask();
            let mut state = asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(*state, Waiting::GivenUp) {
                UNANSWERED.fetch_sub(1, Ordering::AcqRel);
            }
            *state = Waiting::Answered;
            let _ = answer.send(result);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to ask the user database; not asked");
        return Err(Unanswered::NotAsked);
    }
    match answered.recv_timeout(wait) {
        Ok(result) => Ok(result),
        Err(_) => {
            let mut state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(*state, Waiting::Answered) {
                // It answered as the wait ran out (sent under this lock).
                drop(state);
                return answered.try_recv().map_err(|_| Unanswered::GaveUp(wait));
            }
            *state = Waiting::GivenUp;
            UNANSWERED.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(waited = %humantime::format_duration(wait), "the user database did not answer a look-up in time; going on without it");
            Err(Unanswered::GaveUp(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::{Duration, Instant};

    /// A look-up that answers is answered; two that do not are given up
    /// on, after which the database is not asked at all; once they
    /// return, it is asked again.
    #[test]
    fn a_database_that_does_not_answer_is_given_up_on_then_not_asked() {
        let wait = Duration::from_millis(50);
        assert_eq!(ask_within(wait, || 7), Ok(7));

        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let hang = || {
            let released = released.clone();
            move || {
                let _ = released.lock().map(|r| r.recv());
                1
            }
        };
        let began = Instant::now();
        assert_eq!(ask_within(wait, hang()), Err(Unanswered::GaveUp(wait)));
        assert!(began.elapsed() >= wait, "it waited");
        assert_eq!(ask_within(wait, hang()), Err(Unanswered::GaveUp(wait)));

        let asked = Arc::new(AtomicBool::new(false));
        let flag = asked.clone();
        assert_eq!(
            ask_within(wait, move || flag.store(true, Ordering::SeqCst)),
            Err(Unanswered::NotAsked)
        );
        assert!(!asked.load(Ordering::SeqCst), "nothing was asked");

        release.send(()).expect("the first returns");
        release.send(()).expect("the second returns");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UNANSWERED.load(Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "the look-ups returned");
            std::thread::yield_now();
        }
        assert_eq!(ask_within(Duration::from_secs(10), || 3), Ok(3));
    }
}
