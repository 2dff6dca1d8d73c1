//! `job.cancel`: stop queued or running jobs.

use holdfast_api::{CancelOutcome, ErrorCode};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::access;
use crate::engine::Caller;
use crate::store;

pub(super) async fn handle(
    server: &RpcServer,
    caller: Caller,
    job_ids: Vec<u64>,
) -> RpcResult<Vec<CancelOutcome>> {
    let ids = job_ids.clone();
    let owners = server
        .store
        .read(move |conn| store::job_owners(conn, &ids))
        .await
        .map_err(store_error)?;
    let refused: Vec<u64> = job_ids
        .iter()
        .zip(&owners)
        .filter(|(_, owner)| {
            owner.is_some_and(|uid| !access::may_manage_job(&caller, uid, &server.settings))
        })
        .map(|(id, _)| *id)
        .collect();
    if !refused.is_empty() {
        let list = refused
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "job {list} belongs to another user; only its submitter or an operator may cancel it"
        );
        for id in &refused {
            server
                .audit(
                    &caller,
                    "job.cancel",
                    Some(format!("job {id}")),
                    "refused",
                    Some(message.clone()),
                )
                .await;
        }
        return Err(ErrorCode::PermissionDenied.error(message));
    }
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
