//! Backfill: one fire of a schedule per instant its rule gives in a past
//! range, each job as of its own instant, submitted oldest first.
//!
//! The range is planned outside the engine loop ([`plan`]: the instants,
//! the cap, every fire's parameters computed once as a check), so a long
//! range never holds up the engine; the engine only submits. With
//! `overlap = "allow"` every fire is submitted at once. Otherwise the fires
//! wait in the schedule's queue and each is submitted when the jobs of the
//! previous one have ended (as Airflow runs a backfill in order), whatever
//! `skip` would do to a timed fire: a backfill is asked for, so none of it
//! is dropped. The queue is stored with the schedule, each fire taken off
//! it in the batch that records the fire's jobs, so a restart goes on
//! where it was; a pause of the schedule drops it.

use chrono::{DateTime, Duration, Utc};
use holdfast_workflow::{BusinessDate, DateZone, Overlap, Schedule};

use super::Engine;
use super::schedules::ScheduleControlError;
use crate::store::WriteOp;

/// The most fires one backfill may hold.
pub const MAX_BACKFILL_FIRES: usize = 1000;

/// What a backfill did.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// Jobs submitted by this call.
    pub jobs: Vec<u64>,
    /// Fires left in the schedule's queue.
    pub queued: usize,
}

/// The fires of `schedule` in [`from`, `to`] (a bare date as `to` includes
/// that whole day), oldest first, each with its parameters computed once
/// so that a date that cannot be computed refuses the whole backfill
/// before any job exists. Runs outside the engine loop.
pub fn plan(
    chain: &str,
    schedule: &Schedule,
    from: &str,
    to: &str,
) -> Result<Vec<BusinessDate>, ScheduleControlError> {
    let name = &schedule.name;
    let zone = schedule.zone();
    let invalid =
        |field: &'static str, message: String| ScheduleControlError::Invalid { field, message };
    let start = BusinessDate::parse(from, zone).map_err(|m| invalid("from", m))?;
    let end = BusinessDate::parse(to, zone).map_err(|m| invalid("to", m))?;
    let until = if BusinessDate::is_bare_date(to) {
        next_day(to, zone).map_err(|m| invalid("to", m))? - Duration::seconds(1)
    } else {
        end.at
    };
    if until < start.at {
        return Err(invalid(
            "to",
            format!("{to:?} is before --from {from:?}; give the range oldest first"),
        ));
    }
    // Fires are whole seconds: a fire exactly at `from` is in the range.
    let after = start
        .at
        .checked_sub_signed(Duration::milliseconds(1))
        .unwrap_or(start.at);
    let instants = schedule
        .rule
        .fires_between(after, until, MAX_BACKFILL_FIRES + 1);
    if instants.len() > MAX_BACKFILL_FIRES {
        return Err(invalid(
            "to",
            format!(
                "the range holds more than {MAX_BACKFILL_FIRES} fires of {chain}.{name}; \
                 backfill it in smaller ranges"
            ),
        ));
    }
    if instants.is_empty() {
        return Err(invalid(
            "from",
            format!(
                "no fire of {chain}.{name} ({}) falls between {from} and {to}; widen the range",
                schedule.cron()
            ),
        ));
    }
    let fires: Vec<BusinessDate> = instants
        .into_iter()
        .map(|at| BusinessDate { at, zone })
        .collect();
    for date in &fires {
        if let Err(errors) = schedule.params_at(date) {
            let (param, message) = errors.into_iter().next().unwrap_or_default();
            return Err(ScheduleControlError::Refused(format!(
                "{chain}.{name} as of {}: parameter {param:?}: {message}",
                date.rfc3339()
            )));
        }
    }
    Ok(fires)
}

impl Engine {
    /// Submit the planned `fires` of `chain.name`, oldest first.
    pub(super) fn schedule_backfill(
        &mut self,
        chain: &str,
        name: &str,
        fires: Vec<DateTime<Utc>>,
    ) -> Result<Backfill, ScheduleControlError> {
        if self.shutting_down.is_some() {
            return Err(ScheduleControlError::Stopping);
        }
        let key = (chain.to_string(), name.to_string());
        let Some(run) = self.schedules.get(&key) else {
            return Err(ScheduleControlError::NotFound(format!(
                "no schedule {chain}.{name}; see `hfctl schedules`"
            )));
        };
        if !run.backfill.is_empty() {
            return Err(ScheduleControlError::Busy(format!(
                "a backfill of {chain}.{name} is still under way ({} fires left); wait for it, \
                 or pause the schedule to drop it",
                run.backfill.len()
            )));
        }
        let allow = run.schedule.overlap == Overlap::Allow;
        self.durable = true;
        tracing::info!(HF_CHAIN = %chain, schedule = %name, fires = fires.len(), "backfill");
        let mut jobs = Vec::new();
        if allow {
            for at in fires {
                let refused = self.fire(&key, true, at);
                if refused.is_empty() {
                    jobs.extend(
                        self.schedules
                            .get(&key)
                            .map(|r| r.last_jobs.clone())
                            .unwrap_or_default(),
                    );
                }
            }
        } else {
            if let Some(run) = self.schedules.get_mut(&key) {
                run.backfill = fires.into_iter().collect();
            }
            jobs = self.next_backfill_fire(&key, None);
            self.save_backfill(&key);
        }
        let queued = self.schedules.get(&key).map_or(0, |r| r.backfill.len());
        self.arm_schedule_timer();
        Ok(Backfill { jobs, queued })
    }

    /// Submit the next queued backfill fire of `key` unless jobs of its
    /// last fire (other than `finished`) are still in flight. A fire whose
    /// jobs are all refused (recorded like any refused fire) is passed
    /// over for the next. Returns the jobs submitted.
    pub(super) fn next_backfill_fire(
        &mut self,
        key: &(String, String),
        finished: Option<u64>,
    ) -> Vec<u64> {
        loop {
            let Some(run) = self.schedules.get(key) else {
                return Vec::new();
            };
            if run.paused || self.fire_in_flight(run, finished) {
                return Vec::new();
            }
            let Some(at) = self
                .schedules
                .get_mut(key)
                .and_then(|r| r.backfill.pop_front())
            else {
                return Vec::new();
            };
            // The queue without this fire is committed with its jobs, so a
            // restart neither repeats nor skips it.
            self.save_backfill(key);
            let refused = self.fire(key, true, at);
            let jobs = self
                .schedules
                .get(key)
                .map(|r| r.last_jobs.clone())
                .unwrap_or_default();
            if refused.is_empty() || !jobs.is_empty() {
                return jobs;
            }
        }
    }
}

impl Engine {
    /// Record the schedule's backfill queue as it is now.
    fn save_backfill(&mut self, key: &(String, String)) {
        let fires = self.schedules.get(key).map_or_else(Vec::new, |run| {
            run.backfill
                .iter()
                .map(|at| at.timestamp_millis())
                .collect()
        });
        self.ops.push(WriteOp::ScheduleBackfill {
            chain: key.0.clone(),
            name: key.1.clone(),
            fires,
        });
        self.durable = true;
    }
}

/// Midnight after the bare date `text` in `zone`.
fn next_day(text: &str, zone: DateZone) -> Result<DateTime<Utc>, String> {
    let date = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.succ_opt())
        .ok_or_else(|| format!("{text:?} is not a date that exists"))?;
    BusinessDate::parse(&date.format("%Y-%m-%d").to_string(), zone).map(|d| d.at)
}
