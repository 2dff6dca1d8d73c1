//! Starting and reaching the daemon: stale and live sockets, and what hfctl
//! says when nothing answers or it is called wrongly.

use std::time::Duration;

use holdfast_tests::{TestDaemon, hfctl_command, holdfastd_command, run_with_deadline};

use crate::support::{shown, stale_socket};

const TINY: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

#[test]
fn a_stale_socket_file_is_replaced_at_start() {
    let mut daemon = TestDaemon::prepare(None, &[("tiny.toml", TINY)]);
    stale_socket(daemon.socket());
    assert!(daemon.socket().exists());
    daemon.launch();
    let info = daemon.hfctl_json(&["info"]);
    assert!(info.is_object(), "{info}");
    let job_id = daemon.submit("tiny", &[]);
    assert_eq!(
        daemon.wait_done(job_id).state,
        holdfast_api::JobState::Succeeded
    );
}

#[test]
fn a_second_daemon_on_a_live_socket_exits_and_the_first_keeps_serving() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let other = daemon.dir().join("other");
    std::fs::create_dir_all(other.join("workflows.d")).expect("a second layout can be made");
    let second = holdfastd_command(
        &other.join("holdfast.toml"),
        daemon.socket(),
        &other.join("state"),
        &other.join("workflows.d"),
    );
    let output = run_with_deadline(second, Duration::from_secs(20));
    assert!(
        !output.status.success(),
        "a second daemon must refuse a live socket: {}",
        shown(&output)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let path = daemon.socket().to_string_lossy();
    assert!(
        said.contains(&*path) || said.to_lowercase().contains("socket"),
        "the refusal names the socket: {said}"
    );

    assert!(
        daemon.socket().exists(),
        "the second daemon removed the first one's socket"
    );
    let info = daemon.hfctl(&["info"]);
    assert!(
        info.status.success(),
        "the first daemon still serves: {}",
        shown(&info)
    );
    let job_id = daemon.submit("tiny", &[]);
    assert_eq!(
        daemon.wait_done(job_id).state,
        holdfast_api::JobState::Succeeded
    );
}

#[test]
fn hfctl_without_a_daemon_exits_3_with_one_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("nobody.sock");
    let stale = dir.path().join("stale.sock");
    stale_socket(&stale);
    for socket in [&missing, &stale] {
        let mut cmd = hfctl_command(socket);
        cmd.arg("info");
        let output = run_with_deadline(cmd, Duration::from_secs(20));
        assert_eq!(
            output.status.code(),
            Some(3),
            "{}: {}",
            socket.display(),
            shown(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one line on stderr, not a backtrace: {stderr:?}"
        );
    }
}

#[test]
fn hfctl_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("nobody.sock");
    for args in [
        &["submit"][..],
        &["frobnicate"][..],
        &["status", "not-a-number"][..],
    ] {
        let mut cmd = hfctl_command(&socket);
        cmd.args(args);
        let output = run_with_deadline(cmd, Duration::from_secs(20));
        assert_eq!(
            output.status.code(),
            Some(2),
            "hfctl {args:?}: {}",
            shown(&output)
        );
    }
}
