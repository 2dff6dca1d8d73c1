//! `job.cancel`: stop queued or running jobs.

use holdfast_api::CancelOutcome;
use jsonrpsee::core::RpcResult;

use super::RpcServer;
use crate::engine::Caller;

pub(super) async fn handle(
    server: &RpcServer,
    caller: Caller,
    job_ids: Vec<u64>,
) -> RpcResult<Vec<CancelOutcome>> {
    let outcomes = server.engine.cancel(job_ids).await;
    for outcome in &outcomes {
        let result = if outcome.error.is_none() {
            "ok"
        } else {
            "refused"
        };
        server
            .audit(
                &caller,
                "job.cancel",
                Some(format!("job {}", outcome.job_id)),
                result,
                outcome.error.clone(),
            )
            .await;
    }
    Ok(outcomes)
}
