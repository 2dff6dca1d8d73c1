//! `job.submit`: hand the submission to the engine; answer once committed.

use holdfast_api::{FieldError, JobState, SubmitResult};
use jsonrpsee::core::RpcResult;
use serde_json::{Map, Value};

use super::{RpcServer, submit_error};
use crate::engine::{Caller, SubmitError, SubmitRequest};

pub(super) async fn handle(
    server: &RpcServer,
    caller: Caller,
    target: String,
    params: Option<Map<String, Value>>,
    tenant: Option<String>,
    priority: Option<i32>,
    simulate: bool,
) -> RpcResult<SubmitResult> {
    let request = SubmitRequest {
        target: target.clone(),
        params: params.unwrap_or_default(),
        tenant,
        priority: priority.unwrap_or(0),
        simulate,
        caller: caller.clone(),
    };
    let result = match priority_refusal(server, &caller, &target, request.priority) {
        Some(refusal) => Err(refusal),
        None => server.engine.submit(request).await,
    };
    let (outcome, detail) = match &result {
        Ok(id) => ("ok".to_string(), Some(format!("job {id}"))),
        // The same words the caller gets, field by field.
        Err(e) => (
            "refused".to_string(),
            Some(match e {
                SubmitError::Invalid(fields) => format!(
                    "invalid parameters: {}",
                    fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                other => other.to_string(),
            }),
        ),
    };
    server
        .audit(
            &caller,
            "job.submit",
            Some(target.clone()),
            &outcome,
            detail,
        )
        .await;
    match result {
        Ok(job_id) => Ok(SubmitResult {
            job_id,
            state: JobState::Queued,
        }),
        Err(e) => Err(submit_error(&target, e)),
    }
}

/// A priority above what the caller may ask for on this chain (see
/// [`crate::access::max_priority`]), as a field error. An unknown chain is
/// left to the engine, which says so.
fn priority_refusal(
    server: &RpcServer,
    caller: &Caller,
    target: &str,
    priority: i32,
) -> Option<SubmitError> {
    let chain_name = target.split('.').next().unwrap_or_default();
    let chain_max = server
        .engine
        .registry
        .borrow()
        .chain(chain_name)?
        .max_priority;
    let bound = crate::access::max_priority(caller, &server.settings, chain_max)?;
    (priority > bound).then(|| {
        SubmitError::Invalid(vec![FieldError {
            field: "priority".into(),
            message: format!(
                "{priority} is above {bound}, the highest chain {chain_name} allows for \
                 submitters outside operator_groups; submit with --priority {bound} or lower, \
                 or ask an operator"
            ),
        }])
    })
}
