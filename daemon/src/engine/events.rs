//! The event outbox: the engine's transitions as events, each one a
//! `WriteOp` in the batch of the transition it reports, so it is committed
//! in the same transaction (a crash keeps both or neither).
//!
//! Event ids are given out here, in the order the engine commits them, so a
//! reader that has seen id N has seen every committed event below N. After
//! each commit that carried events, the last id is published on a `watch`
//! channel that wakes `events.subscribe`, which reads the table itself.
//! A second `watch` wakes the notifier, only after a commit that carried an
//! event of a kind some rule names: the engine pays one lookup per event
//! for notifications, and the notifier is not woken for the others.

use std::collections::HashMap;

use holdfast_api::{ActivityState, Event, FailedActivity, JobState};
use holdfast_workflow::NOTIFY_KINDS;
use tokio::sync::watch;

use super::job::JobRun;
use crate::executor::AttemptKey;
use crate::store::{self, EventRow, WriteOp};

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    JobSubmitted,
    JobStarted,
    JobAlert,
    ActivityStarted,
    ActivitySucceeded,
    ActivityRetrying,
    ActivityFailed,
    ScheduleRefused,
    DaemonRecovered,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobSubmitted => "job.submitted",
            EventKind::JobStarted => "job.started",
            EventKind::JobAlert => "job.alert",
            EventKind::ActivityStarted => "activity.started",
            EventKind::ActivitySucceeded => "activity.succeeded",
            EventKind::ActivityRetrying => "activity.retrying",
            EventKind::ActivityFailed => "activity.failed",
            EventKind::ScheduleRefused => "schedule.refused",
            EventKind::DaemonRecovered => "daemon.recovered",
        }
    }

    /// The event an activity's new state raises, if any (interrupted and
    /// cancelled activities raise none: the job's events say it).
    pub fn for_activity(state: ActivityState) -> Option<EventKind> {
        match state {
            ActivityState::Succeeded => Some(EventKind::ActivitySucceeded),
            ActivityState::RetryWait => Some(EventKind::ActivityRetrying),
            ActivityState::Failed => Some(EventKind::ActivityFailed),
            _ => None,
        }
    }
}

/// What an event says beyond its job.
#[derive(Debug, Default)]
pub struct Detail<'a> {
    /// The activity's index in the chain.
    pub activity: Option<usize>,
    pub attempt: Option<u32>,
    pub error_id: Option<&'a str>,
    pub error: Option<&'a str>,
    /// The failed attempt's `error_tail`, masked as stored.
    pub error_tail: Option<&'a str>,
}

/// The engine's side of the outbox.
pub struct Outbox {
    next_id: u64,
    /// Failures of activities of jobs in flight, for their end event.
    failures: HashMap<u64, Vec<FailedActivity>>,
    /// The last event id committed, for `events.subscribe`.
    committed: watch::Sender<u64>,
    /// An event was added since the last commit.
    unsent: bool,
    /// The last event id committed of a kind some rule names, for the
    /// notifier.
    notifier: watch::Sender<u64>,
    /// The kinds rules name: bit i for `NOTIFY_KINDS[i]`.
    wanted: u16,
    /// An event of a wanted kind was added since the last commit.
    unsent_wanted: bool,
}

impl Outbox {
    /// Ids continue after `last_id`, the highest ever given out. The
    /// notifier starts from `last_id` too, so it looks at what a previous
    /// run left.
    pub fn new(
        last_id: u64,
        committed: watch::Sender<u64>,
        notifier: watch::Sender<u64>,
    ) -> Outbox {
        committed.send_replace(last_id);
        notifier.send_replace(last_id);
        Outbox {
            next_id: last_id + 1,
            failures: HashMap::new(),
            committed,
            unsent: false,
            notifier,
            wanted: 0,
            unsent_wanted: false,
        }
    }

    /// The last event id given out (committed or about to be).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Wake the notifier only for the kinds these rules name.
    pub fn want<'a>(&mut self, rules: impl IntoIterator<Item = &'a crate::notify::Rule>) {
        self.wanted = rules
            .into_iter()
            .flat_map(|rule| rule.on.iter())
            .filter_map(|kind| NOTIFY_KINDS.iter().position(|k| k == kind))
            .fold(0, |bits, i| bits | 1 << i);
    }

    /// The write that records `event`, with its id given out now.
    fn record(&mut self, mut event: Event, at: Option<i64>) -> WriteOp {
        event.id = self.next_id;
        self.next_id += 1;
        self.unsent = true;
        if self.wanted != 0
            && NOTIFY_KINDS
                .iter()
                .position(|k| *k == event.kind)
                .is_some_and(|i| self.wanted & 1 << i != 0)
        {
            self.unsent_wanted = true;
        }
        let at = at.unwrap_or_else(store::now_ms);
        event.at = store::rfc3339(at);
        let payload = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
        WriteOp::Event(Box::new(EventRow {
            id: event.id,
            kind: event.kind.clone(),
            at,
            job_id: event.job_id,
            chain: event.chain,
            tenant: event.tenant,
            payload,
        }))
    }

    /// An event about `job` (in flight): `kind` with `detail`.
    pub fn job(&mut self, kind: EventKind, job: &JobRun, detail: Detail<'_>) -> WriteOp {
        let mut event = job_event(kind.as_str(), job);
        if detail.activity.is_some() {
            // Activity events are many; the job's events carry its parameters.
            event.params = None;
        }
        if let Some(idx) = detail.activity {
            event.activity = job.chain.activities.get(idx).map(|a| a.path.clone());
        }
        event.attempt = detail.attempt;
        event.error_id = detail.error_id.map(str::to_string);
        event.error = detail.error.map(str::to_string);
        event.error_tail = detail.error_tail.map(str::to_string);
        if kind == EventKind::JobAlert {
            event.alerts = Some(job.alerts);
        }
        if kind == EventKind::ActivityFailed {
            self.failures
                .entry(job.id)
                .or_default()
                .push(FailedActivity {
                    activity: event.activity.clone().unwrap_or_default(),
                    error_id: event.error_id.clone(),
                    error: event.error.clone(),
                    error_tail: event.error_tail.clone(),
                });
        }
        self.record(event, None)
    }

    pub fn submitted(&mut self, job: &JobRun) -> WriteOp {
        self.job(EventKind::JobSubmitted, job, Detail::default())
    }

    pub fn started(&mut self, job: &JobRun) -> WriteOp {
        self.job(EventKind::JobStarted, job, Detail::default())
    }

    pub fn activity_started(&mut self, job: &JobRun, idx: usize, attempt: u32) -> WriteOp {
        let detail = Detail {
            activity: Some(idx),
            attempt: Some(attempt),
            ..Detail::default()
        };
        self.job(EventKind::ActivityStarted, job, detail)
    }

    /// An alert an attempt raised, with its text.
    pub fn alert(&mut self, job: &JobRun, key: AttemptKey, text: &str) -> WriteOp {
        let detail = Detail {
            activity: Some(key.idx),
            attempt: Some(key.number),
            error: Some(text),
            ..Detail::default()
        };
        self.job(EventKind::JobAlert, job, detail)
    }

    /// The alert of an activity that failed with `on_failure = "continue"`.
    pub fn continued(&mut self, job: &JobRun, idx: usize, text: &str) -> WriteOp {
        let detail = Detail {
            activity: Some(idx),
            error: Some(text),
            ..Detail::default()
        };
        self.job(EventKind::JobAlert, job, detail)
    }

    /// The events of a job's end: `job.succeeded`, `job.failed` or
    /// `job.cancelled`, then `job.finished`.
    pub fn finished(&mut self, job: &JobRun, state: JobState, at: i64) -> [WriteOp; 2] {
        let mut failed = self.failures.remove(&job.id).unwrap_or_default();
        // Activities that failed before a restart are known by their path.
        for (idx, act) in job.acts.iter().enumerate() {
            let path = &job.chain.activities[idx].path;
            if act.included
                && act.state() == ActivityState::Failed
                && !failed.iter().any(|f| &f.activity == path)
            {
                let last = act.last_error.as_ref();
                failed.push(FailedActivity {
                    activity: path.clone(),
                    error_id: last.map(|e| e.error_id.clone()),
                    error: last.and_then(|e| e.error.clone()),
                    error_tail: last.and_then(|e| e.error_tail.clone()),
                });
            }
        }
        let mut event = job_event("", job);
        event.state = Some(state);
        event.failed = failed;
        event.alerts = Some(job.alerts);
        event.duration_ms = job.started_at.map(|s| at - s);
        let ended = Event {
            kind: format!("job.{}", state.as_str()),
            ..event.clone()
        };
        let finished = Event {
            kind: "job.finished".into(),
            ..event
        };
        [
            self.record(ended, Some(at)),
            self.record(finished, Some(at)),
        ]
    }

    /// A schedule's fire that created no job.
    pub fn schedule_refused(&mut self, chain: &str, name: &str, error: &str) -> WriteOp {
        self.record(
            Event {
                kind: EventKind::ScheduleRefused.as_str().into(),
                chain: Some(chain.to_string()),
                schedule: Some(format!("{chain}.{name}")),
                error: Some(error.to_string()),
                links: vec!["hfctl schedules".into()],
                ..Event::default()
            },
            None,
        )
    }

    /// The daemon started after an unclean end and resumed `jobs` jobs.
    pub fn recovered(&mut self, jobs: usize) -> WriteOp {
        self.record(
            Event {
                kind: EventKind::DaemonRecovered.as_str().into(),
                error: Some(format!("{jobs} unfinished job(s) resumed or ended")),
                links: vec!["hfctl ps".into()],
                ..Event::default()
            },
            None,
        )
    }

    /// A batch goes to the store: what it carries, to publish once it is
    /// committed (events made meanwhile belong to the next batch).
    pub fn seal(&mut self) -> Sealed {
        let last = self.next_id - 1;
        Sealed {
            events: std::mem::take(&mut self.unsent).then_some(last),
            wanted: std::mem::take(&mut self.unsent_wanted).then_some(last),
        }
    }

    /// The sealed batch committed: wake subscribers if it carried events.
    pub fn committed(&mut self, sealed: Sealed) {
        if let Some(last) = sealed.events {
            self.committed.send_replace(last);
        }
        if let Some(last) = sealed.wanted {
            self.notifier.send_replace(last);
        }
    }

    /// The sealed batch failed: its events go out with the retry.
    pub fn unseal(&mut self, sealed: Sealed) {
        self.unsent |= sealed.events.is_some();
        self.unsent_wanted |= sealed.wanted.is_some();
    }
}

/// The last event id of a batch on its way to the store, for each kind
/// of listener that has one to hear of.
#[derive(Debug, Clone, Copy)]
pub struct Sealed {
    events: Option<u64>,
    wanted: Option<u64>,
}

impl Sealed {
    /// This batch's and a later one's, as one.
    pub fn then(self, later: Sealed) -> Sealed {
        Sealed {
            events: later.events.or(self.events),
            wanted: later.wanted.or(self.wanted),
        }
    }
}

impl super::Engine {
    /// The event of an attempt's end that moved its activity to `state`.
    pub(super) fn emit_attempt_end(
        &mut self,
        key: AttemptKey,
        state: ActivityState,
        error_id: Option<&str>,
        error: Option<&str>,
    ) {
        let (Some(kind), Some(job)) = (EventKind::for_activity(state), self.jobs.get(&key.job_id))
        else {
            return;
        };
        // `on_attempt_end` has just kept this attempt's tail there.
        let error_tail = error_id
            .and(job.acts[key.idx].last_error.as_ref())
            .and_then(|e| e.error_tail.as_deref());
        let detail = Detail {
            activity: Some(key.idx),
            attempt: Some(key.number),
            error_id,
            error,
            error_tail,
        };
        self.ops.push(self.outbox.job(kind, job, detail));
    }
}

/// The fields every event about `job` carries.
fn job_event(kind: &str, job: &JobRun) -> Event {
    Event {
        kind: kind.to_string(),
        job_id: Some(job.id),
        chain: Some(job.chain.name.clone()),
        target: Some(job.target.clone()),
        tenant: job.tenant.clone(),
        state: Some(job.state),
        // Secret values never leave as themselves.
        params: Some(job.shown_params()),
        links: vec![format!("hfctl status {}", job.id)],
        ..Event::default()
    }
}
