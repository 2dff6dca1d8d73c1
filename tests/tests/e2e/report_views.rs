//! A finished job seen afterwards: `hfctl timeline` (a Gantt chart in the
//! terminal) and `hfctl report --html` (one self-contained file, rendered by
//! headless Chromium when it is installed; required in CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use holdfast_api::{AttemptState, JobState};
use holdfast_tests::{TestDaemon, run_with_deadline};

use crate::support::{activity, shown};

/// Set to `required` (CI does) to fail instead of skipping when Chromium
/// is missing.
pub(crate) const CHROMIUM_ENV: &str = "HOLDFAST_CHROMIUM_TEST";

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// `p.first` sets an output holding markup; `p.second` (after it) fails
/// once, printing markup, and succeeds on its retry a second later.
const TIMED: &str = r#"
[process.p.activity.first]
shell = '''
sleep 0.5
echo 'output {"note": "<script>alert(1)</script>"}' >&3
'''

[process.p.activity.second]
shell = '''
if [ ! -e @DIR@/once ]; then
  touch @DIR@/once
  echo '<b>bold</b> failure'
  exit 2
fi
sleep 0.5
'''
retries = 1
retry_delay = "1s"
"#;

fn finished_job(daemon: &TestDaemon) -> u64 {
    let job_id = daemon.submit("timed", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let second = activity(&job, "p.second");
    let states: Vec<AttemptState> = second.attempts.iter().map(|a| a.state).collect();
    assert_eq!(states, [AttemptState::Failed, AttemptState::Succeeded]);
    job_id
}

/// The bar of the row whose label is `label` (between the `│` marks).
fn bar<'a>(text: &'a str, label: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .unwrap_or_else(|| panic!("no row {label}: {text}"));
    line.split('│')
        .nth(1)
        .unwrap_or_else(|| panic!("no bar in {line:?}"))
}

/// Char position of `c` in `s` (first or last).
fn at(s: &str, c: char, last: bool) -> usize {
    let positions: Vec<usize> = s
        .chars()
        .enumerate()
        .filter(|(_, x)| *x == c)
        .map(|(i, _)| i)
        .collect();
    let found = if last {
        positions.last()
    } else {
        positions.first()
    };
    *found.unwrap_or_else(|| panic!("no {c} in {s:?}"))
}

/// `hfctl timeline`: a row per activity in the job's order under a time
/// axis; `p.second` starts after `p.first` ends, and its row shows the
/// failed attempt, then the retry delay, then the successful attempt.
#[test]
fn timeline_draws_rows_bars_in_order_and_retries() {
    let daemon = TestDaemon::start(&[("timed.toml", TIMED)]);
    let job_id = finished_job(&daemon);
    let output = daemon.hfctl(&["timeline", &job_id.to_string(), "--width", "100"]);
    assert!(output.status.success(), "{}", shown(&output));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        text.lines().all(|l| l.chars().count() <= 100),
        "fits 100 columns:\n{text}"
    );
    let labels: Vec<&str> = text
        .lines()
        .filter(|l| l.contains('│'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(labels, ["(queue)", "p.first", "p.second"], "{text}");
    assert!(
        text.starts_with(&format!("job {job_id} timed succeeded")),
        "{text}"
    );
    let first = bar(&text, "p.first");
    let second = bar(&text, "p.second");
    assert_eq!(first.chars().count(), second.chars().count(), "{text}");
    assert!(
        at(first, '█', true) < at(second, '✗', false),
        "second starts after first ends:\n{text}"
    );
    assert!(at(second, '✗', true) < at(second, '·', false), "{text}");
    assert!(at(second, '·', true) < at(second, '█', false), "{text}");
    // A one-second delay of a job of about two seconds is several cells.
    assert!(second.matches('·').count() >= 5, "{text}");
    assert!(
        text.contains("succeeded") && text.contains("2 attempts"),
        "{text}"
    );
    assert!(text.contains("· retry delay"), "the legend: {text}");
}

pub(crate) fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
}

pub(crate) fn headless(browser: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    run_with_deadline(cmd, CHROMIUM_TIMEOUT)
}

/// `hfctl report --html`: one file with no external asset, every section
/// (facts, timeline as SVG, activities, outputs, failed attempts with the
/// error id and last lines, recent runs), and the markup in an output and
/// in the error tail shown as text, never as elements. Headless Chromium
/// renders it to a PNG and its DOM holds the sections and no script.
#[test]
fn report_is_one_escaped_self_contained_file_chromium_renders() {
    let daemon = TestDaemon::start(&[("timed.toml", TIMED)]);
    let earlier = daemon.submit("timed", &[]);
    daemon.wait_done(earlier);
    std::fs::remove_file(daemon.dir().join("once")).expect("reset");
    let job_id = finished_job(&daemon);
    let job = daemon.status(job_id);
    let error_id = activity(&job, "p.second").attempts[0]
        .error_id
        .clone()
        .expect("the failed attempt's error id");

    let file = daemon.dir().join("report.html");
    let output = daemon.hfctl(&[
        "report",
        &job_id.to_string(),
        "--html",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(output.status.success(), "{}", shown(&output));
    let html = std::fs::read_to_string(&file).expect("the report");
    for section in [
        "facts",
        "timeline",
        "activities",
        "outputs",
        "failures",
        "recent",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{section}\">")),
            "{section}: {html}"
        );
    }
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        !html.to_lowercase().contains("<script"),
        "no script element: {html}"
    );
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt; failure"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert!(html.contains(&error_id), "{html}");
    assert!(html.contains("<svg"), "{html}");
    for external in ["src=", "<link", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "no external asset ({external}): {html}"
        );
    }
    assert!(
        html.contains(&format!("<td>{earlier}</td>")),
        "the earlier run is listed: {html}"
    );
    assert!(
        html.contains("2 of the last 2 ended jobs succeeded"),
        "{html}"
    );

    let Some(browser) = chromium() else {
        assert_ne!(
            std::env::var(CHROMIUM_ENV).as_deref(),
            Ok("required"),
            "{CHROMIUM_ENV}=required but no chromium on PATH"
        );
        eprintln!("skipped the rendering: no chromium on PATH (Debian package chromium)");
        return;
    };
    let profile = daemon.dir().join("chromium-profile");
    let url = format!("file://{}", file.display());
    let png = daemon.dir().join("report.png");
    let shot = headless(
        &browser,
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1400",
            &url,
        ],
    );
    let image = std::fs::read(&png).unwrap_or_else(|e| panic!("no PNG ({e}): {}", shown(&shot)));
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        image.len() > 10_000,
        "a PNG with something drawn: {} bytes",
        image.len()
    );
    if let Some(keep) = std::env::var_os("HOLDFAST_KEEP_REPORT") {
        let _ = std::fs::copy(&png, keep);
    }

    let dom = headless(&browser, &profile, &["--dump-dom", &url]);
    assert!(dom.status.success(), "{}", shown(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for section in [
        "facts",
        "timeline",
        "activities",
        "outputs",
        "failures",
        "recent",
    ] {
        assert!(
            dom.contains(&format!("id=\"{section}\"")),
            "{section} in the DOM: {dom}"
        );
    }
    assert!(
        !dom.contains("<script"),
        "no script element in the DOM: {dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        dom.matches("class=\"bar\"").count() >= 4,
        "the chart's bars (queue, first, two attempts and a delay): {dom}"
    );
}
