//! The execution report of one job as one self-contained HTML file
//! (inline CSS, an inline SVG Gantt chart, no external assets): its facts,
//! the activity tree with states, durations and resource use, the outputs,
//! failed attempts with their error ids and last output lines, and the
//! chain's recent runs. Every piece of job data is escaped. `hfctl report`
//! writes it; the daemon attaches it to mail notifications that ask.

use std::fmt::Write as _;

use chrono::Utc;
use holdfast_api::{AttemptState, Job, JobState, JobSummary};
use serde_json::{Map, Value};

use crate::gantt::{Gantt, Kind};
use crate::text as output;

/// Attempt fields the report shows in their own columns; any other field
/// (resource use, once the daemon records it) is listed as it comes.
const KNOWN_ATTEMPT_FIELDS: [&str; 12] = [
    "number",
    "state",
    "pid",
    "exit_code",
    "signal",
    "error_id",
    "error",
    "started_at",
    "finished_at",
    "log_bytes",
    "log_dropped",
    "error_tail",
];

/// Bounds on what one report draws, so a job whose activity retried
/// thousands of times still gives a report of a few hundred KiB: the Gantt
/// chart draws each row's latest segments, the failures section each
/// activity's latest failed attempts, and both say what they left out.
const SVG_SEGMENTS_PER_ROW: usize = 120;
/// Failed attempts listed per activity (the latest ones).
const FAILURES_PER_ACTIVITY: usize = 5;
/// Failed attempts listed in the whole report.
const FAILURES_IN_ALL: usize = 100;

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5dbe1}
table{border-collapse:collapse}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#4a5560}tr.process td{font-weight:600;padding-top:8px}
pre{background:#f4f6f8;padding:8px;white-space:pre-wrap;word-break:break-all;margin:4px 0}
.succeeded{color:#1a7f37}.failed,.timeout,.signaled{color:#cf222e}.cancelled,.skipped,.interrupted{color:#6e7781}
.running,.retry_wait,.queued{color:#0969da}.muted{color:#6e7781}
";

/// The report of `job`; `raw` is the same job as JSON (fields a newer
/// daemon sends that `Job` does not know yet still show), `recent` the
/// chain's latest jobs, `writer` who wrote it (`hfctl`, `holdfastd`).
pub fn render(job: &Job, raw: &Value, recent: &[JobSummary], writer: &str) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>HoldFast job {} {}</title><style>{STYLE}</style></head><body>\n",
        job.id,
        escape(&job.target)
    );
    let _ = writeln!(
        html,
        "<h1>Job {} <span class=\"{}\">{}</span>: {}</h1>",
        job.id,
        job.state.as_str(),
        job.state.as_str(),
        escape(&job.target)
    );
    facts(&mut html, job);
    let _ = writeln!(html, "<section id=\"timeline\"><h2>Timeline</h2>");
    html.push_str(&svg(&Gantt::of(job, Utc::now())));
    html.push_str("</section>\n");
    tree(&mut html, job, raw);
    outputs(&mut html, &job.outputs);
    failures(&mut html, job);
    recent_runs(&mut html, job, recent);
    let _ = writeln!(
        html,
        "<p class=\"muted\">Written by {} at {}.</p></body></html>",
        escape(writer),
        escape(&Utc::now().to_rfc3339())
    );
    html
}

fn facts(html: &mut String, job: &Job) {
    let mut rows: Vec<(&str, String)> = vec![
        ("chain", job.chain.clone()),
        ("state", job.state.as_str().to_string()),
        ("submitted by", job.submitted_by.clone()),
        ("created", output::time(&job.created_at)),
    ];
    if let Some(tenant) = &job.tenant {
        rows.push(("tenant", tenant.clone()));
    }
    if let Some(started) = &job.started_at {
        rows.push(("started", output::time(started)));
    }
    if let Some(finished) = &job.finished_at {
        rows.push(("finished", output::time(finished)));
    }
    rows.push((
        "duration",
        output::elapsed_text(job.started_at.as_deref(), job.finished_at.as_deref()),
    ));
    rows.push(("progress", output::percent(job.progress)));
    rows.push(("alerts", job.alerts.to_string()));
    if let Some(alert) = &job.last_alert {
        rows.push(("last alert", alert.clone()));
    }
    if let Some(reason) = &job.reason {
        rows.push(("reason", reason.clone()));
    }
    rows.push(("run", job.run_id.to_string()));
    if let Some(of) = job.retry_of {
        rows.push(("retry of job", of.to_string()));
    }
    rows.push(("version", output::short_version(&job.version)));
    if job.simulated {
        rows.push(("simulated", "yes".into()));
    }
    for (key, value) in &job.params {
        rows.push((
            "parameter",
            format!("{key} = {}", output::json_value(value)),
        ));
    }
    html.push_str("<section id=\"facts\"><h2>Facts</h2><table>\n");
    for (key, value) in rows {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(key),
            escape(&value)
        );
    }
    html.push_str("</table></section>\n");
}

/// The Gantt chart: a row per activity, attempts coloured by outcome,
/// retry delays hatched; times in each bar's tooltip.
fn svg(gantt: &Gantt) -> String {
    const LABEL: f64 = 220.0;
    const BARS: f64 = 700.0;
    const ROW: f64 = 22.0;
    let height = ROW * (gantt.rows.len() as f64 + 1.0) + 10.0;
    let scale = BARS / gantt.span;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        w = LABEL + BARS + 20.0
    );
    for i in 0..=4 {
        let x = LABEL + BARS * f64::from(i) / 4.0;
        let at = gantt.span * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{x}\" y1=\"14\" x2=\"{x}\" y2=\"{height}\" stroke=\"#d5dbe1\"/>\
             <text x=\"{x}\" y=\"11\" text-anchor=\"middle\" fill=\"#4a5560\">{}</text>",
            if i == 0 {
                "0s".to_string()
            } else {
                escape(&output::seconds(at))
            }
        );
    }
    for (n, row) in gantt.rows.iter().enumerate() {
        let y = ROW * (n as f64 + 1.0);
        let hidden = row.segments.len().saturating_sub(SVG_SEGMENTS_PER_ROW);
        let label = if hidden == 0 {
            row.label.clone()
        } else {
            format!("{} (latest {SVG_SEGMENTS_PER_ROW} bars)", row.label)
        };
        let _ = writeln!(
            out,
            "<text x=\"4\" y=\"{}\">{}</text>",
            y + 15.0,
            escape(&label)
        );
        for segment in &row.segments[hidden..] {
            let x = LABEL + segment.from * scale;
            let width = ((segment.to - segment.from) * scale).max(2.0);
            let (fill, what) = match segment.kind {
                Kind::Queued => ("#d0d7de", "queued".to_string()),
                Kind::RetryDelay => (
                    "#f2cc60",
                    format!("retry delay before attempt {}", segment.attempt),
                ),
                Kind::Attempt(state) => (
                    match state {
                        AttemptState::Succeeded => "#2da44e",
                        AttemptState::Running => "#0969da",
                        AttemptState::Cancelled | AttemptState::Interrupted => "#8c959f",
                        _ => "#cf222e",
                    },
                    format!("attempt {} {}", segment.attempt, state.as_str()),
                ),
            };
            let _ = writeln!(
                out,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"14\" fill=\"{fill}\">\
                 <title>{}: {} from {} to {}</title></rect>",
                y + 4.0,
                escape(&row.label),
                escape(&what),
                output::seconds(segment.from),
                output::seconds(segment.to)
            );
        }
    }
    let _ = writeln!(
        out,
        "<desc>started {}</desc></svg>",
        escape(&gantt.start.to_rfc3339())
    );
    out
}

/// Processes and their activities, each with state, attempts, duration,
/// progress and whatever else the daemon reports per attempt.
fn tree(html: &mut String, job: &Job, raw: &Value) {
    html.push_str(
        "<section id=\"activities\"><h2>Activities</h2><table>\n\
         <tr><th>activity</th><th>state</th><th>attempts</th><th>duration</th><th>progress</th><th>resource use</th></tr>\n",
    );
    let raw_activities = raw.get("activities").and_then(Value::as_array);
    let mut process: Option<&str> = None;
    for (i, activity) in job.activities.iter().enumerate() {
        if process != Some(&activity.process) {
            process = Some(&activity.process);
            let _ = writeln!(
                html,
                "<tr class=\"process\"><td colspan=\"6\">{}</td></tr>",
                escape(&activity.process)
            );
        }
        let last = activity.attempts.iter().max_by_key(|a| a.number);
        let duration = last.map_or_else(String::new, |a| {
            output::elapsed_text(Some(&a.started_at), a.finished_at.as_deref())
        });
        let resources = raw_activities
            .and_then(|list| list.get(i))
            .and_then(|a| a.get("attempts"))
            .and_then(Value::as_array)
            .and_then(|attempts| attempts.last())
            .map(resource_text)
            .unwrap_or_default();
        let name = match &activity.handler {
            Some(kind) => format!("{} ({kind} handler)", activity.activity),
            None => activity.activity.clone(),
        };
        let _ = writeln!(
            html,
            "<tr><td>&nbsp;&nbsp;{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&name),
            activity.state.as_str(),
            activity.state.as_str(),
            activity.attempts.len(),
            escape(&duration),
            escape(&output::progress(activity)),
            escape(&resources)
        );
    }
    html.push_str("</table></section>\n");
}

/// Fields of an attempt this hfctl does not show otherwise (resource use),
/// as `key value` pairs; nested objects flattened one level.
fn resource_text(attempt: &Value) -> String {
    let Some(fields) = attempt.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (key, value) in fields {
        if KNOWN_ATTEMPT_FIELDS.contains(&key.as_str()) || key == "error_message" {
            continue;
        }
        match value {
            Value::Null => {}
            Value::Object(inner) => {
                for (k, v) in inner {
                    if !v.is_null() {
                        parts.push(format!("{k} {}", output::json_value(v)));
                    }
                }
            }
            other => parts.push(format!("{key} {}", output::json_value(other))),
        }
    }
    parts.join(", ")
}

fn outputs(html: &mut String, outputs: &Map<String, Value>) {
    html.push_str("<section id=\"outputs\"><h2>Outputs</h2>\n");
    if outputs.is_empty() {
        html.push_str("<p class=\"muted\">No activity set outputs.</p>\n");
    } else {
        html.push_str("<table>\n");
        for (activity, value) in outputs {
            let text = serde_json::to_string_pretty(value).unwrap_or_default();
            let _ = writeln!(
                html,
                "<tr><th>{}</th><td><pre>{}</pre></td></tr>",
                escape(activity),
                escape(&text)
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str("</section>\n");
}

fn failures(html: &mut String, job: &Job) {
    html.push_str("<section id=\"failures\"><h2>Failed attempts</h2>\n");
    let mut listed = 0;
    let mut not_listed = 0;
    for activity in &job.activities {
        let mut failed: Vec<_> = activity
            .attempts
            .iter()
            .filter(|a| !matches!(a.state, AttemptState::Succeeded | AttemptState::Running))
            .collect();
        failed.sort_by_key(|a| a.number);
        let room = FAILURES_PER_ACTIVITY.min(FAILURES_IN_ALL - listed);
        let earlier = failed.len().saturating_sub(room);
        if earlier > 0 {
            not_listed += earlier;
            let _ = writeln!(
                html,
                "<p class=\"muted\">{}.{}: {earlier} earlier failed attempts not listed \
                 (<code>hfctl status {} --json</code> has them all).</p>",
                escape(&activity.process),
                escape(&activity.activity),
                job.id
            );
        }
        for attempt in &failed[earlier..] {
            listed += 1;
            let _ = writeln!(
                html,
                "<div class=\"failure\"><h3>{}.{} attempt {} <span class=\"{}\">{}</span>{}</h3>",
                escape(&activity.process),
                escape(&activity.activity),
                attempt.number,
                attempt.state.as_str(),
                attempt.state.as_str(),
                attempt
                    .error_id
                    .as_deref()
                    .map(|id| format!(" <code>{}</code>", escape(id)))
                    .unwrap_or_default()
            );
            for text in [&attempt.error, &attempt.error_message]
                .into_iter()
                .flatten()
            {
                let _ = writeln!(html, "<p>{}</p>", escape(text));
            }
            if let Some(tail) = &attempt.error_tail {
                let _ = writeln!(html, "<pre>{}</pre>", escape(tail));
            }
            html.push_str("</div>\n");
        }
    }
    if listed == 0 && not_listed == 0 {
        html.push_str("<p class=\"muted\">No attempt failed.</p>\n");
    }
    html.push_str("</section>\n");
}

fn recent_runs(html: &mut String, job: &Job, recent: &[JobSummary]) {
    let _ = writeln!(
        html,
        "<section id=\"recent\"><h2>Recent runs of {}</h2>",
        escape(&job.chain)
    );
    let ended: Vec<&JobSummary> = recent.iter().filter(|j| j.state.is_terminal()).collect();
    let succeeded = ended
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .count();
    if !ended.is_empty() {
        let _ = writeln!(
            html,
            "<p>{succeeded} of the last {} ended jobs succeeded ({:.0}%).</p>",
            ended.len(),
            100.0 * succeeded as f64 / ended.len() as f64
        );
    }
    html.push_str(
        "<table>\n<tr><th>job</th><th>target</th><th>state</th><th>created</th><th>duration</th></tr>\n",
    );
    for run in recent {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            run.id,
            escape(&run.target),
            run.state.as_str(),
            run.state.as_str(),
            escape(&output::time(&run.created_at)),
            escape(&output::elapsed_text(
                run.started_at.as_deref(),
                run.finished_at.as_deref()
            ))
        );
    }
    html.push_str("</table></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_user_data_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    /// A job whose one activity failed `attempts` times, each with a tail.
    fn retried_job(attempts: u32) -> Job {
        let attempts: Vec<Value> = (1..=attempts)
            .map(|n| {
                serde_json::json!({
                    "number": n, "state": "failed", "pid": 10, "exit_code": 1, "signal": null,
                    "error_id": format!("E-{n}"), "error": "exit 1",
                    "started_at": format!("2026-11-23T14:{:02}:{:02}Z", n / 60 % 60, n % 60),
                    "finished_at": format!("2026-11-23T14:{:02}:{:02}Z", n / 60 % 60, n % 60),
                    "log_bytes": 10, "log_dropped": 0, "error_tail": "x".repeat(4000)
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": 7, "target": "c", "chain": "c", "state": "failed", "alerts": 0,
            "params": {}, "tenant": null, "priority": 0, "submitted_by": "ana",
            "submitter_uid": null, "submitter_pid": null, "version": "abc",
            "created_at": "2026-11-23T14:00:00Z", "started_at": "2026-11-23T14:00:00Z",
            "finished_at": "2026-11-23T15:00:00Z", "progress": 0.0, "reason": null,
            "retry_of": null, "outputs": {},
            "activities": [{"path": "c.p.a", "process": "p", "activity": "a",
                            "state": "failed", "progress": null, "progress_text": null,
                            "attempts": attempts}]
        }))
        .expect("a valid job")
    }

    #[test]
    fn a_job_retried_thousands_of_times_gives_a_bounded_report() {
        let job = retried_job(3000);
        let raw = serde_json::to_value(&job).expect("json");
        let html = render(&job, &raw, &[], "test");
        assert!(html.len() < 200_000, "{} bytes", html.len());
        assert_eq!(
            html.matches("<div class=\"failure\">").count(),
            FAILURES_PER_ACTIVITY
        );
        assert!(html.contains("<code>E-3000</code>"), "the latest is listed");
        assert!(!html.contains("<code>E-2995</code>"));
        assert!(html.contains("2995 earlier failed attempts not listed"));
        // Bars: the row's latest segments (attempts and the delays between).
        assert_eq!(
            html.matches("<rect class=\"bar\"").count(),
            1 + SVG_SEGMENTS_PER_ROW
        );
        assert!(html.contains("p.a (latest 120 bars)"));

        let small = retried_job(2);
        let raw = serde_json::to_value(&small).expect("json");
        let html = render(&small, &raw, &[], "test");
        assert_eq!(html.matches("<div class=\"failure\">").count(), 2);
        assert!(!html.contains("not listed"));
        assert!(!html.contains("latest"));
    }

    #[test]
    fn unknown_attempt_fields_are_shown_as_resource_use() {
        let attempt = serde_json::json!({
            "number": 1, "state": "succeeded", "started_at": "x",
            "resources": {"cpu_user_seconds": 1.5, "max_rss_bytes": 1024, "io_read_bytes": null}
        });
        assert_eq!(
            resource_text(&attempt),
            "cpu_user_seconds 1.5, max_rss_bytes 1024"
        );
    }
}
