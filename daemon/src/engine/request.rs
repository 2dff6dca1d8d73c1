//! Client idempotency keys on `job.submit`: a submission that carries a
//! `request_id` already used by the same uid answers with the first job
//! instead of making a second one, and one that reuses the key for a
//! different request is refused.

use holdfast_api::FieldError;
use holdfast_workflow::Chain;
use holdfast_workflow::params::masked;
use serde_json::{Value, json};

use super::{Engine, SubmitError, SubmitRequest};
use crate::store::{self, WriteOp};

/// What an earlier use of a request's key says about it.
pub(super) enum Earlier {
    /// The key is new for this uid.
    None,
    /// The same request made this job: answer with it.
    Job(u64),
}

/// The parts of a submission that make it the same request, as stored with
/// the job. Values of the chain's `secret` parameters are masked: they are
/// never stored outside `job_secrets`, so they are not compared either.
pub(super) fn fingerprint(request: &SubmitRequest, chain: Option<&Chain>) -> Value {
    let params = match chain {
        Some(chain) => masked(chain, &request.params),
        None => request.params.clone(),
    };
    let mut fingerprint = json!({
        "target": request.target,
        "params": params,
        "tenant": request.tenant,
        "priority": request.priority,
        "simulate": request.simulate,
    });
    // Only when given, so keys stored before `until` existed still match.
    if let Some(until) = &request.until {
        fingerprint["until"] = json!(until);
    }
    // Only when given, so keys stored before `at` existed still match.
    if let (Some(at), Some(fields)) = (&request.at, fingerprint.as_object_mut()) {
        fields.insert("at".into(), json!(at.at.timestamp_millis()));
    }
    fingerprint
}

impl Engine {
    /// Look for an earlier submission by the same uid with `key`: committed
    /// (answer with its job, or refuse if it asked for something else), or
    /// in a batch being built or committed now (ask the caller to try again, so
    /// nothing is acknowledged before its commit).
    pub(super) fn earlier_request(
        &self,
        request: &SubmitRequest,
        key: &str,
    ) -> Result<Earlier, SubmitError> {
        let uid = request.caller.uid;
        let in_batch = self.ops.iter().any(|op| {
            matches!(op, WriteOp::JobRequest { uid: u, request_id, .. } if *u == uid && request_id == key)
        }) || self.key_in_flight(uid, key);
        if in_batch {
            return Err(SubmitError::Unavailable(format!(
                "a submission with request_id {key:?} is being stored right now; try again"
            )));
        }
        let owned = key.to_string();
        let found = self
            .store
            .read_now(move |conn| store::job_by_request(conn, uid, &owned))
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        let Some((job_id, stored)) = found else {
            return Ok(Earlier::None);
        };
        let chain = self
            .registry
            .borrow()
            .chain(super::recovery::chain_of(&request.target))
            .cloned();
        let same = stored
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .is_some_and(|earlier| earlier == fingerprint(request, chain.as_deref()));
        if same {
            Ok(Earlier::Job(job_id))
        } else {
            Err(SubmitError::Invalid(vec![FieldError {
                field: "request_id".into(),
                message: format!(
                    "request_id {key:?} was already used for job {job_id} with a different \
                     target, parameters, tenant, priority or simulate; use a new request_id \
                     for a new job"
                ),
            }]))
        }
    }

    /// Record `key` with the job `job_id` just made from `request`.
    pub(super) fn record_request(
        &mut self,
        job_id: u64,
        request: &SubmitRequest,
        chain: &Chain,
        key: &str,
    ) {
        self.ops.push(WriteOp::JobRequest {
            job_id,
            uid: request.caller.uid,
            request_id: key.to_string(),
            request: fingerprint(request, Some(chain)).to_string(),
        });
    }
}
