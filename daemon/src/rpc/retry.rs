//! `job.retry`: reprocess a finished job as a new job linked to it.

use holdfast_api::{ErrorCode, JobState, SubmitResult};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error, submit_error};
use crate::engine::Caller;
use crate::store;

pub(super) async fn handle(
    server: &RpcServer,
    caller: Caller,
    job_id: u64,
    from_start: bool,
    from: Option<String>,
) -> RpcResult<SubmitResult> {
    let original = server
        .store
        .read(move |conn| store::stored_job(conn, job_id))
        .await
        .map_err(store_error)?;
    let Some(original) = original else {
        let message = format!("job {job_id} does not exist");
        server
            .audit(
                &caller,
                "job.retry",
                Some(format!("job {job_id}")),
                "refused",
                Some(message.clone()),
            )
            .await;
        return Err(ErrorCode::NotFound.error(message));
    };
    if !crate::access::may_manage_job(&caller, original.submitter_uid, &server.settings) {
        let message = format!(
            "job {job_id} belongs to another user; only its submitter or an operator may reprocess it"
        );
        server
            .audit(
                &caller,
                "job.retry",
                Some(format!("job {job_id}")),
                "refused",
                Some(message.clone()),
            )
            .await;
        return Err(ErrorCode::PermissionDenied.error(message));
    }
    let result = server
        .engine
        .reprocess(original, from_start, from, caller.clone())
        .await;
    let (outcome, detail) = match &result {
        Ok(id) => ("ok", Some(format!("job {id}"))),
        Err(e) => ("refused", Some(e.to_string())),
    };
    server
        .audit(
            &caller,
            "job.retry",
            Some(format!("job {job_id}")),
            outcome,
            detail,
        )
        .await;
    match result {
        Ok(job_id) => Ok(SubmitResult {
            job_id,
            state: JobState::Queued,
        }),
        Err(e) => Err(submit_error(&format!("job {job_id}"), e)),
    }
}
