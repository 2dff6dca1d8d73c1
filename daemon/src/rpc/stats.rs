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
    let since_ms = parse_since(since_text, store::now_ms()).ok_or_else(|| {
        ErrorCode::InvalidParameters.error_with(
            format!("cannot read since {since_text:?}"),
            vec![FieldError {
                field: "since".into(),
                message: "give a duration back from now (7d, 12h, 30m) or an RFC 3339 instant"
                    .into(),
            }],
        )
    })?;
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

/// `7d` (back from `now_ms`) or an RFC 3339 instant, as ms since the epoch.
fn parse_since(text: &str, now_ms: i64) -> Option<i64> {
    if let Ok(back) = humantime::parse_duration(text) {
        return Some(now_ms.saturating_sub(i64::try_from(back.as_millis()).ok()?));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_or_an_instant() {
        assert_eq!(parse_since("7d", 10 * 86_400_000), Some(3 * 86_400_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Some(1000));
        assert_eq!(parse_since("last week", 0), None);
    }
}
