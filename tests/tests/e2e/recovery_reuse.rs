//! Restart recovery and pid reuse: what a restarted daemon kills of the
//! attempts a dead daemon left running, and what it must leave alone.

use std::time::Duration;

use holdfast_api::AttemptState;
use holdfast_tests::TestDaemon;

/// Makes an unrelated process group whose id is `pgid` and whose leader has
/// exited, as a classic double-forking daemon leaves it (setsid, fork, the
/// parent exits): the pid is taken through `ns_last_pid` (root only). The
/// group's remaining member is a `sleep`; its pid, or None when the pid
/// could not be had (a busy host).
fn unrelated_group_with_id(pgid: u32) -> Option<u32> {
    let script = r#"
import os, sys
P = int(sys.argv[1])
for _ in range(500):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(P - 1))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if os.getpid() != P:
            os._exit(3)
        os.setsid()
        child = os.fork()
        if child == 0:
            os.close(r); os.close(w)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execvp("sleep", ["sleep", "120"])
        os.write(w, str(child).encode()); os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 64).decode(); os.close(r)
    if pid == P and os.WEXITSTATUS(status) == 0:
        print(got); sys.exit(0)
sys.exit(1)
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(pgid.to_string())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Proves that recovery without cgroups leaves alone an unrelated process
/// group that took the id of an interrupted attempt's group once its pid
/// was given out again (a wrap of the pid space, or a reboot): a
/// double-forked daemon (setsid, fork, the parent exits) whose remaining
/// member started after the attempt's leader is not SIGKILLed by the
/// restarted holdfastd. Before the fix every member of a group with the
/// recorded id that started later than the leader was killed.
#[test]
fn recovery_kills_an_unrelated_group_that_reused_the_attempts_pid() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to choose a pid (ns_last_pid)");
        return;
    }
    let chain = r#"
[process.p.activity.hold]
shell = "sleep 300"
"#;
    let mut daemon = TestDaemon::start_with("cgroup = \"off\"\n", &[("long.toml", chain)]);
    let id = daemon.submit("long", &[]);
    let running = daemon.wait_for(id, "the attempt has a pid", |job| {
        job.activities[0]
            .attempts
            .last()
            .is_some_and(|a| a.pid.is_some())
    });
    let pid = running.activities[0].attempts[0].pid.expect("pid");
    // The daemon and the attempt both go (as in a power loss).
    daemon.kill9();
    let group = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    holdfast_tests::eventually(
        Duration::from_secs(10),
        "the attempt's group is gone",
        || match nix::sys::signal::killpg(group, None) {
            Err(nix::errno::Errno::ESRCH) => Ok(()),
            _ => Err("still there"),
        },
    );
    let Some(victim) = unrelated_group_with_id(pid) else {
        eprintln!("skipped: pid {pid} could not be had again");
        return;
    };
    daemon.launch();
    // Recovery kills leftovers before it marks the attempt interrupted.
    daemon.wait_for(id, "the attempt is marked interrupted", |job| {
        job.activities[0].attempts[0].state == AttemptState::Interrupted
    });
    let victim_pid = nix::unistd::Pid::from_raw(victim as i32);
    let alive =
        std::fs::read_to_string(format!("/proc/{victim}/stat")).is_ok_and(|s| !s.contains(") Z "));
    let _ = nix::sys::signal::kill(victim_pid, nix::sys::signal::Signal::SIGKILL);
    assert!(
        alive,
        "the restarted daemon killed pid {victim}, an unrelated process in a new group that \
         reused the id {pid} of the interrupted attempt's group"
    );
}
