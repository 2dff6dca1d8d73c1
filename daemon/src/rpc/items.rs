//! `job.items`: one page of a fan-out's items, from the store.

use holdfast_api::{ErrorCode, ItemPage};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::store;

/// Items per page when the caller does not say.
const DEFAULT_LIMIT: u32 = 100;

pub(super) async fn handle(
    server: &RpcServer,
    job_id: u64,
    activity: String,
    offset: Option<u32>,
    limit: Option<u32>,
) -> RpcResult<ItemPage> {
    let offset = offset.unwrap_or(0);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    server
        .store
        .read(move |conn| store::job_items(conn, job_id, &activity, offset, limit))
        .await
        .map_err(store_error)?
        .map_err(|message| ErrorCode::NotFound.error(message))
}
