//! User names of the uids that connect, for a caller's `user`: what
//! `user:NAME` in an `allow` list and group member lists are matched
//! against, and what the audit and `submitted_by` show.
//!
//! A look-up can go to LDAP or SSSD and take seconds when they are unwell,
//! so it runs on the blocking pool from a task of its own (never in the
//! accept loop), and a name is reused for [`NAME_TTL`], as nscd and SSSD
//! cache it: a client that connects a thousand times looks its name up
//! once. One look-up per uid is under way at a time, and a request waits
//! for it at most until [`NAME_WAIT`] (10 s) after it began: past that it
//! goes on with the name known before, or `uid:N` (which matches no `user:NAME`), while the look-up
//! goes on and its answer is kept for the next request. A database that
//! hangs therefore holds one thread per uid that connects, not one per
//! request, and delays requests by seconds, not for ever. The price is the
//! cache's: a uid renamed, or deleted and given to someone else, keeps its
//! old name for up to a minute here, and for up to [`STALE_MAX`] (ten
//! minutes) while the database fails or is late to answer; after that it
//! is `uid:N`, which matches no `user:NAME` (only a literal `user:uid:N`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{DIRECTORY_MISSING_TTL as MISSING_TTL, DIRECTORY_TTL as NAME_TTL};

/// Names kept at most; past it the cache starts again empty.
const NAMES_KEPT: usize = 4096;

/// Look-ups under way at most (one per uid); past it a request goes on
/// with what is known.
const LOOKUPS_KEPT: usize = 256;

/// How long a name whose look-up fails or is late is still used, past
/// [`NAME_TTL`]; after that the caller is `uid:N`, which no `user:NAME`
/// matches.
const STALE_MAX: Duration = Duration::from_secs(600);

/// How long a request waits for its caller's name to be looked up: long
/// enough for a slow directory server (SSSD's LDAP search timeout is 6 s
/// by default), short of a client's patience.
const NAME_WAIT: Duration = Duration::from_secs(10);

/// What is known of one uid.
#[derive(Clone)]
struct Known {
    /// None: the user database has no such uid.
    name: Option<String>,
    at: Instant,
}

#[derive(Default)]
struct State {
    known: HashMap<u32, Known>,
    /// Look-ups under way, by uid, and when each began; each ends by
    /// dropping its sender.
    looking: HashMap<u32, (watch::Receiver<()>, Instant)>,
}

/// How a name is looked up: the user database, or a test's stand-in.
type LookUp = fn(u32) -> nix::Result<Option<String>>;

pub struct UserNames {
    state: Mutex<State>,
    look_up: LookUp,
    /// [`NAME_WAIT`], shorter in tests.
    wait: Duration,
}

impl Default for UserNames {
    fn default() -> UserNames {
        UserNames::with_look_up(
            |uid| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .map(|u| u.map(|u| u.name))
            },
            NAME_WAIT,
        )
    }
}

impl UserNames {
    fn with_look_up(look_up: LookUp, wait: Duration) -> UserNames {
        UserNames {
            state: Mutex::default(),
            look_up,
            wait,
        }
    }

    /// The name of `uid`, or `uid:N` when it has none (or none is known
    /// yet and the database did not answer within [`NAME_WAIT`] of the
    /// look-up's start: later requests do not wait again for the same
    /// hung look-up).
    pub async fn name(self: &Arc<Self>, uid: u32) -> String {
        let now = Instant::now();
        let (cached, mut under_way, wait) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let cached = state.known.get(&uid).cloned();
            if let Some(known) = &cached {
                let ttl = if known.name.is_some() {
                    NAME_TTL
                } else {
                    MISSING_TTL
                };
                if now.duration_since(known.at) < ttl {
                    return shown(uid, known.name.clone());
                }
            }
            // A name older than STALE_MAX is not used in its stead: a uid
            // renamed, or given to someone else, would otherwise keep
            // matching `user:OLDNAME` for as long as the database is down.
            let cached = cached
                .filter(|known| now.duration_since(known.at) < STALE_MAX)
                .and_then(|known| known.name);
            let (under_way, began) = match state.looking.get(&uid) {
                Some(under_way) => under_way.clone(),
                None if state.looking.len() >= LOOKUPS_KEPT => return shown(uid, cached),
                None => {
                    let (done, under_way) = watch::channel(());
                    state.looking.insert(uid, (under_way.clone(), now));
                    self.start_look_up(uid, done);
                    (under_way, now)
                }
            };
            // Waited for since it began: a look-up that has hung for
            // longer than the wait holds back no request any more.
            (cached, under_way, self.wait.saturating_sub(now - began))
        };
        // Err once the look-up's sender is dropped: it has ended.
        let _ = tokio::time::timeout(wait, under_way.changed()).await;
        let answered = (self.state.lock().unwrap_or_else(PoisonError::into_inner))
            .known
            .get(&uid)
            .filter(|known| known.at >= now)
            .map(|known| known.name.clone());
        match answered {
            Some(name) => shown(uid, name),
            // Not yet, or the database could not answer (a directory
            // server down): the name known before, if any, rather than
            // none.
            None => shown(uid, cached),
        }
    }

    /// Look `uid` up on the blocking pool, detached from the request that
    /// asked: its answer is kept even if nobody waits for it any more.
    fn start_look_up(self: &Arc<Self>, uid: u32, done: watch::Sender<()>) {
        let names = Arc::clone(self);
        let look_up = self.look_up;
        tokio::spawn(async move {
            let looked_up = tokio::task::spawn_blocking(move || look_up(uid)).await;
            let mut state = names.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.looking.remove(&uid);
            if let Ok(Ok(name)) = looked_up {
                if state.known.len() >= NAMES_KEPT {
                    state.known.clear();
                }
                state.known.insert(
                    uid,
                    Known {
                        name,
                        at: Instant::now(),
                    },
                );
            }
            drop(state);
            drop(done);
        });
    }
}

fn shown(uid: u32, name: Option<String>) -> String {
    name.unwrap_or_else(|| format!("uid:{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn names_are_looked_up_and_kept() {
        let names = Arc::new(UserNames::default());
        let uid = nix::unistd::getuid().as_raw();
        let expected = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid:{uid}"), |u| u.name);
        assert_eq!(names.name(uid).await, expected);
        assert_eq!(names.name(uid).await, expected, "from the cache");
        // A uid no database knows (the largest a uid_t holds but -1).
        assert_eq!(
            names.name(u32::MAX - 1).await,
            format!("uid:{}", u32::MAX - 1)
        );
    }

    static SLOW_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    /// What a request waits here.
    const WAIT: Duration = Duration::from_millis(300);

    /// A user database that takes longer than a request waits.
    fn slow(uid: u32) -> nix::Result<Option<String>> {
        SLOW_LOOKUPS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(WAIT * 4);
        Ok(Some(format!("user{uid}")))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_database_delays_requests_by_the_wait_only_and_once_per_uid() {
        let names = Arc::new(UserNames::with_look_up(slow, WAIT));
        let started = Instant::now();
        let asked: Vec<_> = (0..8)
            .map(|_| {
                let names = Arc::clone(&names);
                tokio::spawn(async move { names.name(4242).await })
            })
            .collect();
        for request in asked {
            assert_eq!(request.await.expect("no panic"), "uid:4242");
        }
        let waited = started.elapsed();
        assert!(
            waited >= WAIT && waited < WAIT * 3,
            "requests waited {waited:?}"
        );
        assert_eq!(
            SLOW_LOOKUPS.load(Ordering::SeqCst),
            1,
            "one look-up for the uid"
        );
        // A request while that look-up still hangs, past the wait, does
        // not wait for it again.
        let again = Instant::now();
        assert_eq!(names.name(4242).await, "uid:4242");
        assert!(
            again.elapsed() < WAIT / 2,
            "a late request waited {:?}",
            again.elapsed()
        );
        // Its answer is kept for the next request.
        let deadline = Instant::now() + WAIT * 20;
        while names.name(4242).await != "user4242" {
            assert!(Instant::now() < deadline, "the late answer is kept");
            tokio::time::sleep(WAIT / 10).await;
        }
        assert_eq!(SLOW_LOOKUPS.load(Ordering::SeqCst), 1);
    }
}
