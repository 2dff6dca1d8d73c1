//! The execution reports a mail rule with `attach_report = true` attaches:
//! for each job an event (or a digest's events) names, the HTML report
//! `hfctl report` writes (`holdfast_report::html`), rendered from the store
//! when the mail is sent, so it shows the job as it is then (a job-end
//! event's job has ended; an activity event's job may still run).
//!
//! Bounded: at most [`MAX_REPORTS`] jobs per mail and [`MAX_BYTES`] per
//! report; what is left out is said in the mail's text, as is a job that
//! retention has already deleted.

use holdfast_api::JobList;

use crate::store::{self, ListFilter, Store, StoreError};

/// Reports attached to one mail at most (a digest may name many jobs).
pub const MAX_REPORTS: usize = 10;
/// Largest report attached; a larger one is named instead.
pub const MAX_BYTES: usize = 4 << 20;
/// How many of the chain's latest jobs a report lists.
const RECENT_RUNS: u32 = 20;

/// What a mail attaches, and what its text says about the reports.
#[derive(Debug, Default)]
pub struct Reports {
    /// File name (`job-42-report.html`) and the HTML.
    pub files: Vec<(String, String)>,
    /// One line each: attached, too large, deleted, or left out.
    pub notes: Vec<String>,
}

/// The reports of the jobs `payload` (an event, or a digest) names.
pub async fn of_payload(store: &Store, payload: &str) -> Result<Reports, StoreError> {
    let jobs = job_ids(payload);
    let mut reports = Reports::default();
    for (n, &job_id) in jobs.iter().enumerate() {
        if n == MAX_REPORTS {
            reports.notes.push(format!(
                "The reports of {} more jobs are not attached (at most {MAX_REPORTS} per mail); \
                 `hfctl report JOB --html FILE` writes one.",
                jobs.len() - MAX_REPORTS
            ));
            break;
        }
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
                        tenant: None,
                        since_ms: None,
                        limit: RECENT_RUNS,
                        before: None,
                    },
                )?;
                Ok(Some((job, recent)))
            })
            .await?;
        let Some((job, JobList { jobs: recent, .. })) = found else {
            reports.notes.push(format!(
                "Job {job_id} is no longer in the history: no report attached."
            ));
            continue;
        };
        let raw = serde_json::to_value(&job).unwrap_or_default();
        let html = holdfast_report::html::render(&job, &raw, &recent, "holdfastd");
        let name = format!("job-{job_id}-report.html");
        if html.len() > MAX_BYTES {
            reports.notes.push(format!(
                "The report of job {job_id} is {} KiB, over the {} KiB attached at most; \
                 `hfctl report {job_id} --html FILE` writes it.",
                html.len() / 1024,
                MAX_BYTES / 1024
            ));
            continue;
        }
        reports.notes.push(format!(
            "Attached: the execution report of job {job_id} ({name})."
        ));
        reports.files.push((name, html));
    }
    Ok(reports)
}

/// The jobs an event or a digest names, each once, in order.
fn job_ids(payload: &str) -> Vec<u64> {
    let value: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let events = match value["events"].as_array() {
        Some(events) if value["kind"] == "digest" => events.iter().collect(),
        _ => vec![&value],
    };
    let mut ids = Vec::new();
    for event in events {
        if let Some(id) = event["job_id"].as_u64()
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_of_an_event_and_of_a_digest() {
        assert_eq!(job_ids(r#"{"kind":"job.failed","job_id":7}"#), vec![7]);
        assert_eq!(
            job_ids(r#"{"kind":"schedule.refused","schedule":"s"}"#),
            Vec::<u64>::new()
        );
        let digest = r#"{"kind":"digest","rule":"r","events":[
            {"kind":"activity.failed","job_id":3},{"kind":"job.failed","job_id":3},
            {"kind":"job.failed","job_id":9},{"kind":"daemon.recovered"}]}"#;
        assert_eq!(job_ids(digest), vec![3, 9]);
        assert_eq!(job_ids("not json"), Vec::<u64>::new());
    }
}
