//! Item values that a shell would take for code, through a Slurm job
//! array's per-task scripts: each reaches its task as written, in argv and
//! in the environment, and none is run. Skipped without a cluster, failed
//! when `HOLDFAST_SLURM_TEST=required`.

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::slurm::{cluster_up, shared};
use serde_json::json;

/// Quotes, command substitution, backquotes, a newline, a semicolon and a
/// variable: each item's `task.sh` carries them quoted, so the task prints
/// them back byte for byte and the planted `touch` never runs.
#[test]
fn item_values_reach_array_tasks_as_written() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[params.values]
type = "json"
required = true

[process.p.activity.each]
foreach = "{{ params.values }}"
executor = "slurm"
env = { VALUE = "{{ item }}" }
command = ["/bin/sh", "-c", "printf '<%s|%s>\n' \"$VALUE\" \"$1\"", "sh", "{{ item }}"]
"#;
    let daemon = TestDaemon::start(&[("quoted.toml", chain)]);
    let planted = daemon.dir().join("planted");
    let values = [
        "it's".to_string(),
        format!("$(touch {})", planted.display()),
        format!("`touch {}`", planted.display()),
        format!("a\"b'; touch {} #", planted.display()),
        "two\nlines $HOME".to_string(),
    ];
    let param = format!("values={}", json!(values));
    let job_id = daemon.submit("quoted", &["-p", &param]);
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        daemon.log_tail()
    );
    for (item, value) in values.iter().enumerate() {
        let log = daemon.logs(job_id, &format!("p.each[{item}]"), None);
        assert!(
            log.contains("submitted to Slurm as job "),
            "item {item} ran as an array task: {log:?}"
        );
        assert!(
            log.contains(&format!("<{value}|{value}>\n")),
            "item {item} {value:?}: {log:?}"
        );
    }
    assert!(!planted.exists(), "an item's value ran as shell code");
}
