//! Privilege limits with real users: the `group` a run-as activity may get
//! (its user's own groups, plus `run_as_groups`; root's group never unless
//! listed), checked at load with the key's position and again at every
//! spawn; a `working_dir` entered only as the activity's user; `tasks_max`
//! said not to be enforced where the kernel ignores it (root); and
//! `max_priority`, which keeps members from jumping the queue.
//!
//! The run-as tests use a user-mode daemon running as root and their own
//! user `hft-priv` (see `holdfast_tests::users::privilege_account`), whose
//! memberships one test changes; the priority test runs `holdfastd
//! --system` and drives it with `hfctl` run as the shared test accounts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use holdfast_api::{AttemptState, JobState, WorkflowSummary};
use holdfast_tests::TestDaemon;
use holdfast_tests::users::{
    self, Account, CHAIN_GROUP, EXTRA_GROUP, PRIVILEGE_GROUP, SystemDaemon, group_id,
};

use crate::support::{activity, shown};
use crate::users::{accounts_or_skip, audit};

/// The privilege tests' own run-as user, or `None` after saying why the
/// test cannot run here.
fn run_as_or_skip(test: &str) -> Option<&'static Account> {
    accounts_or_skip(test)?;
    Some(users::privilege_account().unwrap_or_else(|e| panic!("{test}: {e}")))
}

/// `hfctl --json workflows`, by name.
fn workflow(daemon: &TestDaemon, name: &str) -> WorkflowSummary {
    let all: Vec<WorkflowSummary> =
        serde_json::from_value(daemon.hfctl_json(&["workflows"])).expect("a workflow list");
    all.into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("chain {name} is listed"))
}

/// 1-based line and column of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is in the chain"));
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, at - line_start + 1)
}

/// Puts a membership a test changed back as it was, even when the test
/// fails.
struct Restore<'a> {
    user: &'a str,
    group: &'a str,
    member: bool,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        users::set_membership(self.user, self.group, self.member);
    }
}

/// Proves that `group` gives a run-as activity no group its user is not
/// in: a group of someone else's and root's group (from the activity or
/// from `[defaults]`) are refused at load with the file, line and column of
/// the `group` key; the user's own group and a group `run_as_groups` lists
/// load and run with that gid. Before the fix both refused chains loaded
/// and ran with the foreign gid.
#[test]
fn a_run_as_group_is_one_of_the_users_own_or_listed() {
    let Some(user) = run_as_or_skip("a_run_as_group_is_one_of_the_users_own_or_listed") else {
        return;
    };
    let foreign = format!(
        r#"
[process.p.activity.a]
user = "hft-priv"
group = "{CHAIN_GROUP}"
shell = "id -g"
"#
    );
    let root_group = r#"
[defaults]
user = "hft-priv"
group = "root"

[process.p.activity.a]
shell = "id -g"
"#;
    let own = r#"
[process.p.activity.a]
user = "hft-priv"
group = "hft-priv"
shell = "id -g"
"#;
    let listed = format!(
        r#"
[process.p.activity.a]
user = "hft-priv"
group = "{EXTRA_GROUP}"
shell = "id -g"
"#
    );
    let daemon = TestDaemon::start_with(
        &format!("run_as_allowed = [\"hft-priv\"]\nrun_as_groups = [\"{EXTRA_GROUP}\"]\n"),
        &[
            ("foreign.toml", &foreign),
            ("root-group.toml", root_group),
            ("own.toml", own),
            ("listed.toml", &listed),
        ],
    );

    for (chain, text, group, what) in [
        ("foreign", foreign.as_str(), CHAIN_GROUP, "not one of user"),
        ("root-group", root_group, "root", "gid 0"),
    ] {
        let summary = workflow(&daemon, chain);
        let error = summary
            .error
            .clone()
            .unwrap_or_else(|| panic!("{chain} is refused at load: {summary:#?}"));
        assert_eq!(summary.status, "broken", "{summary:#?}");
        assert!(
            error.message.contains(group)
                && error.message.contains(what)
                && error.message.contains("run_as_groups"),
            "{chain}: the error names the group and the setting: {error:#?}"
        );
        let (line, column) = position_of(text, "group =");
        assert_eq!(
            (error.line, error.column),
            (Some(line), Some(column)),
            "{chain}: the error points at the group key: {error:#?}"
        );
        assert!(error.file.ends_with(&format!("{chain}.toml")), "{error:#?}");
        let listed = daemon.hfctl(&["workflows"]);
        let located = format!("{chain}.toml:{line}:{column}: {chain}.p.a: group ");
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains(&located),
            "`hfctl workflows` shows {located:?}: {}",
            shown(&listed)
        );
        let submitted = daemon.hfctl(&["submit", chain]);
        assert_eq!(
            submitted.status.code(),
            Some(6),
            "a chain refused at load cannot be submitted: {}",
            shown(&submitted)
        );
    }

    for (chain, gid) in [("own", user.gid), ("listed", group_id(EXTRA_GROUP))] {
        assert_eq!(workflow(&daemon, chain).status, "loaded", "{chain}");
        let job_id = daemon.submit(chain, &[]);
        assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
        assert_eq!(
            daemon.logs(job_id, "p.a", None).trim(),
            gid.to_string(),
            "{chain} runs with the gid it names"
        );
    }
}

/// Proves that root's group reaches a run-as user other than root only
/// when `run_as_groups` lists it, even when the group database gives it:
/// a chain for a user the database puts in group `root` is refused at load
/// (the error at its `user` key), and loads and runs with gid 0 among its
/// groups once the setting lists `root`. Before the fix it loaded and ran
/// with gid 0 whatever the settings said.
#[test]
fn roots_group_from_the_group_database_needs_run_as_groups() {
    let test = "roots_group_from_the_group_database_needs_run_as_groups";
    if run_as_or_skip(test).is_none() {
        return;
    }
    let user = users::lone_account("hft-priv-zero").unwrap_or_else(|e| panic!("{test}: {e}"));
    let _restore = Restore {
        user: &user.name,
        group: "root",
        member: false,
    };
    users::set_membership(&user.name, "root", true);
    let chain = r#"
[process.p.activity.a]
user = "hft-priv-zero"
shell = "id -G"
"#;
    let daemon = TestDaemon::start_with(
        r#"run_as_allowed = ["hft-priv-zero"]"#,
        &[("zero.toml", chain)],
    );
    let summary = workflow(&daemon, "zero");
    let error = summary
        .error
        .clone()
        .unwrap_or_else(|| panic!("zero is refused at load: {summary:#?}"));
    let (line, column) = position_of(chain, "user =");
    assert!(
        error.message.contains("gid 0") && error.message.contains("run_as_groups"),
        "{error:#?}"
    );
    assert_eq!(
        (error.line, error.column),
        (Some(line), Some(column)),
        "{error:#?}"
    );
    drop(daemon);

    let daemon = TestDaemon::start_with(
        "run_as_allowed = [\"hft-priv-zero\"]\nrun_as_groups = [\"root\"]\n",
        &[("zero.toml", chain)],
    );
    let job_id = daemon.submit("zero", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    let groups = daemon.logs(job_id, "p.a", None);
    assert!(
        groups.split_whitespace().any(|g| g == "0"),
        "listed, root's group is kept: {groups}"
    );
}

/// Proves that the group check is made again at every spawn: a chain that
/// loaded while its user was in the group it names fails its next start
/// with a spawn error once the membership is gone, and runs again once it
/// is back. Before the fix the group was only looked up, never checked,
/// so the activity kept the group.
#[test]
fn a_group_the_user_has_left_is_refused_at_spawn() {
    let Some(user) = run_as_or_skip("a_group_the_user_has_left_is_refused_at_spawn") else {
        return;
    };
    users::set_membership(&user.name, PRIVILEGE_GROUP, true);
    let chain = format!(
        r#"
[process.p.activity.a]
user = "hft-priv"
group = "{PRIVILEGE_GROUP}"
shell = "id -g"
"#
    );
    let daemon = TestDaemon::start_with(
        r#"run_as_allowed = ["hft-priv"]"#,
        &[("member.toml", &chain)],
    );
    let gid = group_id(PRIVILEGE_GROUP).to_string();
    let job_id = daemon.submit("member", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    assert_eq!(daemon.logs(job_id, "p.a", None).trim(), gid);

    let regain = Restore {
        user: &user.name,
        group: PRIVILEGE_GROUP,
        member: true,
    };
    users::set_membership(&user.name, PRIVILEGE_GROUP, false);
    let job_id = daemon.submit("member", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let run = activity(&job, "p.a");
    let attempt = &run.attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{attempt:#?}");
    let error = attempt.error.clone().unwrap_or_default();
    assert!(
        error.contains(PRIVILEGE_GROUP) && error.contains("not one of user \"hft-priv\""),
        "the spawn error names the group and the user: {error}"
    );
    assert_eq!(attempt.pid, None, "no process was started: {attempt:#?}");

    drop(regain);
    let job_id = daemon.submit("member", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
}

/// Proves that `working_dir` is entered as the activity's user, not as the
/// daemon: a submitter steering it (through a parameter) to a directory
/// open to all but inside another user's 0750 directory gets a spawn error
/// saying the user may not enter it, and nothing runs there; the daemon's
/// own activity enters the same directory, and the run-as user enters the
/// same layout under a 0755 directory. Before the fix the child changed
/// directory as root, then switched users: already inside, it read the
/// file by a relative path, past the 0750 directory the kernel never
/// checked.
#[test]
fn working_dir_is_entered_as_the_activitys_user() {
    let Some(user) = run_as_or_skip("working_dir_is_entered_as_the_activitys_user") else {
        return;
    };
    let owner = &accounts_or_skip("working_dir_is_entered_as_the_activitys_user")
        .expect("the accounts exist")
        .member;
    let steered = r#"
[params.dir]
type = "string"

[defaults]
working_dir = "{{ params.dir }}"

[process.p]
mode = "parallel"

[process.p.activity.as-user]
user = "hft-priv"
shell = "pwd; cat secret"

[process.p.activity.as-daemon]
shell = "pwd; cat secret"
"#;
    let mut daemon = TestDaemon::prepare(
        Some(r#"run_as_allowed = ["hft-priv"]"#),
        &[("steered.toml", steered)],
    );
    // The run-as user must reach the directories below: open the
    // fixture's for passing through.
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
        .expect("open the fixture directory");
    let private = daemon.dir().join("private");
    let open = daemon.dir().join("open");
    for (dir, mode) in [(&private, 0o750), (&open, 0o755)] {
        let inner = dir.join("inner");
        fs::create_dir_all(&inner).expect("create the directories");
        fs::write(inner.join("secret"), "the secret\n").expect("write the file");
        fs::set_permissions(inner.join("secret"), fs::Permissions::from_mode(0o644))
            .expect("chmod the file");
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o755))
            .expect("chmod the inner directory");
        for path in [dir.clone(), inner.clone(), inner.join("secret")] {
            chown(&path, owner);
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).expect("chmod the directory");
    }
    daemon.launch();

    let dir_param = |dir: &Path| format!("dir={}", dir.join("inner").display());
    let job_id = daemon.submit("steered", &["-p", &dir_param(&private)]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert!(
        !daemon
            .logs(job_id, "p.as-user", None)
            .contains("the secret"),
        "the run-as user did not read the file"
    );
    let refused = activity(&job, "p.as-user");
    let attempt = &refused.attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{refused:#?}");
    let error = attempt.error.clone().unwrap_or_default();
    assert_eq!(
        error,
        format!(
            "cannot enter the working directory {:?} as user {}: permission denied",
            private.join("inner").display().to_string(),
            user.name
        )
    );
    assert_eq!(attempt.pid, None, "nothing ran: {attempt:#?}");
    // The daemon (root) could enter it: the refusal is the user's.
    assert_eq!(
        daemon.logs(job_id, "p.as-daemon", None),
        format!("{}\nthe secret\n", private.join("inner").display()),
        "the daemon's own activity entered the directory"
    );

    let job_id = daemon.submit("steered", &["-p", &dir_param(&open)]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        daemon.logs(job_id, "p.as-user", None),
        format!("{}\nthe secret\n", open.join("inner").display()),
        "the same layout open to the user is entered"
    );
}

/// Proves that a command name is looked up in `PATH` as the activity's
/// user, as `execvp` would: with a `PATH` (steered by a parameter) whose
/// first directory holds the program but lies inside another user's 0750
/// directory, the run-as user runs the program of the next directory,
/// and a name found nowhere it may look is refused as "permission denied",
/// whether or not it exists behind the closed directory, so the error
/// tells nothing about what is there. Before, the daemon searched `PATH`
/// as root, picked the program the user could not reach, and the start
/// failed.
#[test]
fn path_lookup_is_made_as_the_activitys_user() {
    if run_as_or_skip("path_lookup_is_made_as_the_activitys_user").is_none() {
        return;
    }
    let owner = &accounts_or_skip("path_lookup_is_made_as_the_activitys_user")
        .expect("the accounts exist")
        .member;
    let chain = r#"
[params.path]
type = "string"
[params.program]
type = "string"

[process.p.activity.a]
user = "hft-priv"
env = { PATH = "{{ params.path }}" }
command = ["{{ params.program }}"]
"#;
    let mut daemon = TestDaemon::prepare(
        Some(r#"run_as_allowed = ["hft-priv"]"#),
        &[("lookup.toml", chain)],
    );
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
        .expect("open the fixture directory");
    let closed = daemon.dir().join("closed");
    let open = daemon.dir().join("open");
    for (dir, mode, word) in [(&closed, 0o750, "closed"), (&open, 0o755, "open")] {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).expect("create the directories");
        let program = bin.join("hft-probe");
        fs::write(&program, format!("#!/bin/sh\necho {word}\n")).expect("write the program");
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755))
            .expect("chmod the program");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod bin");
        for path in [dir.clone(), bin, program] {
            chown(&path, owner);
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).expect("chmod the directory");
    }
    daemon.launch();

    let path = format!(
        "path={}:{}",
        closed.join("bin").display(),
        open.join("bin").display()
    );
    let job_id = daemon.submit("lookup", &["-p", &path, "-p", "program=hft-probe"]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(daemon.logs(job_id, "p.a", None), "open\n");

    let only_closed = format!("path={}", closed.join("bin").display());
    for program in ["hft-probe", "hft-no-such-program"] {
        let job_id = daemon.submit(
            "lookup",
            &["-p", &only_closed, "-p", &format!("program={program}")],
        );
        let job = daemon.wait_done(job_id);
        let attempt = &activity(&job, "p.a").attempts[0];
        assert_eq!(attempt.state, AttemptState::SpawnError, "{attempt:#?}");
        assert_eq!(
            attempt.error.as_deref(),
            Some(format!("permission denied running {program:?}").as_str()),
            "the same answer whether {program} exists behind the closed directory or not"
        );
    }
}

fn chown(path: &Path, owner: &Account) {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(owner.uid)),
        Some(nix::unistd::Gid::from_raw(owner.gid)),
    )
    .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

/// Proves that `hfctl describe` does not claim a process cap the kernel
/// ignores: without a pids controller, `tasks_max` of an activity running
/// as root (the daemon's own user here) is "not enforced", while a run-as
/// activity's RLIMIT_NPROC is said to count every process of its user.
/// Before the fix both said "enforced by rlimit RLIMIT_NPROC, per user".
#[test]
fn describe_says_tasks_max_is_not_enforced_for_root() {
    if run_as_or_skip("describe_says_tasks_max_is_not_enforced_for_root").is_none() {
        return;
    }
    let chain = r#"
[defaults]
tasks_max = 20

[process.p.activity.as-root]
command = ["true"]

[process.p.activity.as-user]
user = "hft-priv"
command = ["true"]
"#;
    let daemon = TestDaemon::start_with(
        "run_as_allowed = [\"hft-priv\"]\ncgroup = \"off\"\n",
        &[("capped.toml", chain)],
    );
    let output = daemon.hfctl(&["describe", "capped"]);
    assert!(output.status.success(), "{}", shown(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let line_of = |name: &str| {
        text.lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{name} tasks_max = 20:"))
            })
            .unwrap_or_else(|| panic!("describe lists {name}'s tasks_max:\n{text}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        line_of("as-root"),
        "as-root tasks_max = 20: not enforced (no cgroup; the kernel does not apply \
         RLIMIT_NPROC to root): delegate the pids controller or run the activity as another user"
    );
    assert_eq!(
        line_of("as-user"),
        "as-user tasks_max = 20: enforced by rlimit RLIMIT_NPROC, which counts every process \
         of the activity's user, not only this attempt's (no cgroup)"
    );
}

/// Proves that members cannot jump the queue: above a chain's
/// `max_priority` (0 when unset) a member's submission is refused with a
/// field error naming `priority`, and audited as refused; at or below it,
/// and for an operator or root at any priority, the job is made with the
/// priority asked. Before the fix any member got priority 2147483647.
#[test]
fn members_are_bounded_by_max_priority_and_operators_are_not() {
    let Some(accounts) =
        accounts_or_skip("members_are_bounded_by_max_priority_and_operators_are_not")
    else {
        return;
    };
    let bounded = r#"
[chain]
max_priority = 5

[process.p.activity.a]
command = ["true"]
"#;
    let plain = r#"
[process.p.activity.a]
command = ["true"]
"#;
    let daemon = SystemDaemon::start(
        r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"
cgroup = "off"
"#,
        &[("bounded.toml", bounded), ("plain.toml", plain)],
        &[],
    );
    let socket = daemon.socket();
    let (member, operator) = (&accounts.member, &accounts.operator);
    let top = i32::MAX.to_string();

    for (chain, priority, bound) in [
        ("plain", "1", "0"),
        ("plain", &top, "0"),
        ("bounded", "6", "5"),
    ] {
        let output = member.hfctl(socket, &["submit", chain, "--priority", priority]);
        assert_eq!(
            output.status.code(),
            Some(8),
            "priority {priority} on {chain} is refused as invalid parameters: {}",
            shown(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("priority: {priority} is above {bound}")),
            "the refusal names the priority field and the bound: {stderr}"
        );
    }
    let described = member.hfctl(socket, &["describe", "bounded"]);
    assert!(
        String::from_utf8_lossy(&described.stdout)
            .lines()
            .any(|l| l.starts_with("max priority:") && l.ends_with(" 5 (operators: any)")),
        "describe shows the bound: {}",
        shown(&described)
    );
    let mut made = Vec::new();
    for (who, chain, priority) in [
        (member, "plain", "0"),
        (member, "plain", "-7"),
        (member, "bounded", "5"),
        (operator, "plain", top.as_str()),
    ] {
        let job_id = who.submit(socket, chain, &["--priority", priority]);
        made.push((job_id, priority.to_string()));
    }
    let by_root = daemon.submit("bounded", &["--priority", &top]);
    made.push((by_root, top.clone()));
    for (job_id, priority) in &made {
        let job = daemon.wait_done(*job_id);
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert_eq!(job.priority.to_string(), *priority, "{job:#?}");
    }

    let entries = audit(&daemon);
    let refusals: Vec<_> = entries.iter().filter(|e| e.outcome == "refused").collect();
    assert_eq!(refusals.len(), 3, "{entries:#?}");
    assert!(
        refusals.iter().all(|e| e.uid == Some(member.uid)
            && e.method == "job.submit"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("priority: "))),
        "every refusal is the member's, with the field: {refusals:#?}"
    );
    let jobs: holdfast_api::JobList =
        serde_json::from_value(daemon.hfctl_json(&["list"])).expect("a job list");
    assert_eq!(
        jobs.jobs.len(),
        made.len(),
        "the refused submissions made no job: {jobs:#?}"
    );
}
