//! A fan-out item whose attempt cannot be prepared (its user not found,
//! its secret files not written) leaves its Slurm job array: the array
//! goes out for the other items, which run, instead of waiting for one
//! that will never join. Skipped without a cluster, failed when
//! `HOLDFAST_SLURM_TEST=required`.

use std::os::unix::fs::PermissionsExt;

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use holdfast_tests::slurm::{cluster_up, shared};
use serde_json::json;

/// Three items read a secret file each; a plain file planted where the
/// second item's secret directory goes makes its preparation fail.
#[test]
fn an_item_that_cannot_be_prepared_leaves_its_job_array() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[params.token]
type = "string"
secret = true
required = true

[process.p.activity.each]
foreach = "[0, 1, 2]"
executor = "slurm"
command = ["sh", "-c", 'test -s "$1" && echo "item $2 read its token"', "sh", "{{ secret_file('token') }}", "{{ item }}"]
"#;
    let daemon = TestDaemon::start(&[("leave.toml", chain)]);
    // The first job of a new daemon is job 1; its activity is index 0.
    let secrets = daemon.dir().join("secrets");
    std::fs::create_dir(&secrets).expect("the secrets directory can be made");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    std::fs::write(secrets.join("1-0i1-1"), "in the way").expect("the file can be planted");

    let job_id = daemon.submit("leave", &["-p", "token=s3cr3t"]);
    assert_eq!(job_id, 1, "the planted file names job 1");
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Failed,
        "item 1 failed, so the job did: {job:#?}\n{}",
        daemon.log_tail()
    );
    for item in [0, 2] {
        let log = daemon.logs(job_id, &format!("p.each[{item}]"), None);
        assert!(
            log.contains("submitted to Slurm as job ")
                && log.contains(&format!("item {item} read its token\n")),
            "item {item} ran in the array without item 1: {log:?}"
        );
    }
    let page = rpc_call(
        daemon.socket(),
        "job.items",
        json!({"job_id": job_id, "activity": "p.each", "limit": 10}),
    );
    let item = &page["result"]["items"][1];
    assert_eq!(item["state"], "failed", "{page}");
    let shown = item.to_string();
    assert!(
        shown.contains("cannot write the secret files"),
        "item 1 says why it did not start: {shown}"
    );
    assert!(
        !page.to_string().contains("s3cr3t"),
        "the secret stays out: {page}"
    );
}
