//! `events.subscribe`: the event outbox as a stream, replayed from the
//! database after `since`, then followed as the engine commits.
//!
//! The database is the only source: the subscription remembers the last id
//! it read, and each wake-up (the engine's `events` watch, sent after a
//! commit that carried events) reads what lies beyond it. So there is no gap
//! between replay and live and no duplicate, and a subscriber costs one page
//! of events in memory however far behind it is. A subscriber that does not
//! take an event within [`SLOW`] is closed with the id to resume from.

use std::time::Duration;

use holdfast_api::{ErrorCode, Event, EventFilter};
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::core::server::SendTimeoutError;

use super::RpcServer;
use crate::engine::Caller;
use crate::store;

/// Events read from the database at a time.
const PAGE: u32 = 500;
/// Longest a subscriber may leave an event unread before it is closed.
const SLOW: Duration = Duration::from_secs(30);

/// May `caller` see `event`? As for `job.get`: everyone who may use the
/// socket reads every job, so every event.
fn may_see(_caller: &Caller, _event: &Event) -> bool {
    true
}

pub(super) async fn handle(
    server: &RpcServer,
    pending: PendingSubscriptionSink,
    caller: Caller,
    since: Option<u64>,
    filter: EventFilter,
    follow: bool,
) -> SubscriptionResult {
    // Subscribe before the first read so no commit falls in between.
    let mut committed = server.engine.events.clone();
    committed.mark_unchanged();
    let (high, low) = server
        .store
        .read(|conn| Ok((store::max_event_id(conn)?, store::min_event_id(conn)?)))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(since) = since {
        if since > high {
            let message = format!(
                "no event {since} was ever recorded (the last is {high}); resubscribe without since"
            );
            pending.reject(ErrorCode::NotFound.error(message)).await;
            return Ok(());
        }
        if let Some(low) = low
            && since < high
            && low > since + 1
        {
            let message = format!(
                "events after {since} were deleted by retention (the oldest kept is {low}); resubscribe with since = {} or without since",
                low - 1
            );
            pending.reject(ErrorCode::NotFound.error(message)).await;
            return Ok(());
        }
    }
    let mut last = since.unwrap_or(high);
    let sink = pending.accept().await?;
    loop {
        let after = last;
        let page = server
            .store
            .read(move |conn| store::events_since(conn, after, PAGE))
            .await
            .map_err(|e| e.to_string())?;
        let full = page.len() == PAGE as usize;
        for event in page {
            if filter.matches(&event) && may_see(&caller, &event) {
                let message = serde_json::value::to_raw_value(&event)?;
                match sink.send_timeout(message, SLOW).await {
                    Ok(()) => {}
                    Err(SendTimeoutError::Closed(_)) => return Ok(()),
                    Err(SendTimeoutError::Timeout(_)) => {
                        return Err(format!(
                            "events were not read for {}s; resubscribe with since = {last}",
                            SLOW.as_secs()
                        )
                        .into());
                    }
                }
            }
            last = event.id;
        }
        if full {
            continue;
        }
        if !follow {
            return Err(format!("caught up at event {last}").into());
        }
        tokio::select! {
            changed = committed.changed() => {
                if changed.is_err() {
                    return Err(format!("the daemon is stopping; resubscribe with since = {last}").into());
                }
            }
            () = sink.closed() => return Ok(()),
        }
    }
}
