//! `job.submit`: hand the submission to the engine; answer once committed.

use holdfast_api::{ErrorCode, FieldError, JobState, SubmitResult};
use holdfast_workflow::{BusinessDate, DateZone};
use jsonrpsee::core::RpcResult;
use serde_json::{Map, Value};

use super::{RpcServer, store_error, submit_error};
use crate::engine::{Caller, SubmitError, SubmitRequest};
use crate::store;

/// Longest `request_id` accepted, in characters.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A `request_id` is 1 to 128 characters with no control characters.
fn check_request_id(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("request_id is empty; leave it out or give a key".into());
    }
    if key.chars().count() > MAX_REQUEST_ID_CHARS {
        return Err(format!(
            "request_id is longer than {MAX_REQUEST_ID_CHARS} characters; use a shorter key"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("request_id contains control characters; use printable text".into());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn handle(
    server: &RpcServer,
    caller: Caller,
    target: String,
    params: Option<Map<String, Value>>,
    tenant: Option<String>,
    priority: Option<i32>,
    simulate: bool,
    request_id: Option<String>,
    until: Option<String>,
    at: Option<String>,
) -> RpcResult<SubmitResult> {
    // `at` is read in the daemon's zone; a job has no schedule zone.
    let at = match at
        .as_deref()
        .map(|text| BusinessDate::parse(text, DateZone::Local))
        .transpose()
    {
        Ok(at) => at,
        Err(message) => {
            server
                .audit(
                    &caller,
                    "job.submit",
                    Some(target.clone()),
                    "refused",
                    Some(format!("invalid parameters: at: {message}")),
                )
                .await;
            let error = SubmitError::Invalid(vec![FieldError {
                field: "at".into(),
                message,
            }]);
            return Err(submit_error(&target, error));
        }
    };
    if let Some(key) = &request_id
        && let Err(message) = check_request_id(key)
    {
        return Err(ErrorCode::InvalidParameters.error_with(
            format!("invalid parameters for {target}: request_id: {message}"),
            vec![FieldError {
                field: "request_id".into(),
                message,
            }],
        ));
    }
    let keyed = request_id.is_some();
    let request = SubmitRequest {
        target: target.clone(),
        params: params.unwrap_or_default(),
        tenant,
        priority: priority.unwrap_or(0),
        simulate,
        until,
        caller: caller.clone(),
        request_id,
        at,
    };
    let result = match priority_refusal(server, &caller, &target, request.priority) {
        Some(refusal) => Err(refusal),
        None => server.engine.submit(request).await,
    };
    // An accepted submission was audited by the engine, in the job's own
    // transaction; a refusal is audited here, in the words the caller gets.
    if let Err(e) = &result {
        let detail = match e {
            SubmitError::Invalid(fields) => format!(
                "invalid parameters: {}",
                fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => other.to_string(),
        };
        server
            .audit(
                &caller,
                "job.submit",
                Some(target.clone()),
                "refused",
                Some(detail),
            )
            .await;
    }
    match result {
        // A repeated key answers with the first job, as it is now.
        Ok(job_id) if keyed => {
            let state = server
                .store
                .read(move |conn| store::job_state(conn, job_id))
                .await
                .map_err(store_error)?
                .unwrap_or(JobState::Queued);
            Ok(SubmitResult { job_id, state })
        }
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
