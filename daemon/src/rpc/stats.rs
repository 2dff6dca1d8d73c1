//! `stats.get`: figures of what ran, per chain and per activity, computed
//! in SQLite. Everyone on the socket may read them, as they may read
//! `job.list`.

use holdfast_api::{ErrorCode, FieldError, Stats};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::store::{self, StatsFilter};

/// The window when the caller names none.
const DEFAULT_SINCE: &str = "7d";

pub(super) async fn handle(
    server: &RpcServer,
    target: Option<String>,
    since: Option<String>,
    tenant: Option<String>,
) -> RpcResult<Stats> {
    let since_text = since.as_deref().unwrap_or(DEFAULT_SINCE);
    let since_ms = super::since::parse_param(since_text, store::now_ms())?;
    if let Some(t) = &target
        && (t.is_empty() || t.split('.').count() > 3 || t.split('.').any(str::is_empty))
    {
        return Err(ErrorCode::InvalidParameters.error_with(
            format!("cannot read target {t:?}"),
            vec![FieldError {
                field: "target".into(),
                message: "give CHAIN, CHAIN.PROCESS or CHAIN.PROCESS.ACTIVITY".into(),
            }],
        ));
    }
    let filter = StatsFilter {
        since_ms,
        target,
        tenant,
    };
    server
        .store
        .read(move |conn| store::stats(conn, &filter))
        .await
        .map_err(store_error)
}
