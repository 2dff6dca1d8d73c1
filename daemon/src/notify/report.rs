//! The execution reports a mail rule with `attach_report = true` attaches:
//! for each job an event (or a digest's events) names, the HTML report
//! `hfctl report` writes (`holdfast_report::html`), rendered from the store
//! when the mail is sent, so it shows the job as it is then (a job-end
//! event's job has ended; an activity event's job may still run).
//!
//! Bounded: at most [`MAX_REPORTS`] jobs per mail, [`MAX_BYTES`] per
//! report and [`MAX_TOTAL`] per mail (`holdfast_report::html` itself caps
//! the attempts it draws); what is left out is said in the mail's text, as
//! is a job that retention has already deleted. A report the store cannot
//! give is a note too: the alert itself still goes out. Rendering runs on a
//! blocking thread, off the runtime. The report's "recent runs" are those
//! of the job's own tenant, so a tenant's mail shows no other tenant's jobs.

use std::collections::HashSet;

use holdfast_api::JobList;

use crate::store::{self, ListFilter, Store, StoreError};

/// Reports attached to one mail at most (a digest may name many jobs).
pub const MAX_REPORTS: usize = 10;
/// Largest report attached; a larger one is named instead.
pub const MAX_BYTES: usize = 4 << 20;
/// Most bytes of reports one mail attaches; the reports past it are named.
/// 7 MiB: base64 makes it about 9.6 MiB on the wire, under the 10 MB a
/// default Postfix accepts.
pub const MAX_TOTAL: usize = 7 << 20;
/// How many of the chain's latest jobs a report lists.
const RECENT_RUNS: u32 = 20;

/// What a mail attaches, and what its text says about the reports.
#[derive(Debug, Default)]
pub struct Reports {
    /// File name (`job-42-report.html`) and the HTML.
    pub files: Vec<(String, String)>,
    /// One line each: attached, too large, deleted, unavailable, left out.
    pub notes: Vec<String>,
}

/// The reports of the jobs `payload` (an event, or a digest) names.
pub async fn of_payload(store: &Store, payload: &str) -> Reports {
    let (jobs, more) = job_ids(payload);
    let mut reports = Reports::default();
    let mut total = 0;
    for job_id in jobs {
        let html = match render(store, job_id).await {
            Ok(Some(html)) => html,
            Ok(None) => {
                reports.notes.push(format!(
                    "Job {job_id} is no longer in the history: no report attached."
                ));
                continue;
            }
            Err(error) => {
                reports.notes.push(format!(
                    "The report of job {job_id} is unavailable: {error}."
                ));
                continue;
            }
        };
        let name = format!("job-{job_id}-report.html");
        if html.len() > MAX_BYTES || total + html.len() > MAX_TOTAL {
            let cap = if html.len() > MAX_BYTES {
                format!("over the {} KiB attached at most", MAX_BYTES / 1024)
            } else {
                format!(
                    "past the {} KiB of reports one mail carries",
                    MAX_TOTAL / 1024
                )
            };
            reports.notes.push(format!(
                "The report of job {job_id} is {} KiB, {cap}; \
                 `hfctl report {job_id} --html FILE` writes it.",
                html.len() / 1024
            ));
            continue;
        }
        total += html.len();
        reports.notes.push(format!(
            "Attached: the execution report of job {job_id} ({name})."
        ));
        reports.files.push((name, html));
    }
    if more > 0 {
        reports.notes.push(format!(
            "The reports of {more} more jobs are not attached (at most {MAX_REPORTS} per mail); \
             `hfctl report JOB --html FILE` writes one."
        ));
    }
    reports
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error("the store cannot be read: {0}")]
    Store(#[from] StoreError),
    #[error("rendering stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The report of `job_id` as the store has it now; `None` for a job no
/// longer in the history.
async fn render(store: &Store, job_id: u64) -> Result<Option<String>, RenderError> {
    let found = store
        .read(move |conn| {
            let Some(job) = store::get_job(conn, job_id)? else {
                return Ok(None);
            };
            let recent = store::list_jobs(
                conn,
                &ListFilter {
                    state: None,
                    chain: Some(job.chain.clone()),
                    tenant: job.tenant.clone(),
                    since_ms: None,
                    limit: RECENT_RUNS,
                    before: None,
                },
            )?;
            Ok(Some((job, recent)))
        })
        .await?;
    let Some((job, JobList { jobs: recent, .. })) = found else {
        return Ok(None);
    };
    let html = tokio::task::spawn_blocking(move || {
        let raw = serde_json::to_value(&job).unwrap_or_default();
        holdfast_report::html::render(&job, &raw, &recent, "holdfastd")
    })
    .await?;
    Ok(Some(html))
}

/// The jobs an event or a digest names, each once, in order: the first
/// [`MAX_REPORTS`], and how many more there are.
fn job_ids(payload: &str) -> (Vec<u64>, usize) {
    let value: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let events = match value["events"].as_array() {
        Some(events) if value["kind"] == "digest" => events.iter().collect(),
        _ => vec![&value],
    };
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for event in events {
        if let Some(id) = event["job_id"].as_u64()
            && seen.insert(id)
            && ids.len() < MAX_REPORTS
        {
            ids.push(id);
        }
    }
    let more = seen.len() - ids.len();
    (ids, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_of_an_event_and_of_a_digest() {
        assert_eq!(job_ids(r#"{"kind":"job.failed","job_id":7}"#), (vec![7], 0));
        assert_eq!(
            job_ids(r#"{"kind":"schedule.refused","schedule":"s"}"#),
            (Vec::<u64>::new(), 0)
        );
        let digest = r#"{"kind":"digest","rule":"r","events":[
            {"kind":"activity.failed","job_id":3},{"kind":"job.failed","job_id":3},
            {"kind":"job.failed","job_id":9},{"kind":"daemon.recovered"}]}"#;
        assert_eq!(job_ids(digest), (vec![3, 9], 0));
        assert_eq!(job_ids("not json"), (Vec::<u64>::new(), 0));
        let many: Vec<String> = (1..=25)
            .chain(1..=25)
            .map(|id| format!(r#"{{"kind":"job.failed","job_id":{id}}}"#))
            .collect();
        let digest = format!(r#"{{"kind":"digest","events":[{}]}}"#, many.join(","));
        assert_eq!(
            job_ids(&digest),
            (
                (1..=MAX_REPORTS as u64).collect::<Vec<_>>(),
                25 - MAX_REPORTS
            )
        );
    }
}
