//! `job.list`: recent jobs, filtered and paged, newest first, with why
//! those not ended wait.

use holdfast_api::{ErrorCode, FieldError, JobList, JobState};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
use crate::store::{self, ListFilter};

pub(super) async fn handle(
    server: &RpcServer,
    state: Option<String>,
    chain: Option<String>,
    limit: Option<u32>,
    before: Option<u64>,
) -> RpcResult<JobList> {
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
        limit: limit.unwrap_or(50),
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
