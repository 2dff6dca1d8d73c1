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
/// while this many hang, checks do not ask the database (but for one probe
/// every [`PROBE_EVERY`]), so a daemon starting on a hung database waits
/// at most this many `user_database_wait`s before it is ready.
const UNANSWERED_AT_MOST: usize = 2;

/// While [`UNANSWERED_AT_MOST`] look-ups hang, one check in this long asks
/// all the same: a database that answers again is noticed (a look-up stuck
/// for good on a dead connection would otherwise stop every later check).
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Threads left hanging at most, probes included; past it nothing asks.
const HANGING_AT_MOST: usize = 16;

static UNANSWERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

static LAST_PROBE: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Where a look-up run by [`ask_within`] stands.
enum Waiting {
    Asked,
    GivenUp,
    Answered,
}

/// Ends a look-up's thread, however it ends (a panic in the look-up too):
/// a look-up given up on stops counting as hanging.
struct Finished(std::sync::Arc<std::sync::Mutex<Waiting>>);

impl Drop for Finished {
    fn drop(&mut self) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(*state, Waiting::GivenUp) {
            UNANSWERED.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        *state = Waiting::Answered;
    }
}

/// Why [`ask_within`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The database did not answer within this long.
    GaveUp(std::time::Duration),
    /// Earlier look-ups given up on have not returned: not asked.
    NotAsked,
}

/// Whether a check may ask the database now, given how many look-ups
/// hang.
fn may_ask() -> bool {
    let hanging = UNANSWERED.load(std::sync::atomic::Ordering::Acquire);
    if hanging < UNANSWERED_AT_MOST {
        return true;
    }
    if hanging >= HANGING_AT_MOST {
        return false;
    }
    let mut last = LAST_PROBE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
        return false;
    }
    *last = Some(std::time::Instant::now());
    true
}

/// Run `ask`, which asks the user database, waiting at most `wait` for
/// it: it runs on a thread of its own, left to finish by itself when it
/// takes longer (a database that hangs keeps it). While
/// [`UNANSWERED_AT_MOST`] such threads have not returned, the database is
/// asked only by a probe every [`PROBE_EVERY`]. For the checks at load and
/// at a resume, which run before `READY=1` and in the engine's recovery;
/// an attempt's own look-up waits as long as its timeout allows instead
/// (`executor/prepare.rs`), and a reprocess's check (which a client asks
/// for) waits in turns of its own (`run_as::look_up_in_turn`).
pub fn ask_within<T: Send + 'static>(
    wait: std::time::Duration,
    ask: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::RecvTimeoutError;
    if !may_ask() {
        return Err(Unanswered::NotAsked);
    }
    let state = std::sync::Arc::new(std::sync::Mutex::new(Waiting::Asked));
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let finished = Finished(state.clone());
    let spawned = std::thread::Builder::new()
        .name("user-lookup".into())
        .spawn(move || {
            let _finished = finished;
            let _ = answer.send(ask());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to ask the user database; not asked");
        return Err(Unanswered::NotAsked);
    }
    match answered.recv_timeout(wait) {
        Ok(result) => Ok(result),
        // The look-up panicked: nothing hangs.
        Err(RecvTimeoutError::Disconnected) => Err(Unanswered::GaveUp(wait)),
        Err(RecvTimeoutError::Timeout) => {
            let mut state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(*state, Waiting::Answered) {
                // It answered as the wait ran out.
                drop(state);
                return answered.try_recv().map_err(|_| Unanswered::GaveUp(wait));
            }
            *state = Waiting::GivenUp;
            if UNANSWERED.fetch_add(1, Ordering::AcqRel) + 1 == UNANSWERED_AT_MOST {
                // The first probe comes a full PROBE_EVERY after this.
                *LAST_PROBE
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now());
            }
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
    /// on, after which nothing asks but a probe once in `PROBE_EVERY`;
    /// once they return, it is asked again.
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
        // Two hang: nothing is asked...
        let asked = Arc::new(AtomicBool::new(false));
        let flag = asked.clone();
        assert_eq!(
            ask_within(wait, move || flag.store(true, Ordering::SeqCst)),
            Err(Unanswered::NotAsked)
        );
        assert!(!asked.load(Ordering::SeqCst), "nothing was asked");
        // ...but for a probe once PROBE_EVERY has passed (made to have
        // passed here), and then none again for as long.
        if let Some(long_ago) = Instant::now().checked_sub(PROBE_EVERY) {
            *LAST_PROBE.lock().expect("not poisoned") = Some(long_ago);
            assert_eq!(ask_within(wait, hang()), Err(Unanswered::GaveUp(wait)));
            assert_eq!(ask_within(wait, || 4), Err(Unanswered::NotAsked));
        }

        for _ in 0..3 {
            release.send(()).expect("a hung look-up returns");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while UNANSWERED.load(Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "the look-ups returned");
            std::thread::yield_now();
        }
        assert_eq!(ask_within(Duration::from_secs(10), || 3), Ok(3));
        // A look-up that panics leaves nothing counted as hanging.
        let panicked: Result<(), _> =
            ask_within(Duration::from_secs(10), || panic!("a bad look-up"));
        assert_eq!(panicked, Err(Unanswered::GaveUp(Duration::from_secs(10))));
        assert_eq!(UNANSWERED.load(Ordering::Acquire), 0);
    }
}
