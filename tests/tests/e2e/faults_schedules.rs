//! A schedule's answers while the store cannot write: a backfill or a
//! trigger whose jobs the failed commit refused says so, names none of
//! them, and none of them turns up once the store writes again.

use std::fs;

use holdfast_tests::{TestDaemon, eventually};

use crate::dates::fired_ids;
use crate::faults::{EXIT_UNAVAILABLE, QUICK, Tmpfs, fill, submit_until_refused};
use crate::support::shown;

const DAILY: &str = r#"
[schedule.load]
cron = "0 4 * * *"
timezone = "UTC"
overlap = "allow"

[process.p.activity.a]
command = ["true"]
"#;

#[test]
fn a_backfill_or_trigger_the_store_cannot_commit_names_no_job() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let mut daemon = TestDaemon::prepare(None, &[("quick.toml", QUICK), ("daily.toml", DAILY)]);
    let state = daemon.state_dir();
    fs::remove_dir(&state).expect("the fixture's empty state directory can be removed");
    std::os::unix::fs::symlink(tmpfs.path(), &state).expect("the state directory can be linked");
    daemon.launch();

    let filler = fill(tmpfs.path());
    // The WAL may still have room for a few commits: submit until one is
    // refused, so the next commit fails too.
    let (_, refusal) = submit_until_refused(&daemon, 500);
    assert_eq!(
        refusal.status.code(),
        Some(EXIT_UNAVAILABLE),
        "{}",
        shown(&refusal)
    );

    let backfill = daemon.hfctl(&[
        "--json",
        "schedule",
        "backfill",
        "daily.load",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03",
    ]);
    assert_eq!(
        backfill.status.code(),
        Some(EXIT_UNAVAILABLE),
        "a backfill whose jobs were refused is UNAVAILABLE, not a list of jobs: {}",
        shown(&backfill)
    );
    let said = String::from_utf8_lossy(&backfill.stderr);
    assert!(
        said.contains("cannot be written") && said.contains("not run"),
        "the refusal says why and that the fires did not run: {said}"
    );
    let trigger = daemon.hfctl(&["schedule", "trigger", "daily.load"]);
    assert_eq!(
        trigger.status.code(),
        Some(EXIT_UNAVAILABLE),
        "a trigger whose job was refused says so: {}",
        shown(&trigger)
    );

    fs::remove_file(&filler).expect("the filler can be removed");
    eventually(
        std::time::Duration::from_secs(30),
        "the store to take submissions again",
        || {
            let output = daemon.hfctl(&["submit", "quick"]);
            if output.status.success() {
                Ok(())
            } else {
                Err(shown(&output))
            }
        },
    );
    assert_eq!(
        fired_ids(&daemon, "daily.load"),
        Vec::<u64>::new(),
        "no job of the refused backfill or trigger exists"
    );
}
