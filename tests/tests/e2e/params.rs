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
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
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
