//! `notification.list` and `notification.retry`: the deliveries the
//! notifier (`crate::notify`) keeps, and delivering one again by hand.

use holdfast_api::{Delivery, ErrorCode};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::engine::Caller;
use crate::store::{self, WriteOp};

/// Most deliveries one call lists.
const MAX_LIMIT: u32 = 1000;

pub(super) async fn list(
    server: &RpcServer,
    failed: bool,
    limit: Option<u32>,
) -> RpcResult<Vec<Delivery>> {
    let limit = limit.unwrap_or(100).min(MAX_LIMIT);
    server
        .store
        .read(move |conn| store::list_deliveries(conn, failed, limit, None))
        .await
        .map_err(store_error)
}

async fn find(server: &RpcServer, id: u64) -> RpcResult<Option<Delivery>> {
    server
        .store
        .read(move |conn| Ok(store::list_deliveries(conn, false, 1, Some(id))?.pop()))
        .await
        .map_err(store_error)
}

pub(super) async fn retry(server: &RpcServer, caller: Caller, id: u64) -> RpcResult<Delivery> {
    let target = Some(format!("notification {id}"));
    if !crate::access::is_operator(&caller, &server.settings) {
        let message =
            "retrying notifications is for root, the daemon's user and operator_groups members";
        server
            .audit(
                &caller,
                "notification.retry",
                target,
                "refused",
                Some(message.into()),
            )
            .await;
        return Err(ErrorCode::PermissionDenied.error(message));
    }
    let Some(delivery) = find(server, id).await? else {
        let message = format!("no notification {id}; see `hfctl notifications`");
        server
            .audit(
                &caller,
                "notification.retry",
                target,
                "refused",
                Some(message.clone()),
            )
            .await;
        return Err(ErrorCode::NotFound.error(message));
    };
    if delivery.state == "delivered" {
        let message = format!("notification {id} was delivered already");
        server
            .audit(
                &caller,
                "notification.retry",
                target,
                "refused",
                Some(message.clone()),
            )
            .await;
        return Err(ErrorCode::InvalidState.error(message));
    }
    server
        .store
        .write(
            vec![WriteOp::RetryDelivery {
                id,
                at: store::now_ms(),
            }],
            true,
        )
        .await
        .map_err(store_error)?;
    crate::notify::wake();
    server
        .audit(&caller, "notification.retry", target, "ok", None)
        .await;
    find(server, id)
        .await?
        .ok_or_else(|| ErrorCode::NotFound.error(format!("notification {id} was deleted")))
}
