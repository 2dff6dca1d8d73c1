//! `schedule.list`, `schedule.pause`, `schedule.resume`, `schedule.trigger`,
//! `schedule.backfill`.

use holdfast_api::{BackfillResult, ErrorCode, FieldError, ScheduleInfo};
use jsonrpsee::core::RpcResult;
use jsonrpsee::types::ErrorObjectOwned;

use super::{RpcServer, store_error};
use crate::engine::backfill::{self, Backfill};
use crate::engine::{Caller, ScheduleAction, ScheduleControlError, ScheduleView};
use crate::store;

async fn info(server: &RpcServer, view: ScheduleView) -> RpcResult<ScheduleInfo> {
    let last_job_state = match view.last_job {
        Some(id) => server
            .store
            .read(move |conn| store::job_state(conn, id))
            .await
            .map_err(store_error)?,
        None => None,
    };
    let (chain, name) = (view.chain.clone(), view.name.clone());
    let last_error = server
        .store
        .read(move |conn| store::schedule_error(conn, &chain, &name))
        .await
        .map_err(store_error)?;
    let zone =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(ScheduleInfo {
        chain: view.chain,
        name: view.name,
        cron: view.cron,
        timezone: view.timezone,
        enabled: view.enabled,
        paused: view.paused,
        catch_up: view.catch_up.as_str().into(),
        overlap: view.overlap.as_str().into(),
        tenants: view.tenants,
        next_fire: view.next_fire.map(zone),
        last_handled: zone(view.last_handled),
        last_job: view.last_job,
        last_job_state,
        last_error_at: last_error
            .as_ref()
            .map(|(_, at)| zone(chrono::DateTime::from_timestamp_millis(*at).unwrap_or_default())),
        last_error: last_error.map(|(error, _)| error),
        backfill: view.backfill.iter().map(|d| d.rfc3339()).collect(),
    })
}

pub(super) async fn list(server: &RpcServer) -> RpcResult<Vec<ScheduleInfo>> {
    // Schedules live in the engine: none runs, and none can be shown, while
    // it is held back.
    if let Some(reason) = server.engine.held() {
        return Err(ErrorCode::Unavailable.error(format!("schedules are not running: {reason}")));
    }
    let mut out = Vec::new();
    for view in server.engine.schedules().await {
        out.push(info(server, view).await?);
    }
    Ok(out)
}

pub(super) async fn control(
    server: &RpcServer,
    caller: Caller,
    name: String,
    action: ScheduleAction,
) -> RpcResult<ScheduleInfo> {
    let method = match action {
        ScheduleAction::Pause => "schedule.pause",
        ScheduleAction::Resume => "schedule.resume",
        ScheduleAction::Trigger { .. } => "schedule.trigger",
    };
    let (chain, schedule) = operable(server, &caller, method, &name).await?;
    let result = server
        .engine
        .schedule_control(chain.to_string(), schedule.to_string(), action)
        .await;
    let (outcome, detail) = match &result {
        Ok(view) => ("ok", view.last_job.map(|j| format!("last job {j}"))),
        Err(e) => ("refused", Some(e.to_string())),
    };
    server
        .audit(&caller, method, Some(name), outcome, detail)
        .await;
    match result {
        Ok(view) => info(server, view).await,
        Err(e) => Err(control_error(e)),
    }
}

/// Only operators operate schedules, named `CHAIN.NAME`; a refusal is
/// audited under `method`.
async fn operable(
    server: &RpcServer,
    caller: &Caller,
    method: &'static str,
    name: &str,
) -> RpcResult<(String, String)> {
    let refusal = if !crate::access::is_operator(caller, &server.settings) {
        Err(ErrorCode::PermissionDenied.error(
            "operating schedules is for root, the daemon's user and operator_groups members",
        ))
    } else {
        name.split_once('.')
            .map(|(c, s)| (c.to_string(), s.to_string()))
            .ok_or_else(|| {
                ErrorCode::NotFound.error(format!("name schedules as CHAIN.NAME, got {name:?}"))
            })
    };
    if let Err(e) = &refusal {
        server
            .audit(
                caller,
                method,
                Some(name.to_string()),
                "refused",
                Some(e.message().to_string()),
            )
            .await;
    }
    refusal
}

fn control_error(e: ScheduleControlError) -> ErrorObjectOwned {
    match e {
        ScheduleControlError::NotFound(_) => ErrorCode::NotFound.error(e.to_string()),
        ScheduleControlError::Refused(_) => ErrorCode::InvalidParameters.error(e.to_string()),
        ScheduleControlError::Busy(_) => ErrorCode::InvalidState.error(e.to_string()),
        ScheduleControlError::Invalid { field, ref message } => ErrorCode::InvalidParameters
            .error_with(
                format!("invalid parameters: {e}"),
                vec![FieldError {
                    field: field.to_string(),
                    message: message.clone(),
                }],
            ),
        ScheduleControlError::Stopping | ScheduleControlError::Unavailable(_) => {
            ErrorCode::Unavailable.error(e.to_string())
        }
    }
}

/// `schedule.backfill`: operators only, like `schedule.trigger`.
pub(super) async fn backfill(
    server: &RpcServer,
    caller: Caller,
    name: String,
    from: String,
    to: String,
    dry_run: bool,
) -> RpcResult<BackfillResult> {
    let method = "schedule.backfill";
    let (chain, schedule_name) = operable(server, &caller, method, &name).await?;
    if let Some(reason) = server.engine.held() {
        return Err(ErrorCode::Unavailable.error(format!("schedules are not running: {reason}")));
    }
    let schedule = server.engine.registry.borrow().chain(&chain).and_then(|c| {
        c.schedules
            .iter()
            .find(|s| s.name == schedule_name)
            .cloned()
    });
    let result = match schedule {
        None => Err(ScheduleControlError::NotFound(format!(
            "no schedule {name}; see `hfctl schedules`"
        ))),
        // Up to 1,000 instants with their parameters: off the async
        // threads, and off the engine loop.
        Some(schedule) => {
            let (chain, from, to) = (chain.clone(), from.clone(), to.clone());
            tokio::task::spawn_blocking(move || backfill::plan(&chain, &schedule, &from, &to))
                .await
                .unwrap_or(Err(ScheduleControlError::Stopping))
        }
    };
    let result = match result {
        Ok(fires) if dry_run => Ok((
            fires,
            Backfill {
                jobs: Vec::new(),
                queued: 0,
            },
        )),
        Ok(fires) => server
            .engine
            .schedule_backfill(chain, schedule_name, fires.iter().map(|d| d.at).collect())
            .await
            .map(|done| (fires, done)),
        Err(e) => Err(e),
    };
    let (outcome, detail) = match &result {
        Ok((fires, done)) => (
            "ok",
            format!(
                "{from} to {to}: {} fires{}, jobs {:?}, {} queued",
                fires.len(),
                if dry_run { " (dry run)" } else { "" },
                done.jobs,
                done.queued
            ),
        ),
        Err(e) => ("refused", e.to_string()),
    };
    server
        .audit(&caller, method, Some(name.clone()), outcome, Some(detail))
        .await;
    let (fires, done) = result.map_err(control_error)?;
    Ok(BackfillResult {
        schedule: name,
        fires: fires.iter().map(|d| d.rfc3339()).collect(),
        jobs: done.jobs,
        queued: done.queued,
        dry_run,
    })
}
