//! Notifications: deliveries of outbox events to the rules of the settings
//! file and of the loaded chain files (`[notify.NAME]`), made by one task
//! beside the engine, never in it.
//!
//! The task reads events past its cursor from the database, queues one
//! delivery row per matching rule (and moves the cursor) in one
//! transaction, then attempts the due deliveries and records each outcome.
//! So a delivery survives a restart or a kill -9 at any point: at least
//! once, with the event id in the payload (and in `X-Holdfast-Event-Id`)
//! for receivers that deduplicate. A failed attempt is retried after
//! `retry_delay`, doubling up to `max_retry_delay`, `max_attempts` times.
//! The task wakes on the engine's `events` watch, at the next due retry,
//! on `hfctl notifications retry`, and when the registry changes (a chain's
//! rules come and go with its file). While there is no rule at all it only
//! follows the last event id, reading nothing.

mod deliver;
mod mail;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use holdfast_api::Event;
use tokio::sync::{Notify, watch};

use crate::registry::Registry;
use crate::store::{self, NewDelivery, Store, StoreError, WriteOp};
pub use rules::{Rule, RuleFile};

/// Events read from the database at a time.
const PAGE: u32 = 500;
/// Events looked at between two commits of a cursor that queued nothing.
const CURSOR_EVERY: u64 = 10_000;
/// How long the notifier waits after a store error.
const STORE_PAUSE: Duration = Duration::from_secs(5);

/// Wakes the task when a delivery is retried by hand.
static RETRY: Notify = Notify::const_new();

/// Ask the task to look at due deliveries now.
pub fn wake() {
    RETRY.notify_one();
}

/// Start the task: the settings file's rules, and those of the chains in
/// `registry` as it changes.
pub fn start(
    store: Store,
    settings_rules: Arc<Vec<Rule>>,
    registry: watch::Receiver<Arc<Registry>>,
    events: watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        // A store error (a full disk) pauses the notifier; it goes on from
        // what is committed, so nothing is lost or sent twice by the pause.
        let rules = Rules {
            settings: settings_rules,
            registry,
        };
        while let Err(error) = run(store.clone(), rules.clone(), events.clone()).await {
            tracing::error!(%error, "notifications paused by a store error; trying again in 5s");
            tokio::time::sleep(STORE_PAUSE).await;
        }
    });
}

/// Where the rules come from.
#[derive(Clone)]
struct Rules {
    settings: Arc<Vec<Rule>>,
    registry: watch::Receiver<Arc<Registry>>,
}

impl Rules {
    /// The settings file's rules, then each loaded chain's.
    fn current(&mut self) -> Vec<Rule> {
        let registry = self.registry.borrow_and_update().clone();
        let mut rules = self.settings.as_ref().clone();
        for entry in registry.entries.values() {
            rules.extend(entry.notify.iter().cloned());
        }
        rules
    }
}

async fn run(
    store: Store,
    mut sources: Rules,
    mut events: watch::Receiver<u64>,
) -> Result<(), StoreError> {
    // The first start notifies from now on, not about the whole history.
    let start = match store.read(store::notify_cursor).await? {
        Some(cursor) => cursor,
        None => store.read(store::max_event_id).await?,
    };
    let mut cursor = Cursor {
        read: start,
        stored: start,
    };
    let mut rules = sources.current();
    // `changed()` below marks the registry seen: it says so here.
    let mut reload = false;
    loop {
        let last = *events.borrow_and_update();
        if std::mem::take(&mut reload) || sources.registry.has_changed().unwrap_or(false) {
            rules = sources.current();
        }
        if rules.is_empty() {
            skip(&store, last, &mut cursor).await?;
        } else {
            queue(&store, &rules, &mut cursor).await?;
        }
        deliver_due(&store, &rules).await?;
        let next = store.read(store::next_delivery_at).await?;
        let sleep = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis((at - store::now_ms()).max(0) as u64)
        });
        tokio::select! {
            changed = events.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(sleep) => {}
            () = RETRY.notified() => {}
            changed = sources.registry.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                reload = true;
            }
        }
    }
}

/// The last event looked at, and the last one committed as such.
struct Cursor {
    read: u64,
    stored: u64,
}

/// No rule: move the cursor past `last` without reading the events,
/// committing it as [`queue`] does for events that matched nothing.
async fn skip(store: &Store, last: u64, cursor: &mut Cursor) -> Result<(), StoreError> {
    if last > cursor.read {
        cursor.read = last;
    }
    if cursor.read - cursor.stored >= CURSOR_EVERY {
        store
            .write(
                vec![WriteOp::QueueDeliveries {
                    deliveries: Vec::new(),
                    last_event: cursor.read,
                    at: store::now_ms(),
                }],
                false,
            )
            .await?;
        cursor.stored = cursor.read;
    }
    Ok(())
}

/// Queue deliveries for the events past the cursor and move it.
///
/// The cursor is committed with every delivery it queues (so no event is
/// queued twice), and otherwise only every [`CURSOR_EVERY`] events: events
/// that matched no rule may be looked at again after a restart, which
/// queues nothing. So events no rule wants cost the store no write, and
/// the writes are not synchronous: the cursor and its deliveries are lost
/// or kept together, and the events they come from are in the outbox.
async fn queue(store: &Store, rules: &[Rule], cursor: &mut Cursor) -> Result<(), StoreError> {
    loop {
        let after = cursor.read;
        let page: Vec<Event> = store
            .read(move |conn| store::events_since(conn, after, PAGE))
            .await?;
        let Some(last) = page.last().map(|e| e.id) else {
            return Ok(());
        };
        let mut deliveries = Vec::new();
        let now = store::now_ms();
        for event in &page {
            for rule in rules.iter().filter(|r| r.matches(event)) {
                deliveries.push(NewDelivery {
                    event_id: event.id,
                    rule: rule.name.clone(),
                    kind: event.kind.clone(),
                    job_id: event.job_id,
                    payload: serde_json::to_string(event).unwrap_or_default(),
                    digest_until: rule.coalesce.map(|window| now + window.as_millis() as i64),
                });
            }
        }
        let full = page.len() == PAGE as usize;
        if !deliveries.is_empty() || last - cursor.stored >= CURSOR_EVERY {
            store
                .write(
                    vec![WriteOp::QueueDeliveries {
                        deliveries,
                        last_event: last,
                        at: store::now_ms(),
                    }],
                    false,
                )
                .await?;
            cursor.stored = last;
        }
        cursor.read = last;
        if !full {
            return Ok(());
        }
    }
}

/// Attempt every due delivery and record how each went.
async fn deliver_due(store: &Store, rules: &[Rule]) -> Result<(), StoreError> {
    loop {
        let now = store::now_ms();
        let due = store
            .read(move |conn| store::due_deliveries(conn, now, 50))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        for delivery in due {
            let attempts = delivery.attempts + 1;
            let Some(rule) = rules.iter().find(|r| r.name == delivery.rule) else {
                let error = format!(
                    "rule {} is no longer in the settings or its chain file; add it back and retry",
                    delivery.rule
                );
                store
                    .write(
                        vec![outcome(delivery.id, "failed", attempts, 0, Some(error))],
                        false,
                    )
                    .await?;
                continue;
            };
            let op = match deliver::send(rule, &delivery).await {
                Ok(()) => {
                    tracing::info!(rule = %rule.name, event = delivery.event_id, kind = %delivery.kind, attempts, "notification delivered");
                    outcome(delivery.id, "delivered", attempts, 0, None)
                }
                Err(error) if attempts >= rule.max_attempts => {
                    tracing::error!(rule = %rule.name, event = delivery.event_id, attempts, %error, "notification failed; no attempt left (hfctl notifications retry)");
                    outcome(delivery.id, "failed", attempts, 0, Some(error.to_string()))
                }
                Err(error) => {
                    let delay = rule.backoff(attempts);
                    tracing::warn!(rule = %rule.name, event = delivery.event_id, attempts, %error, retry_in = %humantime::format_duration(delay), "notification not delivered; retrying");
                    let next = store::now_ms() + delay.as_millis() as i64;
                    outcome(
                        delivery.id,
                        "pending",
                        attempts,
                        next,
                        Some(error.to_string()),
                    )
                }
            };
            store.write(vec![op], false).await?;
        }
    }
}

fn outcome(
    id: u64,
    state: &'static str,
    attempts: u32,
    next_at: i64,
    error: Option<String>,
) -> WriteOp {
    WriteOp::DeliveryAttempt {
        id,
        state,
        attempts,
        next_at,
        error,
        at: store::now_ms(),
    }
}
