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
    // Every refusal is audited with the words the caller gets.
    let who = &caller;
    let refuse = |code: ErrorCode, message: String| async move {
        server
            .audit(
                who,
                "notification.retry",
                Some(format!("notification {id}")),
                "refused",
                Some(message.clone()),
            )
            .await;
        Err(code.error(message))
    };
    if !crate::access::is_operator(&caller, &server.settings) {
        return refuse(
            ErrorCode::PermissionDenied,
            "retrying notifications is for root, the daemon's user and operator_groups members"
                .into(),
        )
        .await;
    }
    let Some(delivery) = find(server, id).await? else {
        return refuse(
            ErrorCode::NotFound,
            format!("no notification {id}; see `hfctl notifications`"),
        )
        .await;
    };
    if delivery.state == "delivered" {
        return refuse(
            ErrorCode::InvalidState,
            format!("notification {id} was delivered already"),
        )
        .await;
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
