//! `job.get`: one job with its activities and attempts, from the store,
//! and why it waits, from the engine.

use holdfast_api::{ErrorCode, Job};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::store;

pub(super) async fn handle(server: &RpcServer, job_id: u64) -> RpcResult<Job> {
    let mut job = server
        .store
        .read(move |conn| store::get_job(conn, job_id))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ErrorCode::NotFound.error(format!("job {job_id} does not exist")))?;
    with_waiting(server, &mut job).await;
    Ok(job)
}

/// Add why the job waits, when it has not ended (asked of the engine).
pub(super) async fn with_waiting(server: &RpcServer, job: &mut Job) {
    if !job.state.is_terminal() {
        job.waiting = server.engine.waiting(vec![job.id]).await.remove(&job.id);
    }
}
