//! Start-up recovery: rebuild the engine's state from the jobs a previous
//! daemon left queued or running.
//!
//! Attempts recorded as running belonged to a daemon that is gone. If their
//! process group is still alive (same pid and same start time), it is killed
//! first so two copies never run; then the attempt is marked `interrupted`
//! and the activity runs again with its last checkpoint. An interruption does
//! not use up a retry, but more than `max_interruptions` fail the activity.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_workflow::{Chain, parse_chain};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::Engine;
use super::job::{JobRun, resolve_target};
use crate::executor::start_time;
use crate::store::{self, StoreError, StoredJob, WriteOp};

impl Engine {
    pub(super) fn recover(&mut self) -> Result<(), StoreError> {
        let stored = self.store.read_now(store::unfinished_jobs)?;
        if stored.is_empty() {
            return Ok(());
        }
        let mut chains: HashMap<(String, String), Option<Arc<Chain>>> = HashMap::new();
        let mut resumed = 0;
        for job in stored {
            let key = (job.version.clone(), chain_of(&job.target).to_string());
            let chain = match chains.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = self.pinned_chain(&key.0, &key.1)?;
                    chains.insert(key, c.clone());
                    c
                }
            };
            let Some(chain) = chain else {
                tracing::error!(HF_JOB_ID = job.id, version = %job.version, "cannot resume job: its definition is missing or no longer valid");
                self.ops.push(WriteOp::JobState {
                    id: job.id,
                    state: JobState::Failed.as_str(),
                    started_at: None,
                    finished_at: Some(store::now_ms()),
                    reason: Some("its chain definition could not be re-read on restart".into()),
                    alerts: job.alerts,
                });
                continue;
            };
            if let Err(refused) = self.may_resume(&job, &chain) {
                self.refuse_resume(&job, &chain, refused);
                continue;
            }
            let (params, secret) = match self.stored_params(&job) {
                Ok(found) => found,
                Err(message) => {
                    tracing::error!(HF_JOB_ID = job.id, %message, "cannot resume job");
                    self.ops.push(WriteOp::JobState {
                        id: job.id,
                        state: JobState::Failed.as_str(),
                        started_at: None,
                        finished_at: Some(store::now_ms()),
                        reason: Some(message),
                        alerts: job.alerts,
                    });
                    continue;
                }
            };
            self.resume(job, chain, params, secret);
            resumed += 1;
        }
        tracing::info!(jobs = resumed, "resumed unfinished jobs");
        self.ops.push(self.outbox.recovered(resumed));
        Ok(())
    }

    /// The exact definition a job of chain `name` was submitted with. Two
    /// files with the same text share a version (and the stored row names
    /// the first), so the name is matched too, and a stored text is read as
    /// the job's own chain's file.
    pub(super) fn pinned_chain(
        &self,
        version: &str,
        name: &str,
    ) -> Result<Option<Arc<Chain>>, StoreError> {
        if let Some(chain) = self
            .registry
            .borrow()
            .entries
            .values()
            .filter_map(|e| e.chain.as_ref())
            .find(|c| c.version == version && c.name == name)
        {
            return Ok(Some(chain.clone()));
        }
        let version = version.to_string();
        let source = self
            .store
            .read_now(move |conn| store::definition_source(conn, &version))?;
        Ok(source.and_then(|(file, text)| {
            let file = std::path::Path::new(&file);
            let file = if file.file_stem().is_some_and(|stem| stem == name) {
                file.to_path_buf()
            } else {
                file.with_file_name(format!("{name}.toml"))
            };
            parse_chain(&file, &text)
                .ok()
                .filter(|c| c.name == name)
                .map(Arc::new)
        }))
    }

    fn resume(
        &mut self,
        stored: StoredJob,
        chain: Arc<Chain>,
        params: serde_json::Map<String, serde_json::Value>,
        secret: BTreeSet<String>,
    ) {
        let included = match resolve_target(&chain, &stored.target, stored.until.as_deref()) {
            Ok(i) => i,
            Err(_) => {
                let mut i = vec![false; chain.activities.len()];
                for a in &stored.activities {
                    if let Some(slot) = i.get_mut(a.idx) {
                        *slot = true;
                    }
                }
                i
            }
        };
        let mut job = JobRun::new(
            stored.id,
            chain.clone(),
            stored.target.clone(),
            &included,
            params,
            stored.tenant.clone(),
            stored.priority,
        );
        job.secret = secret;
        job.run_id = stored.run_id;
        job.until = stored.until.clone();
        job.state = stored.state;
        job.alerts = stored.alerts;
        job.started_at = stored.started_at;
        job.simulated = stored.simulated;
        job.scheduled = stored.scheduled;
        job.outcome = stored.outcome;
        if stored.outcome == Some(JobState::Cancelled) {
            // A cancelled job's handlers get `kill_grace` again after a
            // restart, as they did before it.
            self.effects.push(super::Effect::Timer(
                self.settings.kill_grace,
                super::Command::HandlersDue { job_id: stored.id },
            ));
        }
        let max_interruptions = self.settings.max_interruptions;
        let mut adoptions = Vec::new();
        for sa in &stored.activities {
            let Some(act) = job.acts.get_mut(sa.idx) else {
                continue;
            };
            act.attempts = sa.attempts.last().map(|a| a.number).unwrap_or(0);
            act.interruptions = sa.interruptions;
            act.checkpoint = sa.checkpoint.clone();
            act.outputs = sa.outputs.clone();
            act.progress = sa.progress;
            let adopted_before = adoptions.len();
            if chain.activities[sa.idx].foreach.is_some() {
                act.fanout = self.resume_fanout(
                    stored.id,
                    sa,
                    &chain.activities[sa.idx],
                    stored.simulated,
                    &mut adoptions,
                );
            }
            let items_adopted = adoptions.len() > adopted_before;
            let Some(act) = job.acts.get_mut(sa.idx) else {
                continue;
            };
            act.last_error = sa
                .attempts
                .last()
                .and_then(super::handlers::error_of_stored);
            let mut state = sa.state;
            let activity_def = &chain.activities[sa.idx];
            // A Slurm attempt outlives the daemon: adopted, not interrupted.
            let adoption = super::adopt::adopts(activity_def, stored.simulated)
                .then(|| {
                    sa.attempts
                        .iter()
                        .find(|a| a.state == AttemptState::Running)
                })
                .flatten()
                .map(|a| super::adopt::Adoption {
                    idx: sa.idx,
                    number: a.number,
                    slurm_job_id: a.slurm_job_id,
                    started_at: a.started_at,
                    control_offset: a.control_offset,
                    item: None,
                });
            let adopted = adoption.is_some() || items_adopted;
            adoptions.extend(adoption);
            let leftovers: Vec<Leftover> = sa
                .attempts
                .iter()
                .filter(|a| a.state == AttemptState::Running && !adopted)
                .map(|a| self.leftover(stored.id, sa.idx, activity_def, a))
                .collect();
            kill_leftovers(&leftovers, &self.settings.database().display().to_string());
            for attempt in sa
                .attempts
                .iter()
                .filter(|a| a.state == AttemptState::Running && !adopted)
            {
                act.interruptions += 1;
                let end = self.interrupted_end(stored.id, sa.idx, attempt.number, store::now_ms());
                self.ops.push(WriteOp::AttemptEnd(Box::new(end)));
                tracing::warn!(HF_JOB_ID = stored.id, HF_ACTIVITY = %chain.activities[sa.idx].path, HF_ATTEMPT = attempt.number, "attempt interrupted by a daemon restart");
            }
            if matches!(state, ActivityState::Running | ActivityState::RetryWait) && !adopted {
                state = ActivityState::Pending;
            }
            if act.interruptions != sa.interruptions {
                self.ops.push(WriteOp::ActivityInterruptions {
                    job_id: stored.id,
                    idx: sa.idx,
                    interruptions: act.interruptions,
                });
            }
            if state == ActivityState::Pending && act.interruptions > max_interruptions {
                tracing::error!(HF_JOB_ID = stored.id, HF_ACTIVITY = %chain.activities[sa.idx].path, interruptions = act.interruptions, "activity interrupted too often; failing it");
                state = ActivityState::Failed;
                if chain.activities[sa.idx].on_failure == holdfast_workflow::OnFailure::Continue {
                    job.alerts += 1;
                    self.ops.push(WriteOp::JobAlert {
                        id: stored.id,
                        alerts: job.alerts,
                        text: format!(
                            "{} was interrupted {} times (max_interruptions = {max_interruptions}); \
                             the job goes on (on_failure = \"continue\")",
                            chain.activities[sa.idx].path, act.interruptions
                        ),
                    });
                } else if chain.activities[sa.idx].handler.is_none() {
                    job.failed = true;
                    self.ops.push(WriteOp::JobState {
                        id: stored.id,
                        state: job.state.as_str(),
                        started_at: None,
                        finished_at: None,
                        reason: Some(format!(
                            "activity {} was interrupted {} times (max_interruptions = {max_interruptions})",
                            chain.activities[sa.idx].path, act.interruptions
                        )),
                        alerts: job.alerts,
                    });
                }
            }
            if state != sa.state {
                self.ops.push(WriteOp::ActivityState {
                    job_id: stored.id,
                    idx: sa.idx,
                    state: state.as_str(),
                });
            }
            act.state = Some(state);
            if state == ActivityState::Failed
                && chain.activities[sa.idx].on_failure == holdfast_workflow::OnFailure::Fail
                && chain.activities[sa.idx].handler.is_none()
            {
                job.failed = true;
            }
        }
        job.recount();
        // Dependants of an activity that failed for good and were never
        // marked (a crash between the two writes) are skipped now.
        let failed: Vec<usize> = (0..job.acts.len())
            .filter(|&i| {
                job.acts[i].included
                    && job.acts[i].state() == ActivityState::Failed
                    && !job.releases_dependants(i)
            })
            .collect();
        let id = job.id;
        self.enqueue(job);
        for idx in failed {
            self.skip_dependants(id, idx);
        }
        if let Some(job) = self.jobs.get(&id) {
            // A job already running keeps its place under its chain's
            // concurrency: admit it at once.
            if job.state == JobState::Running {
                let chain = job.concurrency_key();
                let priority = job.priority;
                if let Some(q) = self.queued.get_mut(&chain) {
                    q.remove(&(std::cmp::Reverse(priority), id));
                }
                *self.admitted_per_chain.entry(chain).or_default() += 1;
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.admitted = true;
                }
                self.refresh(id);
                self.finish_if_done(id);
            }
        }
        let mut fan_outs = BTreeSet::new();
        for adoption in adoptions {
            if adoption.item.is_some() {
                fan_outs.insert(adoption.idx);
            }
            self.adopt(id, adoption);
        }
        // Items not adopted (interrupted, never started) start beside
        // the adopted ones.
        for idx in fan_outs {
            self.fanout_settled(id, idx);
        }
        self.refresh(id);
    }
}

/// The chain a target (`chain`, `chain.process`, ...) belongs to.
pub(super) fn chain_of(target: &str) -> &str {
    target.split('.').next().unwrap_or_default()
}

/// An attempt a dead daemon left `running`.
pub(super) struct Leftover {
    pub job_id: u64,
    pub process: String,
    pub activity: String,
    pub attempt: u32,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// The uid the attempt's processes ran as (the activity's run-as user,
    /// or the daemon's own); None when it cannot be told, and then the
    /// recorded pid and group are not trusted.
    pub owner: Option<u32>,
    /// When the attempt started (ms since the epoch), to tell an attempt of
    /// an earlier boot, whose pid and group ids mean nothing now.
    pub started_at: Option<i64>,
}

impl Engine {
    /// The end of an attempt a dead or stopped daemon left running: it is
    /// `interrupted` (resumed with its checkpoint), with a fresh error id
    /// and the text saying whether the daemon crashed or was stopped.
    pub(super) fn interrupted_end(
        &mut self,
        job_id: u64,
        idx: usize,
        number: u32,
        finished_at: i64,
    ) -> store::AttemptEnd {
        store::AttemptEnd {
            job_id,
            idx,
            number,
            state: AttemptState::Interrupted.as_str(),
            exit_code: None,
            signal: None,
            error_id: Some(self.error_id()),
            error: Some(self.last_stop.interrupted_error().into()),
            finished_at,
            log_bytes: 0,
            log_dropped: 0,
            error_tail: None,
            error_message: None,
            resources: None,
        }
    }
    /// The [`Leftover`] for a stored `running` attempt of activity `idx`.
    pub(super) fn leftover(
        &self,
        job_id: u64,
        idx: usize,
        activity: &holdfast_workflow::Activity,
        attempt: &store::StoredAttempt,
    ) -> Leftover {
        // A user the database does not confirm in time is taken from the
        // recorded process itself when it still runs with the recorded
        // start time (the same process, not a pid reused since); else the
        // owner is unknown and the pid not trusted, as for a user since
        // removed.
        let owner = match crate::run_as::user_for(activity, &self.settings) {
            None => Some(nix::unistd::Uid::effective().as_raw()),
            Some(user) => {
                let user = user.to_string();
                crate::user_database::ask_within(self.settings.user_database_wait, move || {
                    nix::unistd::User::from_name(&user)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                })
                .unwrap_or_else(|_| match (attempt.pid, attempt.pid_start) {
                    (Some(pid), Some(start)) if start_time::of_pid(pid) == Some(start) => {
                        real_uid(pid)
                    }
                    _ => None,
                })
            }
        };
        let number = attempt.number;
        let started_at = self
            .store
            .read_now(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT started_at FROM attempts WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                        rusqlite::params![job_id as i64, idx as i64, number],
                        |r| r.get::<_, i64>(0),
                    )
                    .ok())
            })
            .ok()
            .flatten();
        Leftover {
            job_id,
            process: activity.process.clone(),
            activity: activity.name.clone(),
            attempt: number,
            pid: attempt.pid,
            pid_start: attempt.pid_start,
            owner,
            started_at,
        }
    }
}

/// This boot's start, in ms since the epoch (`btime` of `/proc/stat`).
fn boot_time_ms() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(secs * 1000)
}

/// True when the recorded pid of `leftover` may still name its process or
/// group: the attempt started during this boot (pids and start times start
/// over at each boot) and the uid it ran as is known.
fn pid_trusted(leftover: &Leftover, boot_ms: Option<i64>) -> bool {
    leftover.owner.is_some()
        && matches!((leftover.started_at, boot_ms), (Some(at), Some(boot)) if at >= boot)
}

/// The real uid of `pid` (first field of `Uid:` in `/proc/PID/status`).
fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields resume after the command name's last ')' with field 3.
    let after = &stat[stat.rfind(')')? + 1..];
    after
        .split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_string)
}

/// The process group of an attempt whose leader (`pid`, started at
/// `start`) has exited: `Some((pgid, start))` when a group of that id may
/// still be the attempt's. Each attempt leads its own group, so the group's
/// id is the leader's pid. While the leader lives (the same start time) the
/// pid check finds it; a live process with that pid but another start time
/// means the pid was given out again, which Linux does only once no group
/// uses it, so the group is someone else's. With no process of that pid, a
/// group of that id may be the attempt's or, once the pid was given out
/// again and its new owner left, someone else's: each member is checked by
/// [`group_member`] before it is killed.
fn orphaned_group(pid: u32, start: u64) -> Option<(u32, u64)> {
    if pid <= 1 || std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    Some((pid, start))
}

/// True when `pid` can be a member of an attempt's group `pgid` whose
/// leader started at `leader_start` and ran as `owner`: it is in that
/// group, started no earlier than the leader, runs as `owner`, and its
/// session is not led by its own group. An attempt's group is made with
/// `setpgid` inside the daemon's session, so its session id is never the
/// group's id; a group made by `setsid` (a double-forked daemon that took
/// the same id after the pid was given out again) has session id == group
/// id and is left alone.
fn group_member(pid: u32, pgid: u32, leader_start: u64, owner: u32) -> bool {
    let field = |n| stat_field(pid, n).and_then(|v| v.parse::<u32>().ok());
    field(5) == Some(pgid)
        && field(6).is_some_and(|sid| sid != pgid)
        && start_time::of_pid(pid).is_some_and(|started| started >= leader_start)
        && real_uid(pid) == Some(owner)
}

/// Alive and not a zombie waiting for its parent.
fn running(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state != "Z" && state != "X")
}

/// Kill what attempts left by a dead daemon still have running, so two
/// copies never run at once. Processes are found two ways: the recorded
/// pid when its start time still matches, and every process whose
/// environment carries this daemon's `HF_DAEMON` (its database path) and the
/// attempt's `HF_JOB_ID`, `HF_PROCESS`, `HF_ACTIVITY` and `HF_ATTEMPT`
/// (activities and their children inherit them). The second finds attempts whose pid was not committed before the
/// crash, and groups whose leader has already exited. A third way finds
/// what cleaned its environment (`env -i`) in a group whose leader has
/// exited: every member of the recorded leader's process group that started
/// no earlier than the leader did (see [`orphaned_group`] and
/// [`group_member`]). The first and third ways trust a recorded pid only
/// for an attempt of this boot with a known user ([`pid_trusted`]) and hit
/// only processes of that user. Each process found has its whole process
/// group killed. Waits up to a second for them
/// to go (a zombie counts as gone).
///
/// Without cgroups a process that leaves the group (`setsid`) and cleans its
/// environment is not found; only an attempt's cgroup holds on to it.
pub(super) fn kill_leftovers(leftovers: &[Leftover], daemon: &str) {
    if leftovers.is_empty() {
        return;
    }
    let me = std::process::id();
    let wanted: std::collections::HashSet<(String, String, String, String)> = leftovers
        .iter()
        .map(|l| {
            (
                l.job_id.to_string(),
                l.process.clone(),
                l.activity.clone(),
                l.attempt.to_string(),
            )
        })
        .collect();
    let boot = boot_time_ms();
    let trusted: Vec<&Leftover> = leftovers.iter().filter(|l| pid_trusted(l, boot)).collect();
    let mut victims: Vec<u32> = trusted
        .iter()
        .filter_map(|l| match (l.pid, l.pid_start, l.owner) {
            (Some(pid), Some(start), Some(owner))
                if pid > 1
                    && start_time::of_pid(pid) == Some(start)
                    && real_uid(pid) == Some(owner) =>
            {
                Some(pid)
            }
            _ => None,
        })
        .collect();
    let groups: Vec<(u32, u64, u32)> = trusted
        .iter()
        .filter_map(|l| {
            let (pgid, start) = orphaned_group(l.pid?, l.pid_start?)?;
            Some((pgid, start, l.owner?))
        })
        .collect();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            if groups
                .iter()
                .any(|&(pgid, start, owner)| group_member(pid, pgid, start, owner))
            {
                victims.push(pid);
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let mut key = (String::new(), String::new(), String::new(), String::new());
            let mut ours = false;
            for var in environ.split(|&b| b == 0) {
                let var = String::from_utf8_lossy(var);
                if let Some(v) = var.strip_prefix("HF_DAEMON=") {
                    ours = v == daemon;
                } else if let Some(v) = var.strip_prefix("HF_JOB_ID=") {
                    key.0 = v.to_string();
                } else if let Some(v) = var.strip_prefix("HF_PROCESS=") {
                    key.1 = v.to_string();
                } else if let Some(v) = var.strip_prefix("HF_ACTIVITY=") {
                    key.2 = v.to_string();
                } else if let Some(v) = var.strip_prefix("HF_ATTEMPT=") {
                    key.3 = v.to_string();
                }
            }
            if ours && wanted.contains(&key) {
                victims.push(pid);
            }
        }
    }
    victims.sort_unstable();
    victims.dedup();
    let own_group = nix::unistd::getpgrp().as_raw();
    for &pid in &victims {
        tracing::warn!(pid, "killing a process left running by the previous daemon");
        if let Some(pgid) = stat_field(pid, 5).and_then(|g| g.parse::<i32>().ok())
            && pgid > 1
            && pgid != own_group
        {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    for _ in 0..100 {
        if !victims.iter().any(|&pid| running(pid)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn leftover(owner: Option<u32>, started_at: Option<i64>) -> Leftover {
        Leftover {
            job_id: 1,
            process: "p".into(),
            activity: "a".into(),
            attempt: 1,
            pid: Some(12345),
            pid_start: Some(1),
            owner,
            started_at,
        }
    }

    #[test]
    fn a_pid_is_trusted_only_for_an_attempt_of_this_boot_with_a_known_user() {
        let boot = boot_time_ms();
        assert!(boot.is_some(), "/proc/stat has btime");
        let now = store::now_ms();
        assert!(pid_trusted(&leftover(Some(0), Some(now)), boot));
        assert!(
            !pid_trusted(&leftover(Some(0), Some(boot.unwrap() - 60_000)), boot),
            "an attempt that started before this boot"
        );
        assert!(!pid_trusted(&leftover(None, Some(now)), boot), "no user");
        assert!(!pid_trusted(&leftover(Some(0), None), boot), "no start");
    }
}
