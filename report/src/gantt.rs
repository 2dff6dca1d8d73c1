//! A job's attempts laid out on a time axis: one row per activity, with
//! its attempts and the retry delays between them, in seconds from the
//! job's creation. `timeline` draws it as text, `report` as SVG.

use chrono::{DateTime, Utc};
use holdfast_api::{ActivityState, AttemptState, Job};

use crate::text::parse_time;

/// What a stretch of a row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The job waited in the queue (from its creation to its start).
    Queued,
    /// An attempt, by how it ended (or `Running`).
    Attempt(AttemptState),
    /// Between a failed attempt's end and the next attempt's start.
    RetryDelay,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub kind: Kind,
    /// Seconds from the axis' start.
    pub from: f64,
    pub to: f64,
    /// The attempt's number (of the attempt that follows, for a delay).
    pub attempt: u32,
}

#[derive(Debug, Clone)]
pub struct Row {
    /// `process.activity`, or `(queue)` for the job's own wait.
    pub label: String,
    pub state: Option<ActivityState>,
    pub attempts: u32,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
pub struct Gantt {
    pub start: DateTime<Utc>,
    /// Seconds the axis covers (at least a millisecond).
    pub span: f64,
    pub rows: Vec<Row>,
}

impl Gantt {
    /// Lay out `job`; an attempt still running ends at `now`.
    pub fn of(job: &Job, now: DateTime<Utc>) -> Gantt {
        let start = parse_time(&job.created_at).unwrap_or(now);
        let at = |text: Option<&str>| -> f64 {
            let t = text.and_then(parse_time).unwrap_or(now);
            (t - start).num_milliseconds().max(0) as f64 / 1000.0
        };
        let mut rows = Vec::new();
        if job.started_at.is_some() || !job.state.is_terminal() {
            rows.push(Row {
                label: "(queue)".into(),
                state: None,
                attempts: 0,
                segments: vec![Segment {
                    kind: Kind::Queued,
                    from: 0.0,
                    to: at(job.started_at.as_deref()),
                    attempt: 0,
                }],
            });
        }
        for activity in &job.activities {
            let mut attempts: Vec<_> = activity.attempts.iter().collect();
            attempts.sort_by_key(|a| a.number);
            let mut segments = Vec::new();
            let mut previous_end: Option<f64> = None;
            for attempt in &attempts {
                let from = at(Some(&attempt.started_at));
                let to = at(attempt.finished_at.as_deref()).max(from);
                if let Some(end) = previous_end {
                    segments.push(Segment {
                        kind: Kind::RetryDelay,
                        from: end,
                        to: from.max(end),
                        attempt: attempt.number,
                    });
                }
                segments.push(Segment {
                    kind: Kind::Attempt(attempt.state),
                    from,
                    to,
                    attempt: attempt.number,
                });
                previous_end = Some(to);
            }
            rows.push(Row {
                label: format!("{}.{}", activity.process, activity.activity),
                state: Some(activity.state),
                attempts: attempts.len() as u32,
                segments,
            });
        }
        let end = match &job.finished_at {
            Some(end) => at(Some(end)),
            None => at(None),
        };
        let last = rows
            .iter()
            .flat_map(|r| r.segments.iter().map(|s| s.to))
            .fold(end, f64::max);
        Gantt {
            start,
            span: last.max(0.001),
            rows,
        }
    }
}
