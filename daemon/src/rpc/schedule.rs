//! `schedule.list`, `schedule.pause`, `schedule.resume`, `schedule.trigger`.

use holdfast_api::{ErrorCode, ScheduleInfo};
use jsonrpsee::core::RpcResult;

use super::{RpcServer, store_error};
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
        ScheduleAction::Trigger => "schedule.trigger",
    };
    if !crate::access::is_operator(&caller, &server.settings) {
        let message =
            "operating schedules is for root, the daemon's user and operator_groups members"
                .to_string();
        server
            .audit(
                &caller,
                method,
                Some(name.clone()),
                "refused",
                Some(message.clone()),
            )
            .await;
        return Err(ErrorCode::PermissionDenied.error(message));
    }
    let Some((chain, schedule)) = name.split_once('.') else {
        let message = format!("name schedules as CHAIN.NAME, got {name:?}");
        server
            .audit(
                &caller,
                method,
                Some(name.clone()),
                "refused",
                Some(message.clone()),
            )
            .await;
        return Err(ErrorCode::NotFound.error(message));
    };
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
        Err(e @ ScheduleControlError::NotFound(_)) => Err(ErrorCode::NotFound.error(e.to_string())),
        Err(e @ ScheduleControlError::Refused(_)) => {
            Err(ErrorCode::InvalidParameters.error(e.to_string()))
        }
        Err(e @ ScheduleControlError::Stopping) => Err(ErrorCode::Unavailable.error(e.to_string())),
    }
}
