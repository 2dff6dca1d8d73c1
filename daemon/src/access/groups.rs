//! The group database as access decisions see it: each group named in an
//! `operator_groups`, `allow` or tenant `groups` entry, kept once looked
//! up and looked up again in the background.
//!
//! Access decisions are synchronous and made on a runtime worker or the
//! engine task, where a look-up that goes to LDAP or SSSD and hangs would
//! stall every connection, or the engine. So a decision reads what is
//! kept here, and look-ups are made on the blocking pool, by one detached
//! task at a time: [`Groups::refresh`] starts one for the groups that are
//! due and waits for it until [`REFRESH_WAIT`] after it started. Each
//! request calls it before it is handled (each HTTP request, and each
//! message of a WebSocket connection), so decisions see the database as
//! it was about [`GROUP_TTL`] ago at most while it answers. Dropping a
//! request does not stop the look-up it started; a look-up that hangs
//! holds one blocking thread, and no other look-up starts until it
//! returns.
//!
//! Each group the configuration names is looked up, on a thread of its
//! own, as soon as the configuration is read (at start and at every
//! reload; up to [`AHEAD_MAX`] new names a read, while fewer than
//! [`GROUPS_KEPT`] are kept), and nothing waits for it there; names it no
//! longer has are forgotten then, so only what it names is refreshed. A
//! decision that needs a group whose first look-up has not answered waits
//! for it until [`FIRST_WAIT`] after that look-up started; a group no
//! look-up was started for yet is looked up the same way by the first
//! decision that names it. So a database that hangs holds the deciding
//! thread (the engine, or a runtime worker) at most that long once per
//! group name, and not at all for a configured group decided on
//! [`FIRST_WAIT`] after the configuration was read; the answer, when it
//! comes, is kept. Until then, and after a first look-up that failed, the
//! group counts as unknown (no members): a decision it would have allowed
//! is refused, never the reverse. A failed one is tried again in the
//! background, 5 s later at the earliest; one that has not returned is
//! not repeated (it would hang too, and hold up the refresh of every other
//! group), so a group whose look-up never returns stays unknown.
//!
//! While the database cannot answer, what it said last is kept, but a
//! member list not confirmed for [`MEMBERS_MAX_AGE`] no longer counts: a
//! member removed during an outage loses the group after five minutes at
//! most. Membership that comes from the caller's own credentials (its
//! primary and supplementary groups, SO_PEERCRED and SO_PEERGROUPS) is
//! checked against the group's id as the database last gave it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{DIRECTORY_MISSING_TTL as MISSING_TTL, DIRECTORY_TTL as GROUP_TTL};

/// How soon a look-up that failed is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How old a member list may be, unconfirmed, and still count.
const MEMBERS_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a request waits for the look-ups it needs before it is handled
/// with what is kept.
const REFRESH_WAIT: Duration = Duration::from_secs(2);
/// How long a decision waits for the first look-up of a group name.
const FIRST_WAIT: Duration = Duration::from_secs(2);
/// Group names [`Groups::look_up_ahead`] starts look-ups for at most, per
/// configuration read: each is a thread while it runs.
const AHEAD_MAX: usize = 64;
/// Groups kept at most; past it the cache starts again empty. Only names
/// in the configuration are ever asked for, so this is far above need.
const GROUPS_KEPT: usize = 1024;

/// One group of the database.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub gid: u32,
    /// The user names its database entry lists as members.
    pub members: Vec<String>,
}

/// A group as a decision may use it.
#[derive(Debug)]
pub struct Found {
    pub group: Arc<Group>,
    /// False once the member list has gone unconfirmed for
    /// [`MEMBERS_MAX_AGE`]: then only the caller's credentials count.
    pub members_current: bool,
}

/// Looks a group up by name: `Ok(None)` when the database has no such
/// group, `Err` when it could not answer.
type LookUp = dyn Fn(&str) -> Result<Option<Group>, nix::Error> + Send + Sync;

/// What is known of one group name.
struct Known {
    /// The database's last answer; None: no such group, or no answer yet.
    group: Option<Arc<Group>>,
    /// When the database last answered for it.
    answered: Option<Instant>,
    /// When a look-up of it last started.
    tried: Instant,
    /// Whether that look-up failed.
    failed: bool,
    /// When the first look-up of the name started, while it has not
    /// answered: decisions wait for it until [`FIRST_WAIT`] after that,
    /// and no other look-up of the name starts meanwhile.
    first: Option<Instant>,
}

impl Known {
    /// A name whose first look-up starts at `now`.
    fn first_asked(now: Instant) -> Known {
        Known {
            group: None,
            answered: None,
            tried: now,
            failed: false,
            first: Some(now),
        }
    }

    fn due(&self, now: Instant) -> bool {
        if self.first.is_some() {
            return false;
        }
        let wait = if self.failed {
            RETRY_AFTER_FAILURE
        } else if self.group.is_some() {
            GROUP_TTL
        } else {
            MISSING_TTL
        };
        now.duration_since(self.tried) >= wait
    }

    fn found(&self, now: Instant) -> Option<Found> {
        let group = self.group.clone()?;
        let members_current = self
            .answered
            .is_some_and(|at| now.duration_since(at) < MEMBERS_MAX_AGE);
        Some(Found {
            group,
            members_current,
        })
    }

    fn record(&mut self, answer: Result<Option<Group>, nix::Error>, now: Instant) {
        self.first = None;
        match answer {
            Ok(group) => {
                self.group = group.map(Arc::new);
                self.answered = Some(now);
                self.failed = false;
            }
            Err(_) => self.failed = true,
        }
    }
}

#[derive(Default)]
struct State {
    known: HashMap<String, Known>,
    /// The look-up in flight, and when it started: its sender is dropped
    /// when it has finished.
    refreshing: Option<(watch::Receiver<()>, Instant)>,
}

/// The cache, with the function that looks a group up.
pub struct Groups {
    state: Mutex<State>,
    /// Told when a first look-up has answered.
    first_answered: Condvar,
    look_up: Box<LookUp>,
}

/// The daemon's groups, looked up through NSS.
pub static GROUPS: LazyLock<Groups> = LazyLock::new(|| {
    Groups::new(Box::new(|name| {
        Ok(nix::unistd::Group::from_name(name)?.map(|g| Group {
            gid: g.gid.as_raw(),
            members: g.mem,
        }))
    }))
});

impl Groups {
    fn new(look_up: Box<LookUp>) -> Groups {
        Groups {
            state: Mutex::default(),
            first_answered: Condvar::new(),
            look_up,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned map is still a
        // map of complete entries.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The group named `name` as kept here; None when the database has no
    /// such group or has not answered for it yet. A name never asked for
    /// is looked up on a thread of its own, waited for at most
    /// [`FIRST_WAIT`] after that look-up started (by this decision or one
    /// before it). A due entry is still answered from, and its look-up
    /// started in the background.
    pub fn get(&'static self, name: &str) -> Option<Found> {
        let now = Instant::now();
        let mut state = self.state();
        let first = match state.known.get(name) {
            Some(Known {
                first: Some(began), ..
            }) => *began,
            Some(known) => {
                let (found, due) = (known.found(now), known.due(now));
                drop(state);
                if due {
                    let _ = self.start_due();
                }
                return found;
            }
            None => {
                if state.known.len() >= GROUPS_KEPT {
                    state.known.clear();
                }
                state
                    .known
                    .insert(name.to_string(), Known::first_asked(now));
                if !self.look_up_first(name) {
                    // No thread: it counts as a failed look-up.
                    if let Some(known) = state.known.get_mut(name) {
                        known.record(Err(nix::Error::EAGAIN), now);
                    }
                    return None;
                }
                now
            }
        };
        let left = (first + FIRST_WAIT).saturating_duration_since(now);
        // Past the wait, a first look-up still running is not waited for
        // again, nor repeated: a second look-up of a name whose first hangs
        // would hang too, and hold up the refresh of every other group
        // with it. Its answer, when it comes, is the newest there is.
        let (state, _) = self
            .first_answered
            .wait_timeout_while(state, left, |state| {
                state.known.get(name).is_some_and(|k| k.first.is_some())
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.known.get(name).and_then(|k| k.found(Instant::now()))
    }

    /// Start the first look-up of each of `names` not asked for yet, each
    /// on a thread of its own, and return at once: called when the
    /// configuration is read, so that a decision made [`FIRST_WAIT`] or
    /// more later finds the group answered, or does not wait for a
    /// database that hangs. At most [`AHEAD_MAX`] names a call; the rest
    /// are looked up by the first decision that needs them. Names kept
    /// that `names` no longer has are forgotten.
    pub fn look_up_ahead<'a>(&'static self, names: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let names: std::collections::HashSet<&str> = names.into_iter().collect();
        let mut asking = Vec::new();
        let mut state = self.state();
        // Names the configuration no longer has are not refreshed any
        // more (a decision that needs one again, a resume of a job whose
        // chain version named it, looks it up first again); one whose
        // first look-up runs stays until it answers.
        state
            .known
            .retain(|name, known| names.contains(name.as_str()) || known.first.is_some());
        for name in names {
            if asking.len() == AHEAD_MAX || state.known.len() >= GROUPS_KEPT {
                break;
            }
            if state.known.contains_key(name) {
                continue;
            }
            state
                .known
                .insert(name.to_string(), Known::first_asked(now));
            asking.push(name.to_string());
        }
        // The threads start after the lock is let go: decisions do not
        // wait for them to be made.
        drop(state);
        for name in asking {
            if !self.look_up_first(&name) {
                if let Some(known) = self.state().known.get_mut(&name) {
                    known.record(Err(nix::Error::EAGAIN), now);
                }
                self.first_answered.notify_all();
            }
        }
    }

    /// Whether the database answers for `name` now: from what is kept if
    /// it answered within [`GROUP_TTL`], else from a look-up made here, on
    /// the calling thread (the first one, if it is in flight, waited for
    /// as [`Groups::get`] does). For a check made outside a request, where
    /// no refresh has run (a job resumed at start, when the configuration
    /// may have been read, and its groups asked for, long before: a
    /// daemon held on a read-only state directory). The caller bounds the
    /// wait (`user_database::ask_within`).
    pub fn confirm(&'static self, name: &str) -> bool {
        let now = Instant::now();
        let fresh = match self.state().known.get(name) {
            Some(known) if known.first.is_some() => None,
            Some(known) => Some(
                !known.failed
                    && known
                        .answered
                        .is_some_and(|at| now.duration_since(at) < GROUP_TTL),
            ),
            None => None,
        };
        match fresh {
            Some(true) => return true,
            // Never asked, or asked first and not answered yet.
            None => {
                let _ = self.get(name);
            }
            Some(false) => {
                let answer = self.ask(name);
                let mut state = self.state();
                if let Some(known) = state.known.get_mut(name) {
                    known.tried = Instant::now();
                    known.record(answer, Instant::now());
                }
            }
        }
        self.answered(name)
    }

    /// Whether the database has answered for `name` within
    /// [`MEMBERS_MAX_AGE`] (that it has no such group counts): false while
    /// it has only failed or not answered yet, or not lately, when a
    /// decision that needs the group cannot be told apart from one made
    /// without it.
    pub fn answered(&self, name: &str) -> bool {
        self.state().known.get(name).is_some_and(|known| {
            known
                .answered
                .is_some_and(|at| at.elapsed() < MEMBERS_MAX_AGE)
        })
    }

    /// Ask the database about `name`, on the calling thread; a look-up
    /// that panicked failed (and is tried again, as any failure).
    fn ask(&self, name: &str) -> Result<Option<Group>, nix::Error> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.look_up)(name)))
            .unwrap_or(Err(nix::Error::EIO))
    }

    /// Start the first look-up of `name` on a thread of its own, which
    /// keeps the answer however late it comes. False when no thread can
    /// be started.
    fn look_up_first(&'static self, name: &str) -> bool {
        let name = name.to_string();
        let spawned = std::thread::Builder::new()
            .name("group-lookup".into())
            .spawn(move || {
                let answer = self.ask(&name);
                let mut state = self.state();
                if let Some(known) = state.known.get_mut(&name) {
                    known.record(answer, Instant::now());
                }
                drop(state);
                self.first_answered.notify_all();
            });
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "cannot start a thread to look up a group");
        }
        spawned.is_ok()
    }

    /// Start a look-up of the groups that are due, unless one is in
    /// flight, and wait for the one in flight until [`REFRESH_WAIT`] after
    /// it started: once a look-up that hangs has been waited for that
    /// long, requests go on at once.
    pub async fn refresh(&'static self) {
        let Some((mut done, started)) = self.start_due() else {
            return;
        };
        let left = REFRESH_WAIT.saturating_sub(started.elapsed());
        // Err when the look-up has finished: its sender is gone.
        let _ = tokio::time::timeout(left, done.changed()).await;
    }

    fn start_due(&'static self) -> Option<(watch::Receiver<()>, Instant)> {
        let mut state = self.state();
        if let Some((in_flight, started)) = &state.refreshing {
            // A task dropped before it ended (its runtime stopped) is
            // not in flight.
            if in_flight.has_changed().is_ok() {
                return Some((in_flight.clone(), *started));
            }
            state.refreshing = None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let now = Instant::now();
        let due: Vec<String> = state
            .known
            .iter_mut()
            .filter(|(_, known)| known.due(now))
            .map(|(name, known)| {
                known.tried = now;
                name.clone()
            })
            .collect();
        if due.is_empty() {
            return None;
        }
        let (finished, done) = watch::channel(());
        state.refreshing = Some((done.clone(), now));
        // Detached: a request dropped while it waits does not stop it.
        runtime.spawn(async move {
            let names = due.clone();
            let answers = tokio::task::spawn_blocking(move || {
                due.into_iter()
                    .map(|name| {
                        let answer = self.ask(&name);
                        (name, answer)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            // A task cancelled (the runtime stopping) failed for every
            // name it had.
            .unwrap_or_else(|_| {
                names
                    .into_iter()
                    .map(|name| (name, Err(nix::Error::EIO)))
                    .collect()
            });
            let mut state = self.state();
            let now = Instant::now();
            for (name, answer) in answers {
                if let Some(known) = state.known.get_mut(&name) {
                    known.record(answer, now);
                }
            }
            state.refreshing = None;
            drop(finished);
        });
        Some((done, now))
    }

    /// Make every kept entry older by `by`, as if that much time had
    /// passed since its look-up (for tests). False when the monotonic
    /// clock has not run that long (a machine just booted).
    #[cfg(test)]
    fn age(&self, by: Duration) -> bool {
        for known in self.state().known.values_mut() {
            let (Some(tried), answered) = (
                known.tried.checked_sub(by),
                known.answered.map(|at| at.checked_sub(by)),
            ) else {
                return false;
            };
            if answered == Some(None) {
                return false;
            }
            known.tried = tried;
            known.answered = answered.flatten();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    fn group(members: &[&str]) -> Group {
        Group {
            gid: 4242,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// A cache whose database answers `etl` with member alice the first
    /// time and with `later()` from then on, and the count of look-ups.
    fn alice_then(
        later: impl Fn() -> Result<Option<Group>, nix::Error> + Send + Sync + 'static,
    ) -> (&'static Groups, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let groups = Groups::new(Box::new(move |_| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(Some(group(&["alice"])));
            }
            later()
        }));
        (Box::leak(Box::new(groups)), calls)
    }

    #[tokio::test]
    async fn the_group_database_is_found_by_name() {
        let Ok(Some(root)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0)) else {
            return;
        };
        let found = GROUPS.get(&root.name).expect("group 0 is found by name");
        assert_eq!(found.group.gid, 0);
        assert!(found.members_current);
        assert!(GROUPS.get("no-such-group-here-at-all").is_none());
    }

    /// A request dropped while its look-up runs loses nothing: the look-up
    /// goes on and its answer is kept.
    #[tokio::test]
    async fn a_dropped_request_does_not_lose_its_look_up() {
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let (groups, calls) = alice_then(move || {
            let _ = released.lock().expect("lock").recv();
            Ok(Some(group(&["bob"])))
        });
        assert_eq!(groups.get("etl").expect("found").group.members, ["alice"]);
        if !groups.age(GROUP_TTL) {
            return;
        }
        let request = tokio::spawn(groups.refresh());
        // Until the look-up has been called.
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        request.abort();
        assert!(request.await.is_err(), "the request was dropped");
        release.send(()).expect("the look-up waits");
        // A later request waits for the one in flight, starting no other.
        groups.refresh().await;
        assert_eq!(groups.get("etl").expect("found").group.members, ["bob"]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A look-up that hangs holds requests until [`REFRESH_WAIT`] after it
    /// started, then no longer; it is never started twice, and decisions
    /// go on with what was kept.
    /// (Real time: tokio does not advance paused time while a blocking
    /// task runs.)
    #[tokio::test]
    async fn a_hung_look_up_is_waited_for_briefly_and_once() {
        let (_never, hangs) = mpsc::channel::<()>();
        let hangs = Mutex::new(hangs);
        let (groups, calls) = alice_then(move || {
            let _ = hangs.lock().expect("lock").recv();
            Ok(None)
        });
        groups.get("etl");
        if !groups.age(GROUP_TTL) {
            return;
        }
        let started = Instant::now();
        groups.refresh().await;
        let waited = started.elapsed();
        assert!(
            waited >= REFRESH_WAIT && waited < REFRESH_WAIT + Duration::from_secs(1),
            "the first request waited its bound, not more: {waited:?}"
        );
        let started = Instant::now();
        groups.refresh().await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "later requests go on at once"
        );
        let found = groups.get("etl").expect("kept while the database hangs");
        assert_eq!(found.group.members, ["alice"]);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one look-up in flight");
    }

    /// A failed answer keeps what was known, and a member list left
    /// unconfirmed for [`MEMBERS_MAX_AGE`] stops counting.
    #[tokio::test]
    async fn failures_keep_the_group_but_not_old_members() {
        let (groups, calls) = alice_then(|| Err(nix::Error::EIO));
        groups.get("etl");
        if !groups.age(GROUP_TTL) {
            return;
        }
        groups.refresh().await;
        let found = groups.get("etl").expect("kept after a failure");
        assert!(found.members_current);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Five minutes since the database last answered, though a look-up
        // was tried (and failed) a moment ago.
        if !groups.age(MEMBERS_MAX_AGE) {
            return;
        }
        groups.refresh().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "tried again");
        let found = groups.get("etl").expect("the group is still known");
        assert_eq!(found.group.gid, 4242);
        assert!(!found.members_current, "five minutes unconfirmed");
    }

    /// A cache whose every look-up waits until the sender is sent to,
    /// then answers `etl` with member alice, and the count of look-ups.
    fn answering_when_released() -> (&'static Groups, Arc<AtomicUsize>, mpsc::Sender<()>) {
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let groups = Groups::new(Box::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = released.lock().expect("lock").recv();
            Ok(Some(group(&["alice"])))
        }));
        (Box::leak(Box::new(groups)), calls, release)
    }

    /// A first look-up that hangs holds the decisions that need its group
    /// until [`FIRST_WAIT`] after it started, no longer, and never starts
    /// twice; they go on without the group (refused where it would have
    /// let them in), and its answer is kept when it comes.
    #[test]
    fn a_hung_first_look_up_is_waited_for_briefly_and_kept_when_it_answers() {
        let (groups, calls, release) = answering_when_released();
        let started = Instant::now();
        let first = std::thread::spawn(move || groups.get("etl").is_none());
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let meanwhile = std::thread::spawn(move || groups.get("etl").is_none());
        assert!(first.join().expect("first decision"), "no group yet");
        assert!(meanwhile.join().expect("second decision"), "no group yet");
        let waited = started.elapsed();
        assert!(
            waited >= FIRST_WAIT && waited < FIRST_WAIT + Duration::from_secs(1),
            "the decisions waited the bound, not more: {waited:?}"
        );
        let later = Instant::now();
        assert!(groups.get("etl").is_none());
        assert!(
            later.elapsed() < Duration::from_millis(500),
            "a later decision goes on at once"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one look-up, not one each");
        release.send(()).expect("the look-up waits");
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            if let Some(found) = groups.get("etl") {
                break found;
            }
            assert!(Instant::now() < deadline, "the late answer is kept");
            std::thread::yield_now();
        };
        assert_eq!(found.group.members, ["alice"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Decisions that need the same group at once share its first look-up
    /// and all get its answer.
    #[test]
    fn decisions_at_once_share_the_first_look_up() {
        let (groups, calls, release) = answering_when_released();
        let deciding: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || groups.get("etl").map(|f| f.group.gid)))
            .collect();
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        release.send(()).expect("the look-up waits");
        for decision in deciding {
            assert_eq!(decision.join().expect("decided"), Some(4242));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Names looked up ahead are asked for at once, each once, without
    /// waiting for a database that hangs; a decision that needs one then
    /// shares that look-up rather than starting its own, and gets its
    /// answer.
    #[test]
    fn names_looked_up_ahead_are_asked_for_once_without_waiting() {
        let (groups, calls, release) = answering_when_released();
        let started = Instant::now();
        groups.look_up_ahead(["etl", "ops", "etl"]);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "looking up ahead does not wait for the database"
        );
        while calls.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        let deciding = std::thread::spawn(move || groups.get("etl").map(|f| f.group.gid));
        release.send(()).expect("a look-up waits");
        release.send(()).expect("the other look-up waits");
        assert_eq!(deciding.join().expect("decided"), Some(4242));
        groups.look_up_ahead(["etl", "ops"]);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one look-up per name, none for names already asked for"
        );
    }

    /// A configuration read again forgets the groups it no longer names,
    /// so they are not refreshed for nothing.
    #[test]
    fn groups_no_longer_named_are_forgotten() {
        let (groups, calls) = alice_then(|| Ok(Some(group(&["bob"]))));
        groups.look_up_ahead(["etl", "ops"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(groups.answered("etl") && groups.answered("ops")) {
            assert!(Instant::now() < deadline, "both answered");
            std::thread::yield_now();
        }
        groups.look_up_ahead(["etl"]);
        assert!(groups.answered("etl"), "still named: kept");
        assert!(!groups.answered("ops"), "no longer named: forgotten");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A check outside a request asks again for a group whose answer is
    /// older than [`GROUP_TTL`], on its own thread, and not for one
    /// answered lately.
    #[test]
    fn confirming_asks_again_for_an_old_answer_only() {
        let (groups, calls) = alice_then(|| Ok(Some(group(&["bob"]))));
        assert!(groups.confirm("etl"), "asked and answered");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(groups.confirm("etl"), "answered lately");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not asked again");
        if !groups.age(GROUP_TTL) {
            return;
        }
        assert!(groups.confirm("etl"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "an old answer is asked again"
        );
        assert_eq!(groups.get("etl").expect("found").group.members, ["bob"]);
    }

    /// A first look-up that fails counts as no group and is not retried
    /// in place.
    #[tokio::test]
    async fn a_failed_first_look_up_is_retried_in_the_background() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let groups: &'static Groups = Box::leak(Box::new(Groups::new(Box::new(move |_| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(nix::Error::EIO);
            }
            Ok(Some(group(&["alice"])))
        }))));
        assert!(groups.get("etl").is_none());
        assert!(groups.get("etl").is_none(), "not looked up in place again");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        if !groups.age(RETRY_AFTER_FAILURE) {
            return;
        }
        groups.refresh().await;
        assert_eq!(groups.get("etl").expect("found").group.members, ["alice"]);
    }
}
