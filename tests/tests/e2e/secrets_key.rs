//! The secrets key file as the daemon finds it at start: never read through
//! a symlink, refused unless it is the daemon's own private regular file.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use holdfast_tests::TestDaemon;

use crate::support::shown;

const CHAIN: &str = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.a]
shell = "true"
"#;

/// A key file someone else chose: 32 bytes the daemon would accept.
const PLANTED: [u8; 32] = [7; 32];

/// Submits a job with a secret parameter; the hfctl output when refused.
fn refused_submission(daemon: &TestDaemon) -> String {
    let output = daemon.hfctl(&["submit", "keyed", "-p", "token=hf-TOKEN-1"]);
    assert!(
        !output.status.success(),
        "a job with secrets was accepted though the key was refused: {}",
        shown(&output)
    );
    shown(&output)
}

/// Proves that a `secrets.key` that is a symlink (to a key file of someone
/// else's choosing) is not followed: the daemon refuses it, says why, and a
/// job with secret parameters is not accepted, so no secret is sealed with
/// a key another user may know. Before the fix the link was followed and
/// the planted key used.
#[test]
fn a_symlinked_secrets_key_is_refused() {
    let mut daemon = TestDaemon::prepare(None, &[("keyed.toml", CHAIN)]);
    let planted = daemon.dir().join("planted.key");
    fs::write(&planted, PLANTED).expect("the planted key can be written");
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&planted, daemon.state_dir().join("secrets.key"))
        .expect("the symlink can be made");
    daemon.launch();
    let said = refused_submission(&daemon);
    assert!(
        said.contains("symbolic link"),
        "the refusal says why: {said}"
    );
    assert_eq!(
        fs::read(&planted).expect("the planted key is still there"),
        PLANTED,
        "the link's target is left alone"
    );
}

/// Proves that a `secrets.key` that its group or others may read is
/// warned about at start (with the other state files) and refused, naming
/// its mode: a key readable by others opens every sealed secret. Before the
/// fix it was used as it was, with no warning.
#[test]
fn a_secrets_key_readable_by_others_is_warned_about_and_refused() {
    let mut daemon = TestDaemon::prepare(None, &[("keyed.toml", CHAIN)]);
    let key = daemon.state_dir().join("secrets.key");
    fs::write(&key, PLANTED).expect("the key can be written");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    daemon.launch();
    let said = refused_submission(&daemon);
    assert!(
        said.contains("mode 0644"),
        "the refusal names the mode: {said}"
    );
    let log = fs::read_to_string(daemon.log_path()).expect("the daemon log reads");
    assert!(
        log.lines()
            .any(|l| l.contains("secrets.key is mode 0644") && l.contains("WARN")),
        "a start-time warning names the key file:\n{log}"
    );
}

/// Proves that the key the daemon makes itself (0600, its own) is used
/// across a restart: the checks refuse nothing they should accept.
#[test]
fn the_daemons_own_secrets_key_is_accepted_after_a_restart() {
    let mut daemon = TestDaemon::start(&[("keyed.toml", CHAIN)]);
    let first = daemon.submit("keyed", &["-p", "token=hf-TOKEN-1"]);
    daemon.wait_done(first);
    daemon.restart();
    let second = daemon.submit("keyed", &["-p", "token=hf-TOKEN-2"]);
    assert_eq!(
        daemon.wait_done(second).state,
        holdfast_api::JobState::Succeeded
    );
}
