//! Today's policy for a job pinned to an older definition: before a
//! reprocess (`job.retry`) or a resume after a restart runs anything, the
//! pinned chain is checked again against the current settings (who
//! activities may run as), the chain's `allow` (the pinned one, and the
//! current one while the chain is still loaded) and the tenant's current
//! `groups`. A resumed job that no longer passes fails without starting
//! anything.

use std::ffi::CString;

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_workflow::Chain;
use nix::unistd::{Gid, Uid, User};

use super::recovery::{Leftover, kill_leftovers};
use super::{Caller, Engine};
use crate::store::{self, AuditRow, StoredJob, WriteOp};

impl Engine {
    /// Check that `caller` may still run `chain` (a job's pinned
    /// definition) for `tenant` under today's settings and files, given
    /// what [`crate::run_as::check_chain`] found for it. The error says
    /// what refuses it.
    ///
    /// A `caller` of None is a submitter the user database did not
    /// confirm (a resume while it is down): what depends on who they are
    /// (`allow`, the tenant's `groups`) is not checked.
    pub(super) fn may_still_run(
        &self,
        chain: &Chain,
        tenant: Option<&str>,
        caller: Option<&Caller>,
        run_as: Vec<holdfast_api::LoadError>,
    ) -> Result<(), String> {
        if !run_as.is_empty() {
            let reasons: Vec<String> = run_as.into_iter().map(|e| e.message).collect();
            return Err(format!(
                "chain {} may no longer run as its definition asks: {}",
                chain.name,
                reasons.join("; ")
            ));
        }
        let registry = self.registry.borrow();
        // The stricter of the two: the pinned `allow` and, while the chain
        // is loaded, its current one.
        let current = registry.chain(&chain.name);
        let allows = std::iter::once(&chain.allow).chain(current.map(|c| &c.allow));
        if let Some(caller) = caller
            && let Some(allow) = allows
                .into_iter()
                .find(|allow| !crate::access::may_submit_chain(caller, allow))
        {
            return Err(format!(
                "chain {} may now be submitted only by {}",
                chain.name,
                allow.join(", ")
            ));
        }
        if let Some(name) = tenant {
            let Some(t) = registry.tenant(name) else {
                return Err(format!("tenant {name} no longer exists"));
            };
            if !t.may_run(&chain.name) {
                return Err(format!(
                    "tenant {name} may no longer run chain {}",
                    chain.name
                ));
            }
            if caller.is_some_and(|caller| !crate::access::may_submit_for(caller, &t.groups)) {
                return Err(format!(
                    "submitting for tenant {name} is now limited to members of {}",
                    t.groups.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Check a job about to be resumed against today's policy, as its
    /// submitter (there is no peer credential at resume: their groups are
    /// looked up now in the user database).
    ///
    /// A user database that does not confirm who the chain runs as or who
    /// submitted the job (LDAP down or hanging while the daemon starts; it
    /// is waited for at most `user_database_wait`) refuses nothing: the
    /// job was allowed when it was submitted, and each attempt looks its
    /// user up again before it starts, so killing it now would lose work
    /// for an outage.
    pub(super) fn may_resume(&self, job: &StoredJob, chain: &Chain) -> Result<(), ResumeRefused> {
        // Who submitted it, and the groups its `allow` and tenant name,
        // asked together within the bound: a database that does not answer
        // in time leaves the submitter unconfirmed. One that answers "no
        // such uid" confirms a submitter without a name or groups, whom
        // the checks below judge as such.
        let uid = job.submitter_uid;
        let groups = self.groups_named(chain, job.tenant.as_deref());
        // A group the database has not answered for (a first look-up
        // waited for only briefly, or failed) leaves the submitter
        // unconfirmed too: judged without it, a member would be refused.
        let asked = crate::user_database::ask_within(self.settings.user_database_wait, move || {
            let groups_answered = groups
                .iter()
                .all(|group| crate::access::groups::GROUPS.confirm(group));
            (groups_answered, submitter(uid))
        });
        let submitter = match asked {
            Ok((true, Ok(caller))) => Some(caller),
            Ok(_) | Err(_) => {
                tracing::warn!(HF_JOB_ID = job.id, HF_CHAIN = %chain.name, uid = ?uid, "resuming the job although the user database did not confirm who submitted it or the groups its allow and tenant name (no answer in time, or a failed look-up); its allow and tenant groups are not checked again");
                None
            }
        };
        let check = crate::run_as::check_chain(
            chain,
            &self.settings,
            Some(self.settings.user_database_wait),
        );
        let run_as = if check.unconfirmed() {
            let reasons: Vec<String> = check.errors.into_iter().map(|e| e.message).collect();
            tracing::warn!(HF_JOB_ID = job.id, HF_CHAIN = %chain.name, reasons = %reasons.join("; "), "resuming the job although the user database did not confirm who it runs as");
            Vec::new()
        } else {
            check.errors
        };
        self.may_still_run(chain, job.tenant.as_deref(), submitter.as_ref(), run_as)
            .map_err(|reason| ResumeRefused { reason, submitter })
    }

    /// The groups `chain`'s `allow` (pinned and current) and `tenant`'s
    /// `groups` name: what [`Engine::may_still_run`] asks the group
    /// database about.
    fn groups_named(&self, chain: &Chain, tenant: Option<&str>) -> Vec<String> {
        let registry = self.registry.borrow();
        let current = registry.chain(&chain.name).map(|c| c.allow.clone());
        let mut named: Vec<String> = std::iter::once(chain.allow.clone())
            .chain(current)
            .flatten()
            .filter_map(|entry| entry.strip_prefix("group:").map(str::to_string))
            .collect();
        if let Some(t) = tenant.and_then(|name| registry.tenant(name)) {
            named.extend(t.groups.iter().cloned());
        }
        named.sort();
        named.dedup();
        named
    }

    /// Fail a job that may no longer run instead of resuming it: what a dead
    /// daemon left running is killed and marked interrupted, nothing is
    /// started, every unfinished activity is skipped, and the refusal is
    /// audited.
    pub(super) fn refuse_resume(&mut self, job: &StoredJob, chain: &Chain, refused: ResumeRefused) {
        let ResumeRefused { reason, submitter } = refused;
        let reason = reason.as_str();
        tracing::error!(HF_JOB_ID = job.id, HF_CHAIN = %chain.name, %reason, "job not resumed: today's policy refuses it");
        let now = store::now_ms();
        for activity in &job.activities {
            let Some(definition) = chain.activities.get(activity.idx) else {
                continue;
            };
            let running: Vec<Leftover> = activity
                .attempts
                .iter()
                .filter(|a| a.state == AttemptState::Running)
                .map(|a| self.leftover(job.id, activity.idx, definition, a))
                .collect();
            kill_leftovers(&running, &self.settings.database().display().to_string());
            for attempt in &running {
                let end = self.interrupted_end(job.id, activity.idx, attempt.attempt, now);
                self.ops.push(WriteOp::AttemptEnd(Box::new(end)));
            }
            if !activity.state.is_terminal() {
                self.ops.push(WriteOp::ActivityState {
                    job_id: job.id,
                    idx: activity.idx,
                    state: ActivityState::Skipped.as_str(),
                });
            }
        }
        let reason = format!("not resumed after a restart: {reason}");
        self.ops.push(WriteOp::JobState {
            id: job.id,
            state: JobState::Failed.as_str(),
            started_at: None,
            finished_at: Some(now),
            reason: Some(reason.clone()),
            alerts: job.alerts,
        });
        self.ops.push(WriteOp::Audit(Box::new(AuditRow {
            at: now,
            uid: Some(job.submitter_uid.unwrap_or(u32::MAX)),
            user: submitter.map(|s| s.user),
            pid: None,
            method: "job.resume",
            target: Some(format!("job {}", job.id)),
            outcome: "refused".into(),
            detail: Some(reason),
        })));
        // A watcher that read the job before this commit hears of its end.
        self.effects.push(super::Effect::Changed(job.id));
        self.durable = true;
    }
}

/// Why a job is not resumed, and who submitted it as the user database
/// answered (None when it did not confirm them).
pub(super) struct ResumeRefused {
    pub reason: String,
    submitter: Option<Caller>,
}

/// A job's submitter as today's user database has them: name, primary
/// group and supplementary groups. A uid no longer in the database keeps
/// only its number (it matches no `user:` or `group:` entry); a job without
/// a recorded uid (made before uids were recorded) counts as nobody's. Err
/// when the database failed to answer (an error, not "no such uid").
fn submitter(uid: Option<u32>) -> nix::Result<Caller> {
    let uid = uid.unwrap_or(u32::MAX);
    let account = User::from_uid(Uid::from_raw(uid))?;
    let (user, gid, groups) = match account {
        Some(account) => {
            let name = CString::new(account.name.clone()).map_err(|_| nix::Error::EINVAL)?;
            let groups = nix::unistd::getgrouplist(&name, account.gid)?;
            (
                account.name,
                account.gid.as_raw(),
                groups.into_iter().map(Gid::as_raw).collect(),
            )
        }
        None => (format!("uid:{uid}"), u32::MAX, Vec::new()),
    };
    Ok(Caller {
        uid,
        gid,
        groups,
        pid: None,
        user,
    })
}
