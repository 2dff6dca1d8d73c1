//! `job.get`: one job with its activities and attempts, from the store.

use holdfast_api::{ErrorCode, Job};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::store;

pub(super) async fn handle(server: &RpcServer, job_id: u64) -> RpcResult<Job> {
    server
        .store
        .read(move |conn| store::get_job(conn, job_id))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ErrorCode::NotFound.error(format!("job {job_id} does not exist")))
}
