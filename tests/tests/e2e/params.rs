//! Parameters: every bad field is named, by hfctl and in the JSON-RPC error
//! data, and good values are checked, converted and defaulted.

use std::collections::BTreeSet;

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::json;

use crate::support::shown;

const LOAD: &str = r#"
[chain]
description = "load one business date"

[params.date]
type = "date"
required = true
description = "business date"

[params.mode]
type = "string"
enum = ["full", "incremental"]
default = "incremental"

[params.size]
type = "int"
default = 10

[process.p.activity.a]
shell = 'echo "date=$HF_PARAM_DATE mode=$HF_PARAM_MODE size=$HF_PARAM_SIZE"'
"#;

fn job_count(daemon: &TestDaemon) -> usize {
    let listed = daemon.hfctl_json(&["list"]);
    listed["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("`list --json` has no jobs array: {listed}"))
        .len()
}

#[test]
fn hfctl_names_every_bad_parameter() {
    let daemon = TestDaemon::start(&[("load.toml", LOAD)]);
    let output = daemon.hfctl(&[
        "submit",
        "load",
        "-p",
        "date=2024-02-30",
        "-p",
        "mode=bogus",
        "-p",
        "extra=1",
    ]);
    assert_eq!(
        output.status.code(),
        Some(8),
        "INVALID_PARAMETERS exits 8: {}",
        shown(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for field in ["date", "mode", "extra"] {
        assert!(
            stderr.contains(field),
            "stderr does not name {field}: {stderr}"
        );
    }

    let missing = daemon.hfctl(&["submit", "load"]);
    assert_eq!(missing.status.code(), Some(8), "{}", shown(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("date"),
        "a missing required parameter is named: {}",
        shown(&missing)
    );
    assert_eq!(
        job_count(&daemon),
        0,
        "a rejected submission must not create a job"
    );
}

#[test]
fn json_rpc_lists_every_bad_parameter_in_the_error_data() {
    let daemon = TestDaemon::start(&[("load.toml", LOAD)]);
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({
            "target": "load",
            "params": {"date": "2024-02-30", "mode": "bogus", "size": "many", "extra": 1}
        }),
    );
    assert_eq!(answer["error"]["code"], -31002, "{answer}");
    let data = answer["error"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("INVALID_PARAMETERS data is a list: {answer}"));
    let fields: BTreeSet<&str> = data.iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["date", "extra", "mode", "size"]),
        "every bad field is listed: {answer}"
    );
    for entry in data {
        let message = entry["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "each field error says what is wrong: {entry}"
        );
    }
    let text = answer.to_string();
    assert!(
        !text.contains(&*daemon.dir().to_string_lossy()),
        "errors must not leak internal paths: {answer}"
    );
    assert_eq!(
        job_count(&daemon),
        0,
        "a rejected submission must not create a job"
    );
}

#[test]
fn good_parameters_are_converted_and_defaulted() {
    let daemon = TestDaemon::start(&[("load.toml", LOAD)]);
    let job_id = daemon.submit("load", &["-p", "date=2024-02-29", "-p", "size=42"]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        job.params.get("date"),
        Some(&json!("2024-02-29")),
        "{:?}",
        job.params
    );
    assert_eq!(
        job.params.get("mode"),
        Some(&json!("incremental")),
        "{:?}",
        job.params
    );
    assert_eq!(
        job.params.get("size"),
        Some(&json!(42)),
        "an int is stored as a number: {:?}",
        job.params
    );
    let log = daemon.logs(job_id, "p.a", None);
    assert!(
        log.contains("date=2024-02-29 mode=incremental size=42"),
        "the activity sees the values: {log:?}"
    );
}

const BOUNDED: &str = r#"
[params.rows]
type = "int"
min = 1
max = 1000
default = 100

[params.ratio]
type = "float"
min = 0.0
max = 1.0
default = 0.5

[params.note]
type = "string"

[params.date]
type = "date"
required = true

[process.p.activity.a]
command = ["sh", "-c", "echo \"rows=$HF_PARAM_ROWS note=${HF_PARAM_NOTE-absent} shown=$1\"", "a", "{{ params.note | default('none') }}"]
"#;

/// `min`/`max` refuse values out of bounds at submit, every bad one named
/// (hfctl exit 8, JSON-RPC field errors); a null (`--null`, JSON `null`) is
/// accepted for an optional parameter without a default, which then stays
/// absent from the environment and is none to templates, and refused for
/// a required one and one with a default; `hfctl describe` and the
/// `rpc.discover` schema show the bounds.
#[test]
fn bounds_and_null_are_checked_at_submit() {
    let daemon = TestDaemon::start(&[("bounded.toml", BOUNDED)]);
    let output = daemon.hfctl(&[
        "submit",
        "bounded",
        "-p",
        "date=2026-12-01",
        "-p",
        "rows=0",
        "-p",
        "ratio=1.5",
    ]);
    assert_eq!(output.status.code(), Some(8), "{}", shown(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("must be at least 1") && stderr.contains("must be at most 1"),
        "both bounds are named: {stderr}"
    );

    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "bounded", "params": {"date": null, "rows": null, "ratio": -1}}),
    );
    assert_eq!(answer["error"]["code"], -31002, "{answer}");
    let fields: BTreeSet<&str> = answer["error"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["date", "rows", "ratio"]),
        "null for a required one and one with a default, and a bound: {answer}"
    );
    assert_eq!(job_count(&daemon), 0, "nothing refused made a job");

    let id = daemon.submit(
        "bounded",
        &["-p", "date=2026-12-01", "-p", "rows=1000", "--null", "note"],
    );
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(!job.params.contains_key("note"), "{job:#?}");
    assert!(
        daemon
            .logs(id, "p.a", None)
            .contains("rows=1000 note=absent shown=none"),
        "{}",
        daemon.logs(id, "p.a", None)
    );

    let described = daemon.hfctl(&["describe", "bounded"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        text.contains("int 1..1000") && text.contains("float 0.0..1.0"),
        "describe shows the bounds: {text}"
    );
    let doc = rpc_call(daemon.socket(), "rpc.discover", json!({}));
    let rows = &doc["result"]["components"]["schemas"]["params.bounded"]["properties"]["rows"];
    assert_eq!(
        (&rows["minimum"], &rows["maximum"]),
        (&json!(1), &json!(1000)),
        "the schema has the bounds: {rows}"
    );
}
