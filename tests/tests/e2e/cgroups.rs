//! Per-attempt cgroups: with a cgroup v2 subtree of its own (the `cgroup`
//! setting naming a directory here; `Delegate=yes` under systemd), each
//! attempt runs in its own child cgroup, everything it started dies with it
//! (processes that left its process group too), leftovers of a daemon
//! killed with SIGKILL are killed at the next start, and a memory cap is
//! enforced by the cgroup (an OOM kill is reported as `oom`) or, where the
//! memory controller is not delegated, by RLIMIT_AS.
//!
//! These tests need root and a cgroup v2 mount; elsewhere they say why and
//! return, unless HOLDFAST_CGROUP_TEST=required (CI) makes that a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_api::{AttemptState, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::poll::eventually;
use holdfast_tests::process::{gone_within, is_alive};

use crate::support::{activity, shown};

/// How long a SIGKILLed process may take to finish dying.
const DYING: Duration = Duration::from_secs(2);

/// A cgroup directory for one test, removed (with what is left in it) when
/// dropped.
pub(crate) struct TestCgroup {
    dir: PathBuf,
    /// The path the kernel shows in `/proc/<pid>/cgroup`.
    relative: String,
}

impl TestCgroup {
    pub(crate) fn create(name: &str) -> Option<TestCgroup> {
        let required = std::env::var("HOLDFAST_CGROUP_TEST").is_ok_and(|v| v == "required");
        let skip = |why: String| {
            assert!(!required, "HOLDFAST_CGROUP_TEST=required, but {why}");
            eprintln!("SKIPPED: {why}");
            None
        };
        if !nix::unistd::geteuid().is_root() {
            return skip("creating a cgroup needs root".into());
        }
        let Some((dir, relative)) = holdfast_tests::cgroup::child_of_own(&format!(
            "holdfast-test-{}-{name}",
            std::process::id()
        )) else {
            return skip("no cgroup v2 file system is mounted".into());
        };
        if let Err(e) = fs::create_dir(&dir) {
            return skip(format!("cannot create {}: {e}", dir.display()));
        }
        Some(TestCgroup { dir, relative })
    }

    pub(crate) fn settings(&self) -> String {
        format!("cgroup = \"{}\"\nkill_grace = \"1s\"\n", self.dir.display())
    }

    fn attempt_dirs(&self) -> Vec<String> {
        fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("attempt-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn granted(&self, controller: &str) -> bool {
        fs::read_to_string(self.dir.join("cgroup.subtree_control"))
            .is_ok_and(|t| t.split_whitespace().any(|c| c == controller))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Children first; a populated one is killed before it is removed.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = fs::write(entry.path().join("cgroup.kill"), "1");
                let path = entry.path();
                let _ = eventually(DYING, "a test cgroup empties", || {
                    fs::remove_dir(&path).or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                });
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn read_pid(path: &Path) -> i32 {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{} holds no pid: {text:?}", path.display()))
}

/// Starts a process in a new session (out of the activity's process group,
/// with an empty environment, so neither the group kill nor the daemon's
/// environment markers can find it), records its pid and waits until the
/// pid file is complete.
const ESCAPE: &str = r#"env -i setsid sh -c 'echo $$ > @DIR@/NAME.tmp; mv @DIR@/NAME.tmp @DIR@/NAME; exec sleep 300' </dev/null >/dev/null 2>&1 &
while [ ! -s @DIR@/NAME ]; do :; done"#;

fn escape(name: &str) -> String {
    ESCAPE.replace("NAME", name)
}

#[test]
fn each_attempt_has_a_cgroup_and_nothing_it_started_outlives_it() {
    let Some(cgroup) = TestCgroup::create("own") else {
        return;
    };
    let chain = format!(
        r#"
[process.p.activity.quick]
shell = '''
cat /proc/self/cgroup > @DIR@/cgroup.txt
{}
'''

[process.p.activity.stuck]
shell = '''
{}
trap "" TERM
sleep 300
'''
timeout = "1s"
retries = 0
"#,
        escape("escapee-quick"),
        escape("escapee-stuck")
    );
    let daemon = TestDaemon::start_with(&cgroup.settings(), &[("confined.toml", &chain)]);
    let info = daemon.hfctl(&["info"]);
    let shown_info = shown(&info);
    assert!(
        shown_info.contains(&format!(
            "cgroup per attempt under {}",
            cgroup.dir.display()
        )),
        "hfctl info names the cgroup: {shown_info}"
    );

    let job_id = daemon.submit("confined", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let quick = activity(&job, "p.quick");
    assert_eq!(
        quick.attempts[0].state,
        AttemptState::Succeeded,
        "{quick:#?}"
    );
    let stuck = activity(&job, "p.stuck");
    assert_eq!(stuck.attempts[0].state, AttemptState::Timeout, "{stuck:#?}");

    let seen = fs::read_to_string(daemon.dir().join("cgroup.txt")).expect("cgroup.txt");
    let expected = format!("0::{}/attempt-{job_id}-0-1", cgroup.relative);
    assert!(
        seen.lines().any(|l| l == expected),
        "the activity runs in its own cgroup {expected}; /proc/self/cgroup said {seen:?}"
    );
    for name in ["escapee-quick", "escapee-stuck"] {
        let pid = read_pid(&daemon.dir().join(name));
        assert!(
            gone_within(pid, DYING),
            "{name} ({pid}) left the process group and the environment, and outlived its attempt"
        );
    }
    eventually(
        Duration::from_secs(10),
        "the attempt cgroups are removed",
        || {
            let left = cgroup.attempt_dirs();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

#[test]
fn a_restart_kills_what_a_killed_daemon_left_in_its_cgroups() {
    let Some(cgroup) = TestCgroup::create("leftover") else {
        return;
    };
    // The first attempt leaves a process nothing else can find and hangs;
    // after the restart the resumed attempt succeeds at once.
    let chain = format!(
        r#"
[process.p.activity.a]
shell = '''
if [ -e @DIR@/second ]; then exit 0; fi
touch @DIR@/second
{}
sleep 300
'''
"#,
        escape("escapee")
    );
    let mut daemon = TestDaemon::start_with(&cgroup.settings(), &[("leftover.toml", &chain)]);
    let job_id = daemon.submit("leftover", &[]);
    daemon.wait_for(job_id, "the first attempt is running", |job| {
        job.activities
            .iter()
            .any(|a| a.attempts.iter().any(|t| t.state == AttemptState::Running))
    });
    let pid_file = daemon.dir().join("escapee");
    let (escapee, _) = eventually(
        Duration::from_secs(10),
        "the escapee records its pid",
        || {
            fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
                .ok_or("no pid yet")
        },
    );
    daemon.kill9();
    assert!(
        is_alive(escapee),
        "the escapee must still run after the daemon died"
    );
    assert!(
        !cgroup.attempt_dirs().is_empty(),
        "the attempt's cgroup is left behind by the killed daemon"
    );

    daemon.restart();
    assert!(
        gone_within(escapee, DYING),
        "the restarted daemon left the earlier attempt's escapee ({escapee}) alive"
    );
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let a = activity(&job, "p.a");
    assert_eq!(a.attempts[0].state, AttemptState::Interrupted, "{a:#?}");
    assert!(
        daemon
            .log_tail()
            .contains("attempt cgroups an earlier daemon left behind"),
        "the cleanup is logged:\n{}",
        daemon.log_tail()
    );
}

#[test]
fn a_memory_cap_stops_an_activity_that_goes_over_it() {
    let Some(cgroup) = TestCgroup::create("memory") else {
        return;
    };
    // `tail -n 1` keeps a line until it ends: here 512 MiB without a newline.
    // The small one runs first (the process is serial) and stays under.
    let chain = r#"
[process.p.activity.small]
shell = "head -c 1048576 /dev/zero | tail -n 1 > /dev/null"
memory_max = "64M"

[process.p.activity.hog]
shell = "head -c 536870912 /dev/zero | tail -n 1 > /dev/null"
memory_max = "64M"
retries = 0
"#;
    let daemon = TestDaemon::start_with(&cgroup.settings(), &[("hog.toml", chain)]);
    let memory_controller = cgroup.granted("memory");
    let described = daemon.hfctl_json(&["describe", "hog", "--json"]);
    let limits = described.to_string();
    let expected_mechanism = if memory_controller {
        "cgroup memory.max"
    } else {
        "rlimit RLIMIT_AS, address space (no memory controller delegated)"
    };
    assert!(
        limits.contains(expected_mechanism),
        "describe names the mechanism {expected_mechanism:?}: {limits}"
    );

    let job_id = daemon.submit("hog", &[]);
    let job = daemon.wait_done(job_id);
    let small = activity(&job, "p.small");
    assert_eq!(
        small.attempts[0].state,
        AttemptState::Succeeded,
        "{small:#?}"
    );
    let hog = activity(&job, "p.hog");
    let attempt = &hog.attempts[0];
    if memory_controller {
        assert_eq!(attempt.state, AttemptState::Oom, "{attempt:#?}");
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.contains("OOM killer") && e.contains("64 MiB")),
            "{attempt:#?}"
        );
    } else {
        eprintln!(
            "the memory controller is not delegated here: checking the RLIMIT_AS fallback, not `oom`"
        );
        assert_eq!(attempt.state, AttemptState::Failed, "{attempt:#?}");
        let log = daemon.logs(job_id, "p.hog", Some(1));
        assert!(
            log.to_lowercase().contains("memory"),
            "the allocation failure shows in the log: {log}"
        );
    }
}

/// Each item of a fan-out runs in a cgroup of its own
/// (`attempt-<job>-<activity>i<item>-<attempt>`), so two items with the
/// same attempt number never share one, and each is removed once done.
#[test]
fn each_fan_out_item_has_a_cgroup_of_its_own() {
    let Some(cgroup) = TestCgroup::create("items") else {
        return;
    };
    let chain = r#"
[process.p.activity.each]
foreach = { count = 3, chunk_size = 1 }
max_parallel = 3
shell = "cat /proc/self/cgroup > @DIR@/cgroup-$HF_ITEM_INDEX.txt"
"#;
    let daemon = TestDaemon::start_with(&cgroup.settings(), &[("items.toml", chain)]);
    let job_id = daemon.submit("items", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    for item in 0..3 {
        let text = fs::read_to_string(daemon.dir().join(format!("cgroup-{item}.txt")))
            .expect("the item wrote its cgroup");
        let expected = format!("{}/attempt-{job_id}-0i{item}-1", cgroup.relative);
        assert!(
            text.trim().ends_with(&expected),
            "item {item} ran in {text:?}, not {expected}"
        );
    }
    eventually(DYING, "the items' cgroups are removed", || {
        let left = cgroup.attempt_dirs();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}
