//! HoldFast as an Ubuntu host runs it: the Debian package that
//! packaging/build-deb makes, installed with dpkg under a real systemd, and
//! driven with systemctl, journalctl and the installed hfctl by users inside
//! and outside the holdfast group.
//!
//! systemd runs as PID 1 of a private PID and mount namespace
//! (`unshare --pid --fork --mount ...`) and shares the rest of the file
//! system, so dpkg, the package's users and its files are the host's own. The
//! namespace gets its own /run, /tmp and /var/tmp (systemd-tmpfiles empties
//! /tmp at boot) and an in-memory /var/log/journal; a container image's
//! policy-rc.d, which would forbid starting services, is hidden inside it.
//! Everything handed to the inner systemd lives under target/. The test
//! purges the package, deletes the users it made and the cgroups the inner
//! systemd left, also when it fails half-way (a marker in /var/tmp lets the
//! next run finish a cleanup that a killed run could not). Booting leaves
//! what any boot leaves: timer stamps under /var/lib/systemd, a wtmp record.
//!
//! It needs root, unshare, dpkg and systemd; without them it says so and
//! passes. `HOLDFAST_SYSTEMD_TEST=required` (set by .ci/run) makes that a
//! failure instead. One run at a time per machine (a lock in /run/lock).
//! How the package is built and checked before it is installed is in
//! `systemd_package.rs`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use holdfast_api::{AttemptState, Job, JobState};
use holdfast_tests::{bin_dir, eventually, run_with_deadline};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::systemd_package::{
    VisiblePackage, binaries_linked_as_documented, build_package, lintian_clean, man_pages_clean,
    unpack,
};

/// A user in the holdfast group, and one outside it.
const MEMBER: &str = "hf-e2e-member";
const OUTSIDER: &str = "hf-e2e-outsider";
/// Upper bound for one command run inside the namespace.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a state the test waits for (a journal entry, a job).
const WAIT: Duration = Duration::from_secs(60);
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const WORKFLOWS: &str = "/etc/holdfast/workflows.d";
/// Present while the package a run installed may still be on the machine;
/// says whether the run created the holdfast user. Machine-wide (runs from
/// other target directories must see it) and kept across reboots.
const MARKER: &str = "/var/tmp/holdfast-systemd-e2e.marker";

const HELLO: &str = r#"
[chain]
journal = true

[process.main.activity.greet]
shell = "echo hello from $HF_ACTIVITY; grep '^0::' /proc/self/cgroup"
"#;
/// More output than the journal forwarding lets through in a second.
const CHATTY: &str = r#"
[chain]
journal = true

[process.main.activity.count]
shell = "seq 1 1000"
"#;
const BROKEN: &str = r#"
[process.main.activity.fail]
shell = "echo about to fail >&2; exit 3"
"#;
const SLOW: &str = r#"
[process.main.activity.slow]
shell = "echo attempt $HF_ATTEMPT; sleep 3"
"#;
/// Uses a secret a tenant takes from a systemd credential; its output goes
/// to the journal too, masked.
const SECRET: &str = r#"
[chain]
journal = true

[params.token]
type = "string"
secret = true

[process.main.activity.use]
shell = 'printf "%s" "$HF_PARAM_TOKEN" | sha256sum; echo "token=$HF_PARAM_TOKEN"'
"#;
/// The tenant's secret from the credential, or (where this systemd does
/// not let a `User=` service read its credentials, see below) from a file.
const SECRET_TENANT_CREDENTIAL: &str = r#"
[secrets]
token = { credential = "e2e-token" }
"#;
const SECRET_TENANT_FILE: &str = r#"
[secrets]
token = { file = "/etc/holdfast/e2e-token.secret" }
"#;
/// The credential's value, which must show nowhere but in the activity.
const CREDENTIAL_VALUE: &str = "hf-credential-5e1f0c";
const ADDED: &str = r#"
[process.main.activity.noop]
command = ["true"]
"#;

#[test]
fn debian_package_under_systemd() {
    let began = Instant::now();
    if let Err(reason) = preconditions() {
        assert!(!required(), "the systemd test cannot run here: {reason}");
        eprintln!("skipped debian_package_under_systemd: {reason}");
        return;
    }
    let work = target_dir().join("systemd-e2e");
    fs::create_dir_all(&work).expect("create target/systemd-e2e");
    let _lock = machine_lock();
    let marker = Path::new(MARKER).to_path_buf();
    if marker.exists() {
        eprintln!("a previous run left the package installed; cleaning up first");
        host_cleanup(&marker);
    }
    if package_installed(None) {
        assert!(
            !required(),
            "holdfast is installed on this machine; the test would replace it"
        );
        eprintln!("skipped debian_package_under_systemd: holdfast is installed on this machine");
        return;
    }

    let package = VisiblePackage::new(build_package());
    let deb = &package.path;
    lintian_clean(deb);
    let extracted = unpack(deb);
    binaries_linked_as_documented(extracted.path());
    man_pages_clean(extracted.path());
    drop(extracted);
    let built = began.elapsed();
    let holdfast_user_existed = user_exists("holdfast");
    fs::write(
        &marker,
        if holdfast_user_existed {
            "keep-holdfast-user\n"
        } else {
            "remove-holdfast-user\n"
        },
    )
    .expect("write the marker");
    let mut host = Host {
        systemd: Some(InnerSystemd::boot(&work)),
        marker,
    };
    let ns = host.systemd.as_ref().expect("booted").clone_handle();

    // Install: the user and group appear, the service is enabled and running.
    // The package's postinst makes the holdfast user and group.
    let changing = holdfast_tests::users::hold_account_database();
    let installed = ns.ok(&["dpkg", "-i", deb.to_str().expect("utf-8 path")]);
    drop(changing);
    assert!(!installed.contains("policy-rc.d"), "{installed}");
    assert_eq!(
        ns.ok(&["dpkg", "--verify", "holdfast"]),
        "",
        "the installed files match the package's md5sums"
    );
    // postinst's start is blocking: a unit not active now failed its first
    // start (Restart= may already be trying again). Say why.
    let state = ns.run(&["systemctl", "is-active", "holdfast.service"]);
    if stdout(&state) != "active\n" {
        let status = ns.run(&["systemctl", "status", "--no-pager", "holdfast.service"]);
        let journal = ns.run(&[
            "journalctl",
            "-u",
            "holdfast",
            "-o",
            "short-monotonic",
            "--no-pager",
        ]);
        panic!(
            "holdfast.service is {} after dpkg -i\ndpkg: {installed}\nstatus: {}\njournal: {}{}",
            stdout(&state).trim(),
            stdout(&status),
            stdout(&journal),
            stderr(&journal)
        );
    }
    assert_eq!(
        ns.ok(&["systemctl", "is-enabled", "holdfast.service"]),
        "enabled\n"
    );
    let socket_enabled = ns.run(&["systemctl", "is-enabled", "holdfast.socket"]);
    assert_eq!(
        stdout(&socket_enabled),
        "disabled\n",
        "socket activation is opt-in"
    );
    let verify = ns.run(&[
        "systemd-analyze",
        "verify",
        "holdfast.service",
        "holdfast.socket",
    ]);
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify is not clean: {}{}",
        stdout(&verify),
        stderr(&verify)
    );
    assert_eq!(
        ns.ok(&["stat", "-c", "%a %G %F", "/run/holdfast/holdfast.sock"]),
        "660 holdfast socket\n"
    );

    // The state is the daemon's alone; clients see it through the socket.
    assert_eq!(
        ns.ok(&["stat", "-c", "%a %U", "/var/lib/holdfast"]),
        "700 holdfast\n"
    );

    // Chains are dropped in by root; the daemon picks them up by itself.
    for (name, text) in [
        ("e2e-hello", HELLO),
        ("e2e-broken", BROKEN),
        ("e2e-slow", SLOW),
        ("e2e-chatty", CHATTY),
    ] {
        fs::write(Path::new(WORKFLOWS).join(format!("{name}.toml")), text).expect("write chain");
    }
    useradd(MEMBER, true);
    useradd(OUTSIDER, false);
    wait_for_chains(&ns, &["e2e-hello", "e2e-broken", "e2e-slow", "e2e-chatty"]);

    // A member submits and waits; an outsider is refused at the socket.
    let submitted = ns.as_user(
        MEMBER,
        &["hfctl", "--json", "submit", "e2e-hello", "--wait"],
    );
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let hello: Job = serde_json::from_slice(&submitted.stdout).expect("a Job");
    assert_eq!(hello.state, JobState::Succeeded, "{hello:#?}");
    assert_eq!(hello.submitted_by, MEMBER);
    // Delegate=yes: the daemon runs each attempt in a child cgroup of the
    // service's (the controllers granted depend on the host).
    let info: Value = serde_json::from_str(&ns.ok(&["hfctl", "--json", "info"])).expect("info");
    let confinement = info["confinement"].as_str().unwrap_or_default();
    eprintln!("systemd test: confinement: {confinement}");
    assert!(
        confinement.starts_with("cgroup per attempt under ")
            && confinement.contains("/system.slice/holdfast.service ("),
        "the delegated service cgroup is used: {confinement}"
    );
    let log = ns.ok(&["hfctl", "logs", &hello.id.to_string(), "main.greet"]);
    assert!(
        log.contains(&format!(
            "0::/system.slice/holdfast.service/attempt-{}-0-1",
            hello.id
        )),
        "the attempt ran in its own cgroup: {log}"
    );
    let refused = ns.as_user(OUTSIDER, &["hfctl", "info"]);
    assert_eq!(refused.status.code(), Some(7), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("permission denied"),
        "{}",
        stderr(&refused)
    );

    // The journal tells each job's story with its fields.
    // The messages name the job, its chain and the activity by themselves,
    // and HF_INSTANCE tells this state directory's job apart from another's.
    let id = hello.id;
    let instance = ns.ok(&["cat", "/var/lib/holdfast/instance-id"]);
    let instance = instance.trim();
    assert_eq!(instance.len(), 32, "{instance}");
    let finished = format!("job {id} (e2e-hello) finished: succeeded");
    let started = format!("job {id} (e2e-hello): main.greet attempt 1 started");
    let succeeded = format!("job {id} (e2e-hello): main.greet succeeded");
    let story = wait_for_journal(&ns, id, &finished);
    let submitted_by = format!("job {id} (e2e-hello) submitted by {MEMBER}");
    for message in [&submitted_by, &started, &succeeded, &finished] {
        let entry = find(&story, message);
        assert_eq!(field(entry, "HF_INSTANCE"), instance);
        assert_eq!(field(entry, "SYSLOG_IDENTIFIER"), "holdfastd");
        assert_eq!(field(entry, "HF_JOB_ID"), hello.id.to_string());
        assert_eq!(field(entry, "HF_CHAIN"), "e2e-hello");
        assert_eq!(field(entry, "_SYSTEMD_UNIT"), "holdfast.service");
    }
    // journal = true: the activity's output is part of the story.
    for message in [started.as_str(), succeeded.as_str(), "hello from greet"] {
        let entry = find(&story, message);
        assert_eq!(field(entry, "HF_PROCESS"), "main");
        assert_eq!(field(entry, "HF_ACTIVITY"), "greet");
        assert_eq!(field(entry, "HF_ATTEMPT"), "1");
    }
    // A flood of output is forwarded only up to the rate limit; the rest is
    // counted.
    let chatty = ns.as_user(
        MEMBER,
        &["hfctl", "--json", "submit", "e2e-chatty", "--wait"],
    );
    assert!(chatty.status.success(), "{}", stderr(&chatty));
    let chatty: Job = serde_json::from_slice(&chatty.stdout).expect("a Job");
    let story = wait_for_journal(
        &ns,
        chatty.id,
        &format!("job {} (e2e-chatty) finished: succeeded", chatty.id),
    );
    let forwarded = story
        .iter()
        .filter(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.parse::<u32>().is_ok())
        })
        .count();
    let warning = story
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("not forwarded"))
        })
        .unwrap_or_else(|| panic!("no rate-limit warning in {story:#?}"));
    assert!(
        (1..=200).contains(&forwarded),
        "{forwarded} lines forwarded"
    );
    assert_eq!(field(warning, "DROPPED"), (1000 - forwarded).to_string());

    let failed = ns.as_user(
        MEMBER,
        &["hfctl", "--json", "submit", "e2e-broken", "--wait"],
    );
    assert_eq!(failed.status.code(), Some(4), "{}", stderr(&failed));
    let broken: Job = serde_json::from_slice(&failed.stdout).expect("a Job");
    let broken_finished = format!("job {} (e2e-broken) finished: failed", broken.id);
    let story = wait_for_journal(&ns, broken.id, &broken_finished);
    let error_id = broken.activities[0].attempts[0]
        .error_id
        .clone()
        .expect("an error id");
    let failure = find(
        &story,
        &format!(
            "job {} (e2e-broken) failed: main.fail exited with code 3 [{error_id}]",
            broken.id
        ),
    );
    assert_eq!(
        field(failure, "PRIORITY"),
        "3",
        "failures are at error priority"
    );
    assert_eq!(field(failure, "HF_ACTIVITY"), "fail");
    assert_eq!(field(failure, "HF_ERROR_ID"), error_id);
    assert_eq!(field(find(&story, &broken_finished), "PRIORITY"), "3");

    // systemctl reload asks the daemon through hfctl and returns once the
    // files are loaded: the new chain is there at once, no waiting.
    fs::write(Path::new(WORKFLOWS).join("e2e-added.toml"), ADDED).expect("write chain");
    ns.ok(&["systemctl", "reload", "holdfast.service"]);
    let list = ns.ok(&["hfctl", "--json", "workflows"]);
    assert!(list.contains("\"e2e-added\""), "{list}");
    // A broken file makes systemctl reload fail, and the journal names it;
    // the other chains stay loaded.
    let broken_file = Path::new(WORKFLOWS).join("e2e-typo.toml");
    fs::write(&broken_file, "[process.p.activity.a]\ncommand = \n").expect("write chain");
    let reload = ns.run(&["systemctl", "reload", "holdfast.service"]);
    assert!(
        !reload.status.success(),
        "systemctl reload succeeded with a broken file: {}",
        stderr(&reload)
    );
    let lines = ns.ok(&["journalctl", "-u", "holdfast", "-o", "cat", "--no-pager"]);
    assert!(
        lines.contains("reloaded: ") && lines.contains("e2e-typo"),
        "the journal does not name the broken file: {lines}"
    );
    fs::remove_file(&broken_file).expect("remove the broken file");
    ns.ok(&["systemctl", "reload", "holdfast.service"]);
    wait_for_chains(&ns, &["e2e-added"]);

    // A restart in the middle of a job: the attempt is interrupted and runs
    // again under the new daemon, and the job succeeds. The restarted daemon
    // runs with a 2s watchdog (a runtime drop-in), which its pings must keep
    // satisfied.
    ns.ok(&["mkdir", "-p", "/run/systemd/system/holdfast.service.d"]);
    ns.ok(&[
        "sh",
        "-c",
        "printf '[Service]\\nWatchdogSec=2s\\n' > /run/systemd/system/holdfast.service.d/watchdog.conf",
    ]);
    // The restarted daemon also gets a credential (docs/secrets.md).
    // In /etc, not under target/: a checkout under /tmp is not visible to
    // the inner systemd, which mounts a /tmp of its own (the purge removes
    // /etc/holdfast).
    let credential = Path::new("/etc/holdfast/e2e-token.credential");
    fs::write(credential, format!("{CREDENTIAL_VALUE}\n")).expect("write the credential");
    // (/run is the namespace's own: written from inside it.)
    ns.ok(&[
        "sh",
        "-c",
        &format!(
            "printf '[Service]\\nLoadCredential=e2e-token:%s\\n' '{}' \
             > /run/systemd/system/holdfast.service.d/credential.conf",
            credential.display()
        ),
    ]);
    ns.ok(&["systemctl", "daemon-reload"]);
    let queued = ns.as_user(MEMBER, &["hfctl", "--json", "submit", "e2e-slow"]);
    assert!(queued.status.success(), "{}", stderr(&queued));
    let slow_id = serde_json::from_slice::<Value>(&queued.stdout).expect("json")["job_id"]
        .as_u64()
        .expect("a job id");
    eventually(WAIT, "the slow activity running", || {
        let job = job_status(&ns, slow_id);
        match job.activities[0].attempts.first() {
            Some(a) if a.state == AttemptState::Running && a.pid.is_some() => Ok(()),
            _ => Err(format!("{job:?}")),
        }
    });
    let pid_before = ns.ok(&["systemctl", "show", "-p", "MainPID", "--value", "holdfast"]);
    ns.ok(&["systemctl", "restart", "holdfast.service"]);
    let pid_after = ns.ok(&["systemctl", "show", "-p", "MainPID", "--value", "holdfast"]);
    assert_ne!(pid_before, pid_after, "the daemon was not restarted");
    // STATUS= carries the counts while the resumed attempt runs.
    let status_text = || {
        ns.ok(&[
            "systemctl",
            "show",
            "-p",
            "StatusText",
            "--value",
            "holdfast",
        ])
    };
    eventually(WAIT, "STATUS= counting the running job", || {
        let text = status_text();
        if text.trim() == "1 job running (1 activity), 0 queued" {
            Ok(())
        } else {
            Err(text)
        }
    });
    let (slow, _) = eventually(WAIT, "the slow job succeeding after the restart", || {
        let job = job_status(&ns, slow_id);
        if job.state.is_terminal() {
            Ok(job)
        } else {
            Err(format!("{:?}", job.state))
        }
    });
    assert_eq!(slow.state, JobState::Succeeded, "{slow:#?}");
    let attempts = &slow.activities[0].attempts;
    assert_eq!(attempts.len(), 2, "{slow:#?}");
    assert_eq!(attempts[0].state, AttemptState::Interrupted, "{slow:#?}");
    assert_eq!(attempts[1].state, AttemptState::Succeeded, "{slow:#?}");
    eventually(WAIT, "STATUS= back to idle", || {
        let text = status_text();
        if text.starts_with("idle") {
            Ok(())
        } else {
            Err(text)
        }
    });
    let watched = ns.ok(&[
        "systemctl",
        "show",
        "holdfast",
        "-p",
        "ActiveState",
        "-p",
        "NRestarts",
        "-p",
        "WatchdogUSec",
        "-p",
        "MainPID",
    ]);
    assert!(
        watched.contains("ActiveState=active")
            && watched.contains("NRestarts=0")
            && watched.contains("WatchdogUSec=2s")
            && watched.contains(pid_after.trim()),
        "the watchdog restarted or stopped the daemon: {watched}"
    );

    // A secret from a systemd credential reaches the activity (its hash is
    // in the log) and shows nowhere: not in answers, the log, the journal
    // (whose forwarded output is masked) or the database.
    // Some systemd set-ups (seen in a container's private namespace) do
    // not let a `User=` service read its own credentials: a bare
    // `systemd-run -p User=holdfast -p LoadCredential=...` gets EACCES
    // there too. Then the tenant takes the same value from a file of the
    // daemon's user instead, and the rest of the check is the same.
    let probe = ns.run(&[
        "systemd-run",
        "--wait",
        "--pipe",
        "-q",
        "-p",
        "User=holdfast",
        "-p",
        &format!("LoadCredential=e2e-token:{}", credential.display()),
        "sh",
        "-c",
        "cat \"$CREDENTIALS_DIRECTORY/e2e-token\"",
    ]);
    let tenant = if stdout(&probe).contains(CREDENTIAL_VALUE) {
        SECRET_TENANT_CREDENTIAL
    } else {
        eprintln!(
            "systemd test: this systemd does not let a User= service read its credentials \
             ({}); the secret comes from a file instead",
            stderr(&probe).trim()
        );
        let file = Path::new("/etc/holdfast/e2e-token.secret");
        fs::write(file, format!("{CREDENTIAL_VALUE}\n")).expect("write the secret file");
        ns.ok(&[
            "chown",
            "holdfast:holdfast",
            "/etc/holdfast/e2e-token.secret",
        ]);
        ns.ok(&["chmod", "0400", "/etc/holdfast/e2e-token.secret"]);
        SECRET_TENANT_FILE
    };
    fs::create_dir_all("/etc/holdfast/tenants.d").expect("tenants.d");
    fs::write("/etc/holdfast/tenants.d/e2e-cred.toml", tenant).expect("write tenant");
    fs::write(Path::new(WORKFLOWS).join("e2e-secret.toml"), SECRET).expect("write chain");
    wait_for_chains(&ns, &["e2e-secret"]);
    eventually(WAIT, "the tenant loaded", || {
        let text = ns.ok(&["hfctl", "--json", "tenants"]);
        if text.contains("e2e-cred") {
            Ok(())
        } else {
            Err(text)
        }
    });
    let submitted = ns.as_user(
        MEMBER,
        &[
            "hfctl",
            "--json",
            "submit",
            "e2e-secret",
            "--tenant",
            "e2e-cred",
            "--wait",
        ],
    );
    assert!(
        submitted.status.success(),
        "{}{}",
        stdout(&submitted),
        stderr(&submitted)
    );
    let secret_job: Job = serde_json::from_slice(&submitted.stdout).expect("a Job");
    assert_eq!(secret_job.state, JobState::Succeeded, "{secret_job:#?}");
    let log = ns.ok(&["hfctl", "logs", &secret_job.id.to_string(), "main.use"]);
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(CREDENTIAL_VALUE.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(log.contains(&digest) && log.contains("token=***"), "{log}");
    wait_for_journal(&ns, secret_job.id, "token=***");
    let mut surfaces = vec![
        (
            "journal",
            ns.ok(&["journalctl", "-o", "json", "--no-pager"]),
        ),
        (
            "status",
            ns.ok(&["hfctl", "--json", "status", &secret_job.id.to_string()]),
        ),
        ("audit", ns.ok(&["hfctl", "--json", "audit"])),
        ("tenants", ns.ok(&["hfctl", "--json", "tenants"])),
        ("log", log),
    ];
    for file in ["holdfast.db", "holdfast.db-wal"] {
        let bytes = fs::read(Path::new("/var/lib/holdfast").join(file)).unwrap_or_default();
        surfaces.push((file, String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (surface, text) in surfaces {
        assert!(
            !text.contains(CREDENTIAL_VALUE),
            "{surface} shows the credential's value"
        );
    }

    // An upgrade (dpkg installing the package over itself, as for a new
    // version) keeps the history and an edited conffile without asking
    // (stdin is closed), and the service runs again afterwards.
    let conffile = Path::new("/etc/holdfast/holdfast.toml");
    let mut edited = fs::read_to_string(conffile).expect("the conffile");
    edited.push_str("\n# kept across upgrades (edited by the administrator)\n");
    fs::write(conffile, &edited).expect("edit the conffile");
    let changing = holdfast_tests::users::hold_account_database();
    ns.ok(&["dpkg", "-i", deb.to_str().expect("utf-8 path")]);
    drop(changing);
    assert_eq!(
        fs::read_to_string(conffile).expect("the conffile"),
        edited,
        "the upgrade replaced the edited conffile"
    );
    assert_eq!(
        ns.ok(&["systemctl", "is-active", "holdfast.service"]),
        "active\n"
    );
    let kept = job_status(&ns, hello.id);
    assert_eq!(kept.state, JobState::Succeeded, "history kept: {kept:#?}");
    assert_eq!(job_status(&ns, slow_id).state, JobState::Succeeded);

    // Socket activation, by the README's steps, taken with the service
    // running: stop it, enable and start the socket, start the service,
    // which then serves the socket systemd passes it.
    assert_eq!(
        ns.ok(&["systemctl", "is-active", "holdfast.service"]),
        "active\n"
    );
    ns.ok(&["systemctl", "stop", "holdfast.service"]);
    ns.ok(&["systemctl", "enable", "--now", "holdfast.socket"]);
    ns.ok(&["systemctl", "start", "holdfast.service"]);
    let passed = |ns: &Namespace| {
        let main_pid = ns.ok(&["systemctl", "show", "-p", "MainPID", "--value", "holdfast"]);
        let lines = ns.ok(&[
            "journalctl",
            "-u",
            "holdfast",
            &format!("_PID={}", main_pid.trim()),
            "-o",
            "cat",
            "--no-pager",
        ]);
        assert!(
            lines.contains("serving the socket passed by systemd"),
            "{lines}"
        );
    };
    passed(&ns);
    // A stopped daemon is started by the next hfctl call, on that socket.
    ns.ok(&["systemctl", "stop", "holdfast.service"]);
    let stopped = ns.run(&["systemctl", "is-active", "holdfast.service"]);
    assert_eq!(stdout(&stopped), "inactive\n");
    assert_eq!(
        ns.ok(&["stat", "-c", "%a %G %F", "/run/holdfast/holdfast.sock"]),
        "660 holdfast socket\n"
    );
    let info = ns.as_user(MEMBER, &["hfctl", "info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert_eq!(
        ns.ok(&["systemctl", "is-active", "holdfast.service"]),
        "active\n"
    );
    passed(&ns);
    let refused = ns.as_user(OUTSIDER, &["hfctl", "info"]);
    assert_eq!(refused.status.code(), Some(7), "{}", stderr(&refused));

    // Purge: the service and socket stop and nothing of the package stays.
    let changing = holdfast_tests::users::hold_account_database();
    ns.ok(&["dpkg", "--purge", "holdfast"]);
    drop(changing);
    assert!(!package_installed(Some(&ns)));
    for unit in ["holdfast.service", "holdfast.socket"] {
        let state = ns.run(&["systemctl", "is-active", unit]);
        assert_eq!(stdout(&state), "inactive\n", "{unit}");
    }
    let leftovers = ns.ok(&[
        "sh",
        "-c",
        "ls -d /etc/holdfast /var/lib/holdfast /run/holdfast /usr/bin/holdfastd /usr/bin/hfctl \
         /usr/lib/systemd/system/holdfast.* /usr/lib/sysusers.d/holdfast.conf \
         /usr/lib/tmpfiles.d/holdfast.conf /usr/share/doc/holdfast \
         /usr/share/man/man8/holdfastd.8.gz 2>/dev/null; \
         find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
         /var/lib/systemd/deb-systemd-helper-masked -name '*holdfast*' 2>/dev/null; \
         pgrep -u holdfast -l || true",
    ]);
    assert_eq!(leftovers, "", "the purge left these behind");
    // (It exits 1 when nothing matches.)
    let units = ns.run(&["systemctl", "list-unit-files", "--no-legend", "holdfast*"]);
    assert_eq!(stdout(&units), "", "unit files still known to systemd");

    host.teardown();
    assert!(!user_exists(MEMBER) && !user_exists(OUTSIDER));
    assert_eq!(user_exists("holdfast"), holdfast_user_existed);
    eprintln!(
        "systemd test: package built in {built:.1?}, whole test {:.1?}",
        began.elapsed()
    );
}

/// `HOLDFAST_SYSTEMD_TEST=required`: not running is a failure.
fn required() -> bool {
    std::env::var("HOLDFAST_SYSTEMD_TEST").is_ok_and(|v| v == "required")
}

/// Why the test cannot run here, if it cannot.
fn preconditions() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("it needs root (dpkg, useradd, unshare)".into());
    }
    for tool in [
        "/lib/systemd/systemd",
        "/usr/bin/dpkg",
        "/usr/bin/unshare",
        "/usr/bin/nsenter",
        "/usr/sbin/useradd",
        "/usr/sbin/runuser",
        "/usr/bin/lintian",
        "/usr/bin/mandoc",
    ] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} is missing"));
        }
    }
    let probe = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--mount-proc",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", "mount -t tmpfs tmpfs /run"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "unshare is not permitted here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(())
}

/// The cargo target directory the binaries were built into.
pub(crate) fn target_dir() -> PathBuf {
    bin_dir()
        .parent()
        .expect("the profile directory is inside the target directory")
        .to_path_buf()
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// One run at a time on this machine: the package, its users and dpkg are
/// the machine's own.
fn machine_lock() -> Flock<File> {
    let dir = Path::new("/run/lock");
    fs::create_dir_all(dir).expect("create /run/lock");
    let file = File::create(dir.join("holdfast-systemd-e2e.lock")).expect("create the lock file");
    Flock::lock(file, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("lock: {e}"))
}

/// systemd as PID 1 of a private PID and mount namespace.
struct InnerSystemd {
    unshare: Child,
    pid: i32,
    cgroups_before: BTreeSet<PathBuf>,
}

/// What runs commands inside the namespace.
struct Namespace {
    pid: i32,
}

impl InnerSystemd {
    fn boot(work: &Path) -> InnerSystemd {
        let cgroups_before = cgroup_dirs();
        let log = File::create(work.join("systemd.log")).expect("create systemd.log");
        let script = "set -e
            mount -t tmpfs tmpfs /run
            mount -t tmpfs tmpfs /tmp
            mount -t tmpfs tmpfs /var/tmp
            if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
            if [ -e /usr/sbin/policy-rc.d ]; then mount --bind /dev/null /usr/sbin/policy-rc.d; fi
            exec /lib/systemd/systemd --system --unit=basic.target";
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start unshare");
        // unshare forks the namespace's PID 1; find it as unshare's child.
        let children = PathBuf::from(format!("/proc/{0}/task/{0}/children", unshare.id()));
        let (pid, _) = eventually(Duration::from_secs(20), "systemd started", || {
            fs::read_to_string(&children)
                .map_err(|e| e.to_string())?
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .ok_or_else(|| "no child yet".to_string())
        });
        // Dropped (killed) if the boot fails from here on.
        let systemd = InnerSystemd {
            unshare,
            pid,
            cgroups_before,
        };
        let ns = systemd.clone_handle();
        // "offline" until systemd listens; then --wait waits for the boot.
        eventually(Duration::from_secs(60), "the inner systemd booted", || {
            let state = stdout(&ns.run(&["systemctl", "is-system-running", "--wait"]));
            match state.trim() {
                "running" | "degraded" => Ok(()),
                _ => Err(state),
            }
        });
        systemd
    }

    fn clone_handle(&self) -> Namespace {
        Namespace { pid: self.pid }
    }
}

impl Drop for InnerSystemd {
    /// Kill the namespace's PID 1 (which takes every process in it along)
    /// and remove the cgroups it created.
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = self.unshare.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<PathBuf> = cgroup_dirs()
                .difference(&self.cgroups_before)
                .cloned()
                .collect();
            // Deepest first: a cgroup goes only when it has no children.
            for dir in left.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every cgroup directory, parents before children.
fn cgroup_dirs() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                out.insert(path.clone());
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new("/sys/fs/cgroup"), &mut out);
    out
}

impl Namespace {
    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-p", "--"])
            .args(["env", "-i", PATH, "LANG=C.UTF-8"])
            .args(argv)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, argv: &[&str]) -> Output {
        run_with_deadline(self.command(argv), COMMAND_TIMEOUT)
    }

    /// Run, insist on success, return stdout.
    fn ok(&self, argv: &[&str]) -> String {
        let output = self.run(argv);
        assert!(
            output.status.success(),
            "{argv:?} failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    fn as_user(&self, user: &str, argv: &[&str]) -> Output {
        let mut full = vec!["runuser", "-u", user, "--"];
        full.extend_from_slice(argv);
        self.run(&full)
    }
}

/// Tears down whatever the test set up on this machine, also when it fails.
struct Host {
    systemd: Option<InnerSystemd>,
    marker: PathBuf,
}

impl Host {
    fn teardown(&mut self) {
        if let Some(systemd) = self.systemd.take() {
            // Purged under systemd, so the service is stopped properly.
            let ns = systemd.clone_handle();
            if package_installed(Some(&ns)) {
                let _ = ns.run(&["dpkg", "--purge", "holdfast"]);
            }
            drop(systemd);
        }
        host_cleanup(&self.marker);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Remove what the marker says a run installed: the package (purged without
/// systemd if it is still there), the test users, and the holdfast user and
/// group if the run created them.
fn host_cleanup(marker: &Path) {
    let Ok(text) = fs::read_to_string(marker) else {
        return;
    };
    if package_installed(None) {
        let _ = Command::new("dpkg")
            .args(["--purge", "holdfast"])
            .stdin(Stdio::null())
            .output();
    }
    for user in [MEMBER, OUTSIDER] {
        userdel(user);
    }
    if text.trim() == "remove-holdfast-user" {
        userdel("holdfast");
        let _ = Command::new("groupdel").arg("holdfast").output();
    }
    for dir in [WORKFLOWS, "/etc/holdfast", "/var/lib/holdfast"] {
        let _ = fs::remove_dir_all(dir);
    }
    let _ = fs::remove_file(marker);
}

fn package_installed(ns: Option<&Namespace>) -> bool {
    let argv = ["dpkg-query", "-W", "-f", "${db:Status-Status}", "holdfast"];
    let output = match ns {
        Some(ns) => ns.run(&argv),
        None => Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .expect("run dpkg-query"),
    };
    output.status.success()
        && !stdout(&output).trim().is_empty()
        && stdout(&output) != "not-installed"
}

fn user_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

fn useradd(name: &str, in_group: bool) {
    userdel(name);
    // Not while another test covers /etc/passwd for its daemon: replacing
    // the file would undo that cover.
    let _changing = holdfast_tests::users::hold_account_database();
    let mut cmd = Command::new("useradd");
    cmd.args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
    ]);
    if in_group {
        cmd.args(["--groups", "holdfast"]);
    }
    let output = cmd
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .expect("useradd");
    assert!(
        output.status.success(),
        "useradd {name}: {}",
        stderr(&output)
    );
}

fn userdel(name: &str) {
    if user_exists(name) {
        let _changing = holdfast_tests::users::hold_account_database();
        let _ = Command::new("userdel").arg(name).output();
    }
}

fn wait_for_chains(ns: &Namespace, names: &[&str]) {
    eventually(WAIT, "the chains loaded", || {
        let list = ns.ok(&["hfctl", "--json", "workflows"]);
        match names.iter().find(|n| !list.contains(&format!("\"{n}\""))) {
            None => Ok(()),
            Some(missing) => Err(format!("{missing} missing from {list}")),
        }
    });
}

fn job_status(ns: &Namespace, id: u64) -> Job {
    let text = ns.ok(&["hfctl", "--json", "status", &id.to_string()]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a Job ({e}): {text}"))
}

/// The journal entries of one job, once `last` is among them (journald
/// writes asynchronously).
fn wait_for_journal(ns: &Namespace, job_id: u64, last: &str) -> Vec<Value> {
    let filter = format!("HF_JOB_ID={job_id}");
    let (entries, _) = eventually(WAIT, "the job's journal entries", || {
        let text = ns.ok(&[
            "journalctl",
            "-u",
            "holdfast",
            &filter,
            "-o",
            "json",
            "--no-pager",
        ]);
        let entries: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        if entries.iter().any(|e| e["MESSAGE"] == last) {
            Ok(entries)
        } else {
            Err(text)
        }
    });
    entries
}

fn find<'a>(entries: &'a [Value], message: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["MESSAGE"] == message)
        .unwrap_or_else(|| panic!("no journal entry {message:?} in {entries:#?}"))
}

fn field(entry: &Value, name: &str) -> String {
    entry[name]
        .as_str()
        .unwrap_or_else(|| panic!("journal entry without {name}: {entry:#}"))
        .to_string()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
