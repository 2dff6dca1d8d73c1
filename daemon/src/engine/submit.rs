//! How jobs come into being: a submission checked and recorded, the
//! secret values of a stored job opened again, and a reprocess of a
//! finished job.

use std::collections::BTreeSet;
use std::sync::Arc;

use holdfast_api::ActivityState;
use holdfast_workflow::Chain;
use tokio::sync::oneshot;

use super::job::{JobRun, prepare};
use super::{Caller, Engine, PendingJob, SubmitError, SubmitRequest};
use crate::store::{self, AuditRow, NewJob, StoredJob, WriteOp};

/// The audit method of a submission.
pub(super) const SUBMIT_AUDIT: &str = "job.submit";

/// The audit detail of an accepted submission.
pub(super) fn submitted_detail(id: u64) -> String {
    format!("job {id}")
}

impl Engine {
    pub(super) fn submit(
        &mut self,
        request: SubmitRequest,
        reply: oneshot::Sender<Result<u64, SubmitError>>,
    ) {
        if self.shutting_down.is_some() {
            let _ = reply.send(Err(SubmitError::ShuttingDown));
            return;
        }
        if let Some(key) = &request.request_id {
            match self.earlier_request(&request, key) {
                Ok(super::request::Earlier::None) => {}
                Ok(super::request::Earlier::Job(id)) => {
                    // Answered at once, as the job is already stored; the
                    // audit row goes in with the next commit (and is kept
                    // through a failed one).
                    self.audit_submitted(&request, id);
                    let _ = reply.send(Ok(id));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let prepared = {
            let registry = self.registry.borrow();
            prepare(
                &registry,
                &request.target,
                request.until.as_deref(),
                &request.params,
                None,
                request.tenant.as_deref(),
                &request.caller,
            )
        };
        let super::job::Prepared {
            chain,
            included,
            params,
            secret,
        } = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let mut job = JobRun::new(
            id,
            chain.clone(),
            request.target.clone(),
            &included,
            params.clone(),
            request.tenant.clone(),
            request.priority,
        );
        job.simulated = request.simulate;
        job.secret = secret;
        job.until = request.until.clone();
        job.scheduled = Some(request.at.unwrap_or(holdfast_workflow::BusinessDate {
            at: chrono::Utc::now(),
            zone: holdfast_workflow::DateZone::Local,
        }));
        if let Err(e) = self.record_new_job(&job, &request.caller, None) {
            let _ = reply.send(Err(e));
            return;
        }
        if let Some(key) = &request.request_id {
            self.record_request(id, &request, &chain, key);
        }
        self.audit_submitted(&request, id);
        self.durable = true;
        tracing::info!(
            HF_JOB_ID = id,
            HF_CHAIN = %chain.name,
            target = %request.target,
            user = %request.caller.user,
            "job {id} ({}) submitted by {}",
            chain.name,
            request.caller.user
        );
        self.pending_jobs.push(PendingJob { job, reply });
    }

    /// The audit row of an accepted submission, written in the job's own
    /// transaction: the row exists exactly when the job does, and the
    /// answer waits for one commit, not two. (A refused submission writes
    /// nothing here; the RPC layer audits the refusal.)
    fn audit_submitted(&mut self, request: &SubmitRequest, id: u64) {
        self.ops.push(WriteOp::Audit(Box::new(AuditRow {
            at: store::now_ms(),
            uid: Some(request.caller.uid),
            user: Some(request.caller.user.clone()),
            pid: request.caller.pid,
            method: SUBMIT_AUDIT,
            target: Some(request.target.clone()),
            outcome: "ok".into(),
            detail: Some(submitted_detail(id)),
        })));
    }

    /// The writes that create a job: its definition version, its row and
    /// one row per included activity.
    ///
    /// Secret values are sealed into a row of their own and the stored
    /// parameters show them as `***`; when they cannot be sealed nothing is
    /// recorded and the submission is refused.
    pub(super) fn record_new_job(
        &mut self,
        job: &JobRun,
        caller: &Caller,
        retry_of: Option<u64>,
    ) -> Result<(), SubmitError> {
        let secrets = if job.secret.is_empty() {
            None
        } else {
            let values: serde_json::Map<String, serde_json::Value> = job
                .params
                .iter()
                .filter(|(name, _)| job.secret.contains(*name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            let sealer = self.secrets.as_ref().map_err(|e| {
                SubmitError::Unavailable(format!("secret parameters cannot be kept: {e}"))
            })?;
            Some(
                sealer
                    .seal(job.id, &values)
                    .map_err(|e| SubmitError::Unavailable(e.to_string()))?,
            )
        };
        let chain = &job.chain;
        self.record_definition(chain, store::now_ms());
        self.ops.push(WriteOp::InsertJob(Box::new(NewJob {
            id: job.id,
            target: job.target.clone(),
            chain: chain.name.clone(),
            version: chain.version.clone(),
            params: serde_json::Value::Object(job.shown_params()).to_string(),
            secrets,
            tenant: job.tenant.clone(),
            priority: job.priority,
            submitted_by: caller.user.clone(),
            submitter_uid: Some(caller.uid),
            submitter_gid: Some(caller.gid),
            submitter_pid: caller.pid,
            retry_of,
            run_id: job.run_id,
            until: job.until.clone(),
            simulated: job.simulated,
            created_at: store::now_ms(),
            scheduled_at: job.scheduled.map(|d| d.at.timestamp_millis()),
            scheduled_zone: job.scheduled.map(|d| d.zone.name()),
            activities: chain
                .activities
                .iter()
                .enumerate()
                .filter(|(idx, _)| job.acts[*idx].included)
                .map(|(idx, a)| (idx, a.path.clone()))
                .collect(),
        })));
        self.ops.push(self.outbox.submitted(job));
        self.durable = true;
        Ok(())
    }

    /// A stored job's parameters with its sealed secret values put back,
    /// and the names of those values.
    pub(super) fn stored_params(
        &self,
        stored: &StoredJob,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, BTreeSet<String>), String> {
        let mut params = stored.params.clone();
        let Some(sealed) = &stored.secrets else {
            return Ok((params, BTreeSet::new()));
        };
        let sealer = self
            .secrets
            .as_ref()
            .map_err(|e| format!("its secret parameters cannot be read: {e}"))?;
        let values = sealer.open(stored.id, sealed).map_err(|e| e.to_string())?;
        let names = values.keys().cloned().collect();
        params.extend(values);
        Ok((params, names))
    }

    /// A new job from a finished one: same definition version, target and
    /// parameters; what succeeded is kept with its outputs, the rest runs
    /// again with its last checkpoint. What a handler `undoes` runs again
    /// without its checkpoint; with `from`, that process and everything
    /// after it runs again too. Handlers always start afresh.
    pub(super) fn reprocess(&mut self, mut request: ReprocessRequest) {
        let refuse = |reply: oneshot::Sender<Result<u64, SubmitError>>, message: String| {
            let _ = reply.send(Err(SubmitError::InvalidState(message)));
        };
        if self.shutting_down.is_some() {
            let _ = request.reply.send(Err(SubmitError::ShuttingDown));
            return;
        }
        if !request.original.state.is_terminal() {
            let message = format!(
                "job {} is still {}; wait for it or cancel it first",
                request.original.id,
                request.original.state.as_str()
            );
            return refuse(request.reply, message);
        }
        let (chain, run_as) = match request.checked.take() {
            // The database did not confirm who it runs as: that is no
            // refusal, but no go-ahead either.
            Some(checked) if checked.run_as.unconfirmed() => {
                let reasons: Vec<String> = checked
                    .run_as
                    .errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect();
                let message = format!(
                    "the user database did not confirm who chain {} runs as ({}); try again \
                     once it answers",
                    checked.chain.name,
                    reasons.join("; ")
                );
                let _ = request.reply.send(Err(SubmitError::Unavailable(message)));
                return;
            }
            Some(checked) => (checked.chain, checked.run_as.errors),
            None => {
                let original = &request.original;
                let chain = match self.pinned_chain(
                    &original.version,
                    super::recovery::chain_of(&original.target),
                ) {
                    Ok(Some(chain)) => chain,
                    Ok(None) => {
                        let message = format!(
                            "the definition job {} ran with is no longer readable",
                            original.id
                        );
                        return refuse(request.reply, message);
                    }
                    Err(e) => {
                        let _ = request
                            .reply
                            .send(Err(SubmitError::Unavailable(e.to_string())));
                        return;
                    }
                };
                if crate::run_as::looks_up_users(&chain, &self.settings) {
                    // Who its activities run as is checked against the
                    // user database off the engine; the request comes back
                    // with the answer and is checked again from the top.
                    return self.check_users_then_reprocess(request, chain);
                }
                let run_as = crate::run_as::check_chain(&chain, &self.settings, None).errors;
                (chain, run_as)
            }
        };
        let ReprocessRequest {
            original,
            from_start,
            from,
            caller,
            reply,
            checked: _,
        } = request;
        // The pinned definition runs only if today's policy still allows it.
        if let Err(message) =
            self.may_still_run(&chain, original.tenant.as_deref(), Some(&caller), run_as)
        {
            let _ = reply.send(Err(SubmitError::PermissionDenied(message)));
            return;
        }
        let mut included = vec![false; chain.activities.len()];
        for a in &original.activities {
            if let Some(slot) = included.get_mut(a.idx) {
                *slot = true;
            }
        }
        // A reprocess uses the connection profiles again: their `allow` as
        // it is now. A profile missing now is the attempt's business.
        if let Err(e) = crate::connections::check_reprocess(
            &self.registry.borrow(),
            &chain,
            &included,
            original.tenant.as_deref(),
            &caller,
        ) {
            let _ = reply.send(Err(e));
            return;
        }
        let (params, secret) = match self.stored_params(&original) {
            Ok(found) => found,
            Err(message) => return refuse(reply, format!("job {}: {message}", original.id)),
        };
        let id = self.next_job_id;
        let mut job = JobRun::new(
            id,
            chain,
            original.target.clone(),
            &included,
            params,
            original.tenant.clone(),
            original.priority,
        );
        job.secret = secret;
        // A retry is the same run: paths and keys built from `job.run_id`
        // find what the first job left. It keeps its `--until` too.
        job.run_id = original.run_id;
        job.until = original.until.clone();
        // A reprocess of a simulated job is simulated too, and runs as of
        // the same instant.
        job.simulated = original.simulated;
        job.scheduled = original.scheduled;
        let rerun = match from.as_deref().map(|p| job.rerun_from(p)) {
            None => vec![false; job.acts.len()],
            Some(Ok(rerun)) => rerun,
            Some(Err(message)) => return refuse(reply, message),
        };
        let mut carried = Vec::new();
        for a in &original.activities {
            let handler = job
                .chain
                .activities
                .get(a.idx)
                .is_some_and(|d| d.handler.is_some());
            let Some(act) = job.acts.get_mut(a.idx) else {
                continue;
            };
            if handler || a.undone {
                continue;
            }
            let from_here = rerun.get(a.idx).copied().unwrap_or(false);
            if from_here && a.state == ActivityState::Succeeded {
                continue;
            }
            // A fan-out keeps its item list and its succeeded items (with
            // their outputs); its failed, skipped and never-started items
            // run again.
            if !from_start && !from_here && a.items.is_some() {
                let mut carried_items = a.clone();
                for row in &mut carried_items.item_rows {
                    if row.state != "succeeded" {
                        row.state = "pending".into();
                        row.attempts = 0;
                        row.interruptions = 0;
                        row.outputs.clear();
                    }
                }
                let Some(fan) = super::items::FanOut::from_stored(
                    &carried_items,
                    holdfast_workflow::OnFailure::Continue,
                ) else {
                    continue;
                };
                let all_done = fan.again.is_empty() && fan.next >= fan.total;
                act.fanout = Some(Box::new(fan));
                carried.push(WriteOp::CarryItems {
                    from: original.id,
                    job_id: id,
                    idx: a.idx,
                });
                if !(all_done && a.state == ActivityState::Succeeded) {
                    continue;
                }
            }
            if !from_start && a.state == ActivityState::Succeeded {
                act.state = Some(ActivityState::Succeeded);
                act.outputs = a.outputs.clone();
                act.progress = Some(100.0);
                carried.push(WriteOp::ActivityState {
                    job_id: id,
                    idx: a.idx,
                    state: ActivityState::Succeeded.as_str(),
                });
                if !a.outputs.is_empty() {
                    carried.push(WriteOp::ActivityOutputs {
                        job_id: id,
                        idx: a.idx,
                        outputs: serde_json::Value::Object(a.outputs.clone()).to_string(),
                    });
                }
            } else if !from_start && let Some(checkpoint) = &a.checkpoint {
                act.checkpoint = Some(checkpoint.clone());
                carried.push(WriteOp::ActivityCheckpoint {
                    job_id: id,
                    idx: a.idx,
                    checkpoint: checkpoint.to_string(),
                });
            }
        }
        job.recount();
        if job.unfinished == job.handlers_unfinished {
            return refuse(
                reply,
                format!(
                    "every activity of job {} succeeded; nothing to re-run (use --from-start)",
                    original.id
                ),
            );
        }
        self.next_job_id += 1;
        if let Err(e) = self.record_new_job(&job, &caller, Some(original.id)) {
            let _ = reply.send(Err(e));
            return;
        }
        self.ops.append(&mut carried);
        tracing::info!(HF_JOB_ID = id, HF_CHAIN = %job.chain.name, retry_of = original.id, from_start, user = %caller.user, "job {id} ({}) submitted by {} (reprocess of job {})", job.chain.name, caller.user, original.id);
        self.pending_jobs.push(PendingJob { job, reply });
    }

    /// Check who `chain`'s activities run as (a reprocess's pinned
    /// definition) in one of the daemon's look-up turns, then hand the
    /// request back to the engine with the answer.
    fn check_users_then_reprocess(&mut self, mut request: ReprocessRequest, chain: Arc<Chain>) {
        let settings = self.settings.clone();
        let tx = self.commands_tx.clone();
        tokio::spawn(async move {
            let checking = chain.clone();
            let run_as =
                crate::run_as::look_up_in_turn(crate::run_as::LookUpFor::Other, move || {
                    crate::run_as::check_chain(&checking, &settings, None)
                })
                .await;
            match run_as {
                Ok(run_as) => {
                    request.checked = Some(UsersChecked { chain, run_as });
                    let _ = tx.send(super::Command::Reprocess(Box::new(request))).await;
                }
                Err(e) => {
                    let _ = request.reply.send(Err(SubmitError::Unavailable(format!(
                        "cannot check who the chain runs as: {e}"
                    ))));
                }
            }
        });
    }
}

/// `job.retry`: reprocess a finished job (read by the caller from the
/// store).
#[derive(Debug)]
pub struct ReprocessRequest {
    pub original: StoredJob,
    pub from_start: bool,
    /// Re-run this process and every process after it.
    pub from: Option<String>,
    pub caller: Caller,
    pub reply: oneshot::Sender<Result<u64, SubmitError>>,
    /// The pinned definition and what checking its users against the user
    /// database found, once that was done off the engine.
    pub(super) checked: Option<UsersChecked>,
}

/// A pinned chain whose users were checked off the engine.
#[derive(Debug)]
pub(super) struct UsersChecked {
    chain: Arc<Chain>,
    run_as: crate::run_as::ChainCheck,
}
