//! `audit.list`: the audit trail of mutating calls, newest first.

use holdfast_api::AuditEntry;
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::store;

pub(super) async fn handle(
    server: &RpcServer,
    limit: Option<u32>,
    before: Option<u64>,
) -> RpcResult<Vec<AuditEntry>> {
    let limit = limit.unwrap_or(50);
    server
        .store
        .read(move |conn| store::list_audit(conn, limit, before))
        .await
        .map_err(store_error)
}
