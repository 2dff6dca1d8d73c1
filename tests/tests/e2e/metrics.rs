//! Prometheus metrics: `GET /metrics` on the socket after a mixed run
//! (successes, a retry, a failure, a schedule fire) passes `promtool check
//! metrics` and carries the counts of that run, counters of jobs and
//! attempts come back after a restart, OpenMetrics is served on request,
//! the optional TCP listener serves `/metrics` and nothing else, and the
//! textfile for node_exporter is written.
//!
//! promtool comes from Debian's `prometheus` package; without it the
//! promtool check says why and is skipped, unless
//! HOLDFAST_PROMTOOL_TEST=required (CI) makes that a failure.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::{self, HttpResponse};
use holdfast_tests::poll::eventually;

use crate::support::shown;

const FLAKY: &str = r#"
[schedule.yearly]
cron = "0 0 1 1 *"

[process.p.activity.once]
shell = '''
test -e @DIR@/failed-$HF_JOB_ID && exit 0
touch @DIR@/failed-$HF_JOB_ID
exit 1
'''
retries = 1
retry_delay = "0s"
"#;

const BROKEN: &str = r#"
[process.p.activity.always]
command = ["false"]
retries = 0
"#;

fn body(response: &HttpResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// `promtool check metrics` on `text`: None when promtool is missing (and
/// not required), else its verdict.
fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let required = std::env::var("HOLDFAST_PROMTOOL_TEST").is_ok_and(|v| v == "required");
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                !required,
                "HOLDFAST_PROMTOOL_TEST=required, but promtool cannot run: {e}"
            );
            eprintln!("SKIPPED: promtool cannot run ({e}); install Debian's prometheus package");
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the metrics");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits non-zero for errors and for lint problems alike, and
    // says which.
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    })
}

fn line_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// After a mixed run the socket's `/metrics` counts exactly that run,
/// passes promtool, and after a restart the job and attempt counters start
/// from the store's totals instead of 0.
#[test]
fn metrics_on_the_socket_count_a_mixed_run_and_pass_promtool() {
    let mut daemon = TestDaemon::start(&[("flaky.toml", FLAKY), ("broken.toml", BROKEN)]);
    let flaky = daemon.submit("flaky", &[]);
    let broken = daemon.submit("broken", &[]);
    assert_eq!(daemon.wait_done(flaky).state, JobState::Succeeded);
    assert_eq!(daemon.wait_done(broken).state, JobState::Failed);
    let fired = daemon.hfctl(&["schedule", "trigger", "flaky.yearly"]);
    assert!(fired.status.success(), "{}", shown(&fired));
    let list = daemon.hfctl_json(&["list", "--chain", "flaky"]);
    let scheduled = list["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().filter_map(|j| j["id"].as_u64()).max())
        .expect("the fire made a job");
    daemon.wait_done(scheduled);

    let response = http::get(daemon.socket(), "/metrics", None);
    assert_eq!(response.status, 200, "{}", body(&response));
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = body(&response);
    let expect = [
        (
            r#"holdfast_jobs_total{chain="flaky",state="succeeded"}"#,
            2.0,
        ),
        (r#"holdfast_jobs_total{chain="broken",state="failed"}"#, 1.0),
        (r#"holdfast_attempts_total{outcome="failed"}"#, 3.0),
        (r#"holdfast_attempts_total{outcome="succeeded"}"#, 2.0),
        (
            r#"holdfast_activity_duration_seconds_count{chain="flaky"}"#,
            4.0,
        ),
        (
            r#"holdfast_activity_duration_seconds_count{chain="broken"}"#,
            1.0,
        ),
        ("holdfast_schedule_fires_total", 1.0),
        ("holdfast_schedule_refusals_total", 0.0),
        ("holdfast_jobs_running", 0.0),
        ("holdfast_jobs_queued", 0.0),
    ];
    for (sample, value) in expect {
        assert_eq!(
            line_value(&text, sample),
            Some(value),
            "{sample} in:\n{text}"
        );
    }
    assert!(
        line_value(&text, "holdfast_store_commit_seconds_count").is_some_and(|n| n >= 1.0),
        "commits are timed:\n{text}"
    );
    assert!(
        text.contains("# TYPE holdfast_notification_deliveries_total counter"),
        "deliveries are declared even before one happened:\n{text}"
    );
    if let Some(verdict) = promtool_check(&text) {
        verdict.unwrap_or_else(|said| panic!("promtool check metrics: {said}\n{text}"));
    }

    let open = http::get(
        daemon.socket(),
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    let open_text = body(&open);
    assert!(
        open.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        open.headers
    );
    assert!(open_text.ends_with("# EOF\n"), "{open_text}");
    assert!(
        open_text.contains("# TYPE holdfast_jobs counter\n"),
        "{open_text}"
    );

    daemon.restart();
    let after = body(&http::get(daemon.socket(), "/metrics", None));
    assert_eq!(
        line_value(
            &after,
            r#"holdfast_jobs_total{chain="flaky",state="succeeded"}"#
        ),
        Some(2.0),
        "jobs counted again from the store after a restart:\n{after}"
    );
    assert_eq!(
        line_value(&after, r#"holdfast_attempts_total{outcome="failed"}"#),
        Some(3.0),
        "{after}"
    );
    // What ends after the start adds up with the totals read at the start
    // (which are read beside the engine, from the store as it was).
    let again = daemon.submit("broken", &[]);
    assert_eq!(daemon.wait_done(again).state, JobState::Failed);
    let later = body(&http::get(daemon.socket(), "/metrics", None));
    assert_eq!(
        line_value(
            &later,
            r#"holdfast_jobs_total{chain="broken",state="failed"}"#
        ),
        Some(2.0),
        "{later}"
    );
    assert_eq!(
        line_value(&later, r#"holdfast_attempts_total{outcome="failed"}"#),
        Some(4.0),
        "{later}"
    );
}

/// `metrics_listen` serves `GET /metrics` over TCP and answers anything
/// else with 404 or 405, the JSON-RPC API included.
#[test]
fn the_tcp_listener_serves_only_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let settings = format!("metrics_listen = \"127.0.0.1:{port}\"\n");
    let daemon = TestDaemon::start_with(&settings, &[("broken.toml", BROKEN)]);
    let id = daemon.submit("broken", &[]);
    daemon.wait_done(id);
    let get = |method: &str, path: &str| {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("the listener accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        http::request(stream, method, path, None)
    };
    let metrics = get("GET", "/metrics");
    assert_eq!(metrics.status, 200);
    let text = body(&metrics);
    assert_eq!(
        line_value(
            &text,
            r#"holdfast_jobs_total{chain="broken",state="failed"}"#
        ),
        Some(1.0),
        "{text}"
    );
    if let Some(verdict) = promtool_check(&text) {
        verdict.unwrap_or_else(|said| panic!("promtool check metrics: {said}\n{text}"));
    }
    assert_eq!(get("GET", "/").status, 404);
    assert_eq!(get("POST", "/").status, 405, "no JSON-RPC over TCP");
}

/// `metrics_textfile` is written (and replaced) every interval, in the
/// classic text format node_exporter's textfile collector reads.
#[test]
fn the_textfile_is_written_for_node_exporter() {
    let settings =
        "metrics_textfile = \"@DIR@/holdfast.prom\"\nmetrics_textfile_interval = \"200ms\"\n";
    let daemon = TestDaemon::start_with(settings, &[("broken.toml", BROKEN)]);
    let id = daemon.submit("broken", &[]);
    daemon.wait_done(id);
    let path = daemon.dir().join("holdfast.prom");
    let (text, _) = eventually(
        Duration::from_secs(10),
        "the textfile counts the job",
        || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            match line_value(
                &text,
                r#"holdfast_jobs_total{chain="broken",state="failed"}"#,
            ) {
                Some(1.0) => Ok(text),
                _ => Err(text),
            }
        },
    );
    if let Some(verdict) = promtool_check(&text) {
        verdict.unwrap_or_else(|said| panic!("promtool check metrics: {said}\n{text}"));
    }
}

/// The textfile's temporary name is predictable (`PATH.<pid>.tmp`) and its
/// directory may be the collector's: a symbolic link left at that name is
/// replaced, never written through, so the root daemon cannot be made to
/// overwrite the file it names. The textfile is 0644 (the collector runs as
/// another user), whatever the daemon's umask.
#[test]
fn the_textfile_is_never_written_through_a_link_at_its_temporary_name() {
    use std::os::unix::fs::PermissionsExt;
    let settings =
        "metrics_textfile = \"@DIR@/holdfast.prom\"\nmetrics_textfile_interval = \"200ms\"\n";
    let daemon = TestDaemon::start_with(settings, &[("broken.toml", BROKEN)]);
    let pid = daemon.pid().expect("the daemon runs");
    let victim = daemon.dir().join("victim");
    std::fs::write(&victim, "untouched\n").expect("victim");
    let tmp = daemon.dir().join(format!("holdfast.prom.{pid}.tmp"));
    // The daemon's own temporary file may be there for a moment; the link
    // is in place once symlink succeeds.
    eventually(Duration::from_secs(10), "the link is planted", || {
        std::os::unix::fs::symlink(&victim, &tmp).map_err(|e| e.to_string())
    });
    // A job that ends after the link is there: the textfile counts it
    // only once written after the link was planted.
    let id = daemon.submit("broken", &[]);
    daemon.wait_done(id);
    let path = daemon.dir().join("holdfast.prom");
    eventually(
        Duration::from_secs(10),
        "the textfile counts the job",
        || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            match line_value(
                &text,
                r#"holdfast_jobs_total{chain="broken",state="failed"}"#,
            ) {
                Some(1.0) => Ok(()),
                _ => Err(text),
            }
        },
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched\n",
        "the file the link named was written"
    );
    let meta = std::fs::symlink_metadata(&path).expect("textfile");
    assert!(
        meta.file_type().is_file(),
        "the textfile is a file: {meta:?}"
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "readable by the collector"
    );
}
