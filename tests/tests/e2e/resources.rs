//! Resource use per attempt: an activity that allocates a known amount and
//! burns a known CPU time is recorded within a tolerance, from `wait4`
//! rusage without a cgroup and from the attempt's cgroup with one, and
//! `hfctl status` shows it as a compact column.

use holdfast_api::{AttemptState, JobState, ResourceUse};
use holdfast_tests::TestDaemon;

use crate::cgroups::TestCgroup;
use crate::support::{activity, shown};

const MIB: u64 = 1024 * 1024;

/// Allocates 100 MiB (a string it keeps), then spins until it has used one
/// second of user CPU (asking the kernel only now and then, so the spin is
/// user time, not system time). Run from `sh`, which waits for it: rusage counts a
/// descendant that was waited for.
const HUNGRY: &str = r#"
[process.p.activity.hungry]
shell = '''
perl -e 'my $x = "a" x (100 * 1024 * 1024); until ((times)[0] >= 1.0) { for (1 .. 200000) {} } print length($x), "\n"'
'''
retries = 0

[process.p.activity.quick]
command = ["true"]
retries = 0
"#;

/// Runs the chain and returns the `hungry` attempt's recorded use.
fn hungry_use(daemon: &TestDaemon) -> (u64, ResourceUse) {
    let job_id = daemon.submit("hungry", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let attempt = &activity(&job, "p.hungry").attempts[0];
    assert_eq!(attempt.state, AttemptState::Succeeded);
    let usage = attempt
        .resources
        .clone()
        .unwrap_or_else(|| panic!("an ended attempt has its resource use: {attempt:#?}"));
    (job_id, usage)
}

/// The figures every source must get right, with room for the
/// interpreter, the shell and a busy machine.
fn assert_known_use(usage: &ResourceUse) {
    // The kernel splits CPU time between user and system by sampling, and
    // a busy machine (other tests, cgroups) moves the split a little; the
    // total is close to what the spin measured itself.
    let cpu = usage.user_cpu_us + usage.system_cpu_us;
    assert!(
        (950_000..2_500_000).contains(&cpu),
        "one second of CPU burned, {cpu} us recorded: {usage:?}"
    );
    assert!(
        usage.user_cpu_us >= 900_000 && usage.system_cpu_us < 1_000_000,
        "the spin is user time, the allocation little system time: {usage:?}"
    );
    assert!(
        usage.wall_ms * 1000 + 50_000 >= usage.user_cpu_us,
        "one process cannot use more CPU than wall time: {usage:?}"
    );
    let peak = usage.peak_memory_bytes.expect("peak memory recorded");
    assert!(
        (100 * MIB..350 * MIB).contains(&peak),
        "100 MiB allocated, {} MiB peak recorded: {usage:?}",
        peak / MIB
    );
}

/// Without a cgroup the figures come from `wait4` of the leader (here a
/// shell), which includes the perl it waited for; `hfctl status` shows
/// them, and a trivial activity records next to nothing.
#[test]
fn without_a_cgroup_rusage_records_cpu_and_peak_memory() {
    let daemon = TestDaemon::start_with("cgroup = \"off\"\n", &[("hungry.toml", HUNGRY)]);
    let (job_id, usage) = hungry_use(&daemon);
    assert_eq!(usage.source, "rusage", "{usage:?}");
    assert_known_use(&usage);

    let job = daemon.status(job_id);
    let quick = activity(&job, "p.quick").attempts[0]
        .resources
        .clone()
        .expect("quick's use recorded");
    assert!(
        quick.user_cpu_us + quick.system_cpu_us < 500_000
            && quick.peak_memory_bytes.unwrap_or(0) < 50 * MIB,
        "`true` uses next to nothing: {quick:?}"
    );

    let out = daemon.hfctl(&["status", &job_id.to_string()]);
    let text = shown(&out);
    assert!(text.contains("RESOURCES"), "a resources column: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("└─ hungry") || l.contains("├─ hungry"))
        .unwrap_or_else(|| panic!("a row for hungry: {text}"));
    assert!(
        line.contains("s cpu ") && line.contains('M'),
        "the row shows CPU seconds and peak memory in MiB: {line}"
    );
}

/// With a cgroup per attempt the figures come from its `cpu.stat` and
/// `memory.peak` (when the memory controller is granted), read before it
/// is removed.
#[test]
fn with_a_cgroup_its_counters_record_cpu_and_peak_memory() {
    let Some(cgroup) = TestCgroup::create("resources") else {
        return;
    };
    let daemon = TestDaemon::start_with(&cgroup.settings(), &[("hungry.toml", HUNGRY)]);
    let (_, usage) = hungry_use(&daemon);
    assert_eq!(usage.source, "cgroup", "{usage:?}");
    assert_known_use(&usage);
    if cgroup.granted("io") {
        assert!(
            usage.io_read_bytes.is_some() && usage.io_write_bytes.is_some(),
            "io.stat read when the io controller is granted: {usage:?}"
        );
    }
}
