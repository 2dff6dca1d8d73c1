//! `job.submit`: hand the submission to the engine; answer once committed.

use holdfast_api::{JobState, SubmitResult};
use jsonrpsee::core::RpcResult;
use serde_json::{Map, Value};

use super::{RpcServer, submit_error};
use crate::engine::{Caller, SubmitRequest};

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
    let result = server.engine.submit(request).await;
    let (outcome, detail) = match &result {
        Ok(id) => ("ok".to_string(), Some(format!("job {id}"))),
        // The same words the caller gets, field by field.
        Err(e) => (
            "refused".to_string(),
            Some(match e {
                crate::engine::SubmitError::Invalid(fields) => format!(
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
