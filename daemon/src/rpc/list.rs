//! `job.list`: recent jobs, filtered and paged, newest first, with why
//! those not ended wait.

use holdfast_api::{ErrorCode, FieldError, JobList, JobState};
use jsonrpsee::core::RpcResult;
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::types::error::INVALID_PARAMS_CODE;

use super::{RpcServer, store_error};
use crate::store::{self, LIST_LIMITS, ListFilter};

/// Jobs a page holds when the caller names no `limit`.
const DEFAULT_LIMIT: u32 = 50;

pub(super) async fn handle(
    server: &RpcServer,
    state: Option<String>,
    chain: Option<String>,
    limit: Option<u32>,
    before: Option<u64>,
    tenant: Option<String>,
    since: Option<String>,
) -> RpcResult<JobList> {
    let limit = checked_limit(limit)?;
    let since_ms = match since.as_deref() {
        Some(text) => Some(super::since::parse_param(text, store::now_ms())?),
        None => None,
    };
    let state = match state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ErrorCode::InvalidParameters.error_with(
                format!("unknown state {s:?}"),
                vec![FieldError {
                    field: "state".into(),
                    message: "must be one of queued, running, succeeded, failed, cancelled".into(),
                }],
            )
        })?),
    };
    let filter = ListFilter {
        state,
        chain,
        tenant,
        since_ms,
        limit,
        before,
    };
    let mut list = server
        .store
        .read(move |conn| store::list_jobs(conn, &filter))
        .await
        .map_err(store_error)?;
    let open: Vec<u64> = list
        .jobs
        .iter()
        .filter(|j| !j.state.is_terminal())
        .map(|j| j.id)
        .collect();
    let mut waiting = server.engine.waiting(open).await;
    for job in &mut list.jobs {
        job.waiting = waiting.remove(&job.id);
    }
    Ok(list)
}

/// `limit` within the documented range, or -32602 naming the range: a page
/// of 0 or 5000 jobs is a mistake to say, not to clamp silently.
fn checked_limit(limit: Option<u32>) -> Result<u32, ErrorObjectOwned> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if LIST_LIMITS.contains(&n) => Ok(n),
        Some(n) => Err(ErrorObjectOwned::owned::<()>(
            INVALID_PARAMS_CODE,
            format!(
                "limit must be between {} and {} (got {n})",
                LIST_LIMITS.start(),
                LIST_LIMITS.end()
            ),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_out_of_range_names_the_range() {
        assert_eq!(checked_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(checked_limit(Some(1000)).ok(), Some(1000));
        for bad in [0, 1001, 5000] {
            let error = checked_limit(Some(bad)).expect_err("out of range");
            assert_eq!(error.code(), INVALID_PARAMS_CODE);
            assert_eq!(
                error.message(),
                format!("limit must be between 1 and 1000 (got {bad})")
            );
        }
    }
}
