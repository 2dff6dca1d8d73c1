//! Prometheus metrics: counters and histograms kept in memory, updated
//! where the event happens (the engine's transitions, the notifier, the
//! store's writer), seeded from the store at start where the store knows
//! the figure, and rendered as text on request. A scrape costs one pass
//! over these maps (O(chains)) and one `Counts` question to the engine
//! (O(jobs in flight)); it never reads the job history.

pub mod serve;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

pub use serve::{listen, textfile};

/// Upper bounds of the activity duration histogram, in seconds.
const ACTIVITY_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Upper bounds of the store commit histogram, in seconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Which text a scrape gets: Prometheus' classic text format (0.0.4, also
/// what node_exporter's textfile collector reads) or OpenMetrics 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the client's `Accept` asks for it.
    pub fn from_accept(accept: Option<&str>) -> Format {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Count per bucket (not cumulative); the last is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += seconds;
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Ended jobs by (chain, state).
    jobs: BTreeMap<(String, String), u64>,
    /// Ended attempts by outcome (their state).
    attempts: BTreeMap<String, u64>,
    activity_duration: BTreeMap<String, Histogram>,
    deliveries: BTreeMap<&'static str, u64>,
    schedule_fires: u64,
    schedule_refusals: u64,
    store_commit: Option<Histogram>,
}

/// Every metric the daemon keeps. One lock, held for a map update or one
/// rendering, never across an await or a query.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// True while the totals of [`Metrics::seed`] are being read.
    seeding: AtomicBool,
    seeded: tokio::sync::Notify,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The daemon's metrics (one daemon per process).
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Running and queued figures asked of the engine at scrape time; None
/// while the engine is held back (read-only state directory).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub queued_jobs: usize,
    pub running_jobs: usize,
    pub running_activities: usize,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it left plain counters behind; go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start from the store's totals: ended jobs by chain and state (from
    /// the statistics rollup, which keeps them per hour), ended attempts by
    /// outcome (a pass over every attempt). The read sees the store as it
    /// is when this is called, before the engine starts, so what the engine
    /// counts from then on adds up with it; it runs on a thread of its own
    /// so a long history does not delay READY=1, and a scrape waits for it
    /// ([`Metrics::seeded`]). Call from within the runtime.
    pub fn seed(&'static self, store: &crate::store::Store) {
        self.seeding.store(true, Ordering::SeqCst);
        let read = store.read_from_now(|conn| {
            let mut jobs = Vec::new();
            let mut stmt = conn.prepare(
                "SELECT chain, SUM(succeeded), SUM(failed), SUM(cancelled) FROM stats_jobs
                 GROUP BY chain",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let chain = row.get::<_, String>(0)?;
                for (i, state) in ["succeeded", "failed", "cancelled"].into_iter().enumerate() {
                    let n = row.get::<_, i64>(i + 1)?;
                    if n > 0 {
                        jobs.push((chain.clone(), state.to_string(), n));
                    }
                }
            }
            let mut attempts = Vec::new();
            let mut stmt = conn.prepare(
                "SELECT state, COUNT(*) FROM attempts WHERE state <> 'running' GROUP BY state",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                attempts.push((row.get::<_, String>(0)?, row.get::<_, i64>(1)?));
            }
            Ok((jobs, attempts))
        });
        tokio::spawn(async move {
            match read.await {
                Ok(Ok((jobs, attempts))) => {
                    let mut inner = self.lock();
                    for (chain, state, n) in jobs {
                        *inner.jobs.entry((chain, state)).or_default() += n.max(0) as u64;
                    }
                    for (state, n) in attempts {
                        *inner.attempts.entry(state).or_default() += n.max(0) as u64;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot read the totals metrics start from; they start at 0");
                }
                Err(_) => {
                    tracing::warn!(
                        "the read of the totals metrics start from stopped; they start at 0"
                    );
                }
            }
            self.seeding.store(false, Ordering::SeqCst);
            self.seeded.notify_waiters();
        });
    }

    /// Wait until the totals of [`Metrics::seed`] are counted in (at once
    /// when no seed is under way).
    pub async fn seeded(&self) {
        loop {
            let notified = self.seeded.notified();
            if !self.seeding.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    pub fn job_ended(&self, chain: &str, state: &str) {
        *self
            .lock()
            .jobs
            .entry((chain.to_string(), state.to_string()))
            .or_default() += 1;
    }

    /// An attempt ended; `wall` is how long its process ran, when one did.
    pub fn attempt_ended(&self, chain: &str, outcome: &str, wall: Option<Duration>) {
        let mut inner = self.lock();
        *inner.attempts.entry(outcome.to_string()).or_default() += 1;
        if let Some(wall) = wall {
            inner
                .activity_duration
                .entry(chain.to_string())
                .or_insert_with(|| Histogram::new(&ACTIVITY_BUCKETS))
                .observe(wall.as_secs_f64());
        }
    }

    /// `delivered`, `failed` (no attempt left) or `retrying`.
    pub fn delivery(&self, outcome: &'static str) {
        *self.lock().deliveries.entry(outcome).or_default() += 1;
    }

    pub fn schedule_fired(&self) {
        self.lock().schedule_fires += 1;
    }

    pub fn schedule_refused(&self) {
        self.lock().schedule_refusals += 1;
    }

    pub fn store_commit(&self, took: Duration) {
        self.lock()
            .store_commit
            .get_or_insert_with(|| Histogram::new(&COMMIT_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// The text a scrape answers.
    pub fn render(&self, format: Format, gauges: Option<Gauges>) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        let mut r = Renderer {
            out: &mut out,
            format,
        };
        r.family(
            "holdfast_jobs",
            "counter",
            "Jobs that ended, by chain and state.",
        );
        for ((chain, state), n) in &inner.jobs {
            r.sample(
                "holdfast_jobs_total",
                &[("chain", chain), ("state", state)],
                *n as f64,
            );
        }
        if let Some(g) = gauges {
            r.family(
                "holdfast_jobs_running",
                "gauge",
                "Jobs with an activity started and not ended.",
            );
            r.sample("holdfast_jobs_running", &[], g.running_jobs as f64);
            r.family(
                "holdfast_jobs_queued",
                "gauge",
                "Jobs of which nothing has started yet.",
            );
            r.sample("holdfast_jobs_queued", &[], g.queued_jobs as f64);
            r.family(
                "holdfast_activities_running",
                "gauge",
                "Attempts whose process runs.",
            );
            r.sample(
                "holdfast_activities_running",
                &[],
                g.running_activities as f64,
            );
        }
        r.family(
            "holdfast_attempts",
            "counter",
            "Attempts that ended, by outcome (their state).",
        );
        for (outcome, n) in &inner.attempts {
            r.sample(
                "holdfast_attempts_total",
                &[("outcome", outcome)],
                *n as f64,
            );
        }
        r.family(
            "holdfast_activity_duration_seconds",
            "histogram",
            "How long attempts' processes ran, by chain.",
        );
        for (chain, h) in &inner.activity_duration {
            r.histogram("holdfast_activity_duration_seconds", &[("chain", chain)], h);
        }
        r.family(
            "holdfast_notification_deliveries",
            "counter",
            "Notification delivery attempts, by outcome (delivered, retrying, failed).",
        );
        for (outcome, n) in &inner.deliveries {
            r.sample(
                "holdfast_notification_deliveries_total",
                &[("outcome", outcome)],
                *n as f64,
            );
        }
        r.family(
            "holdfast_schedule_fires",
            "counter",
            "Schedule fires handled.",
        );
        r.sample(
            "holdfast_schedule_fires_total",
            &[],
            inner.schedule_fires as f64,
        );
        r.family(
            "holdfast_schedule_refusals",
            "counter",
            "Schedule fires that created no job for at least one tenant.",
        );
        r.sample(
            "holdfast_schedule_refusals_total",
            &[],
            inner.schedule_refusals as f64,
        );
        r.family(
            "holdfast_store_commit_seconds",
            "histogram",
            "How long one store transaction took, begin to commit.",
        );
        let empty = Histogram::new(&COMMIT_BUCKETS);
        r.histogram(
            "holdfast_store_commit_seconds",
            &[],
            inner.store_commit.as_ref().unwrap_or(&empty),
        );
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

struct Renderer<'a> {
    out: &'a mut String,
    format: Format,
}

impl Renderer<'_> {
    /// `# HELP` and `# TYPE` of a family. In the classic format a
    /// counter's family is named with its `_total`; in OpenMetrics without.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let name = if kind == "counter" && self.format == Format::Prometheus {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| number(*b));
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction, others as Rust prints them.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_formats() {
        let m = Metrics::default();
        m.job_ended("etl", "succeeded");
        m.job_ended("etl", "succeeded");
        m.attempt_ended("etl", "failed", Some(Duration::from_millis(700)));
        let text = m.render(Format::Prometheus, None);
        assert!(
            text.contains("# TYPE holdfast_jobs_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("holdfast_jobs_total{chain=\"etl\",state=\"succeeded\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "holdfast_activity_duration_seconds_bucket{chain=\"etl\",le=\"0.5\"} 0\n"
            ) && text
                .contains("holdfast_activity_duration_seconds_bucket{chain=\"etl\",le=\"1\"} 1\n")
                && text.contains(
                    "holdfast_activity_duration_seconds_bucket{chain=\"etl\",le=\"+Inf\"} 1\n"
                ),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        let open = m.render(Format::OpenMetrics, None);
        assert!(open.contains("# TYPE holdfast_jobs counter\n"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
