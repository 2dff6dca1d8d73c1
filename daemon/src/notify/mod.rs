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
//! rules come and go with its file). The engine wakes it only after a
//! commit that carried an event of a kind some rule names, and it reads
//! only events of those kinds, matching rules on the stored columns and
//! queueing the stored payload as it is.

mod deliver;
mod mail;
mod report;
pub mod rules;
pub mod smtp;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::registry::Registry;
use crate::store::{self, NewDelivery, Store, StoreError, WriteOp};
pub use rules::{Rule, RuleFile};

/// Events read from the database at a time.
const PAGE: u32 = 500;
/// Events looked at between two commits of a cursor that queued nothing.
const CURSOR_EVERY: u64 = 10_000;
/// How long the notifier lets events gather after a wake-up.
const GATHER: Duration = Duration::from_millis(20);
/// Rules whose deliveries are attempted at once.
const AT_ONCE: usize = 8;
/// How long the notifier waits after a store error.
const STORE_PAUSE: Duration = Duration::from_secs(5);

/// Wakes the task when a delivery is retried by hand.
static RETRY: Notify = Notify::const_new();

/// Ask the task to look at due deliveries now.
pub fn wake() {
    RETRY.notify_one();
}

/// Every rule: the settings file's, then each loaded chain's.
pub fn rules_of(settings_rules: &[Rule], registry: &Registry) -> Vec<Rule> {
    let mut rules = settings_rules.to_vec();
    for entry in registry.entries.values() {
        rules.extend(entry.notify.iter().cloned());
    }
    rules
}

/// Start the task: the settings file's rules, and those of the chains in
/// `registry` as it changes. `notifier` is the last committed event of a
/// kind some rule names (the engine's [`crate::engine::EngineHandle`]).
pub fn start(
    store: Store,
    settings_rules: Arc<Vec<Rule>>,
    registry: watch::Receiver<Arc<Registry>>,
    notifier: watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        // A store error (a full disk) pauses the notifier; it goes on from
        // what is committed, so nothing is lost or sent twice by the pause.
        let rules = Rules {
            settings: settings_rules,
            registry,
        };
        while let Err(error) = run(store.clone(), rules.clone(), notifier.clone()).await {
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
    /// The settings file's rules, then each loaded chain's, and the last
    /// event id given out before they were loaded.
    fn current(&mut self) -> (Vec<Rule>, u64) {
        let registry = self.registry.borrow_and_update().clone();
        (rules_of(&self.settings, &registry), registry.events_before)
    }
}

/// The kinds `rules` name, as the JSON array the store's query takes.
fn kinds_of(rules: &[Rule]) -> String {
    let mut kinds: Vec<&str> = rules
        .iter()
        .flat_map(|r| r.on.iter().map(String::as_str))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    serde_json::to_string(&kinds).unwrap_or_else(|_| "[]".into())
}

async fn run(
    store: Store,
    mut sources: Rules,
    mut notifier: watch::Receiver<u64>,
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
    let (mut rules, _) = sources.current();
    let mut kinds = kinds_of(&rules);
    // `changed()` below marks the registry seen: it says so here.
    let mut reload = false;
    // Due deliveries are looked for when one was queued, at the next due
    // time, on a retry by hand and when the rules change; not after events
    // that queued nothing.
    let mut look_for_due = true;
    let mut next = None;
    loop {
        let upto = *notifier.borrow_and_update();
        if std::mem::take(&mut reload) || sources.registry.has_changed().unwrap_or(false) {
            let had_none = rules.is_empty();
            let before;
            (rules, before) = sources.current();
            kinds = kinds_of(&rules);
            // The first rule (a chain's, loaded later) notifies what
            // happened after it loaded, not while there was none.
            if had_none && !rules.is_empty() {
                cursor.read = cursor.read.max(before);
            }
        }
        let queued = !rules.is_empty() && queue(&store, &rules, &kinds, upto, &mut cursor).await?;
        if queued || std::mem::take(&mut look_for_due) {
            deliver_due(&store, &rules).await?;
            next = store.read(store::next_delivery_at).await?;
        }
        let sleep = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis((at - store::now_ms()).max(0) as u64)
        });
        tokio::select! {
            changed = notifier.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // Let the events of the next commits gather: under load one
                // read and one write serve many of them, for a few
                // milliseconds of latency.
                tokio::time::sleep(GATHER).await;
            }
            () = tokio::time::sleep(sleep) => look_for_due = true,
            () = RETRY.notified() => look_for_due = true,
            changed = sources.registry.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                reload = true;
                look_for_due = true;
            }
        }
    }
}

/// The last event looked at, and the last one committed as such.
struct Cursor {
    read: u64,
    stored: u64,
}

/// Queue deliveries for the events past the cursor and move it; true when
/// any was queued.
///
/// The cursor is committed with every delivery it queues (so no event is
/// queued twice), and otherwise only every [`CURSOR_EVERY`] events: events
/// that matched no rule may be looked at again after a restart, which
/// queues nothing. So events no rule wants cost the store no write, and
/// the writes are not synchronous: the cursor and its deliveries are lost
/// or kept together, and the events they come from are in the outbox.
async fn queue(
    store: &Store,
    rules: &[Rule],
    kinds: &str,
    upto: u64,
    cursor: &mut Cursor,
) -> Result<bool, StoreError> {
    let mut queued = false;
    loop {
        let after = cursor.read;
        if after >= upto {
            return Ok(queued);
        }
        let kinds = kinds.to_string();
        let page = store
            .read(move |conn| store::events_of_kinds(conn, after, upto, &kinds, PAGE))
            .await?;
        // A page that is not full holds every wanted event up to `upto`.
        let full = page.len() == PAGE as usize;
        let last = match page.last() {
            Some(event) if full => event.id,
            _ => upto,
        };
        let mut deliveries = Vec::new();
        let now = store::now_ms();
        for event in &page {
            let (chain, tenant) = (event.chain.as_deref(), event.tenant.as_deref());
            for rule in rules
                .iter()
                .filter(|r| r.matches(&event.kind, chain, tenant))
            {
                deliveries.push(NewDelivery {
                    event_id: event.id,
                    rule: rule.name.clone(),
                    kind: event.kind.clone(),
                    job_id: event.job_id,
                    payload: event.payload.clone(),
                    digest_until: rule.coalesce.map(|window| now + window.as_millis() as i64),
                });
            }
        }
        queued |= !deliveries.is_empty();
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
            return Ok(queued);
        }
    }
}

/// Attempt every due delivery and record how the attempts of each page of
/// them went in one write. Each rule's deliveries are attempted one after
/// the other, in order (a receiver sees a job start before it ends, and a
/// hook never runs twice at once); up to [`AT_ONCE`] rules at a time, so
/// one slow receiver does not hold up the others.
async fn deliver_due(store: &Store, rules: &[Rule]) -> Result<(), StoreError> {
    loop {
        let now = store::now_ms();
        let due = store
            .read(move |conn| store::due_deliveries(conn, now, 50))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        let mut by_rule: Vec<(Rule, Vec<store::DueDelivery>)> = Vec::new();
        for delivery in due {
            if let Some((_, list)) = by_rule.iter_mut().find(|(r, _)| r.name == delivery.rule) {
                list.push(delivery);
                continue;
            }
            match rules.iter().find(|r| r.name == delivery.rule) {
                Some(rule) => by_rule.push((rule.clone(), vec![delivery])),
                None => {
                    let error = format!(
                        "rule {} is no longer in the settings or its chain file; add it back and retry",
                        delivery.rule
                    );
                    ops.push(outcome(
                        delivery.id,
                        "failed",
                        delivery.attempts + 1,
                        0,
                        Some(error),
                    ));
                }
            }
        }
        let mut running = tokio::task::JoinSet::new();
        let mut started = std::collections::HashMap::new();
        let mut groups = by_rule.into_iter();
        loop {
            while running.len() < AT_ONCE {
                let Some((rule, list)) = groups.next() else {
                    break;
                };
                let ids: Vec<(u64, u32)> = list.iter().map(|d| (d.id, d.attempts + 1)).collect();
                let store = store.clone();
                let task = running.spawn(async move {
                    let mut ops = Vec::with_capacity(list.len());
                    for delivery in &list {
                        let result = deliver::send(&rule, delivery, &store).await;
                        ops.push(settle(&rule, delivery, result));
                    }
                    ops
                });
                started.insert(task.id(), ids);
            }
            match running.join_next_with_id().await {
                Some(Ok((_, done))) => ops.extend(done),
                // Never expected: the rule's deliveries are tried again
                // after a pause (a delivered one may go out twice: at
                // least once).
                Some(Err(error)) => {
                    tracing::error!(%error, "a notification task ended abnormally");
                    let next = store::now_ms() + STORE_PAUSE.as_millis() as i64;
                    for (id, attempts) in started.remove(&error.id()).unwrap_or_default() {
                        let message = format!("the attempt ended abnormally: {error}");
                        ops.push(outcome(id, "pending", attempts, next, Some(message)));
                    }
                }
                None => break,
            }
        }
        store.write(ops, false).await?;
    }
}

/// The outcome of one attempt, logged, as the write that records it.
fn settle(
    rule: &Rule,
    delivery: &store::DueDelivery,
    result: Result<(), deliver::DeliveryError>,
) -> WriteOp {
    let attempts = delivery.attempts + 1;
    match result {
        Ok(()) => {
            crate::metrics::global().delivery("delivered");
            tracing::info!(rule = %rule.name, event = delivery.event_id, kind = %delivery.kind, attempts, "notification delivered");
            outcome(delivery.id, "delivered", attempts, 0, None)
        }
        Err(error) if attempts >= rule.max_attempts => {
            crate::metrics::global().delivery("failed");
            tracing::error!(rule = %rule.name, event = delivery.event_id, attempts, %error, "notification failed; no attempt left (hfctl notifications retry)");
            outcome(delivery.id, "failed", attempts, 0, Some(error.to_string()))
        }
        Err(error) => {
            crate::metrics::global().delivery("retrying");
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
