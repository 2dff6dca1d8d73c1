//! Secret parameters: a real secret value, given by a submission and by a
//! tenant's secret file, reaches the activity's environment (the activity
//! writes a hash of it) and nowhere else: not the answers of any method,
//! not hfctl's output, not the database file or its WAL, not the attempt
//! logs (even when the activity prints it in two pieces), not the daemon's
//! log, not the activity's command line; across a retry and a crash.

use std::path::Path;
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::http::rpc_call;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::json;

use crate::support::shown;

/// The submitted secret and the tenant's (from a file).
const SUBMITTED: &str = "hf-SUBMITTED-9c41e7";
const FROM_FILE: &str = "hf-TENANTFILE-52d0aa";

/// Prints both secrets (one in two writes), writes their hashes where the
/// test can read them, shows its command line, then waits for `go`.
const CHAIN: &str = r#"
[params.api_key]
type = "string"
secret = true
pattern = "hf-[A-Za-z0-9-]+"

[params.db_password]
type = "string"
secret = true

[params.host]
type = "string"
default = "db1"

[process.load.activity.facts]
env = { DB_URL = "postgres://etl:{{ params.db_password }}@{{ params.host }}/dw" }
shell = '''
printf '%s' "$HF_PARAM_API_KEY" | sha256sum > @DIR@/api_key.$HF_JOB_ID.sha
printf '%s' "$HF_PARAM_DB_PASSWORD" | sha256sum > @DIR@/db_password.$HF_JOB_ID.sha
printf 'key=%s url=%s\n' "$HF_PARAM_API_KEY" "$DB_URL"
half=$(( ${#HF_PARAM_DB_PASSWORD} / 2 ))
printf 'split=%s' "$(printf '%s' "$HF_PARAM_DB_PASSWORD" | cut -c1-$half)"
sleep 0.2
printf '%s end\n' "$(printf '%s' "$HF_PARAM_DB_PASSWORD" | cut -c$(( half + 1 ))-)"
echo "params=$HF_PARAMS"
echo "alert login with $HF_PARAM_API_KEY refused" >&3
echo "progress 50 connected to $DB_URL" >&3
printf 'output {"conn": "%s"}\n' "$DB_URL" >&3
echo "bogus $HF_PARAM_API_KEY" >&3
touch @DIR@/started.$HF_JOB_ID
while [ ! -e @DIR@/go ]; do sleep 0.05; done
'''
"#;

const TENANT: &str = r#"
description = "secret tenant"
[secrets]
db_password = { file = "@DIR@/db.pw" }
"#;

fn sha256(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}  -\n")
}

/// Every place a secret could leak to, as text: hfctl's JSON output, the
/// raw answer of every method, the files under the daemon's directory
/// (database, WAL, attempt logs, its own log).
fn every_surface(daemon: &TestDaemon, jobs: &[u64]) -> Vec<(String, Vec<u8>)> {
    let mut surfaces = Vec::new();
    let mut hfctl = |args: &[&str]| {
        let output = daemon.hfctl(args);
        let mut text = output.stdout.clone();
        text.extend_from_slice(&output.stderr);
        surfaces.push((format!("hfctl {}", args.join(" ")), text));
    };
    hfctl(&["--json", "list"]);
    hfctl(&["--json", "audit"]);
    hfctl(&["--json", "tenants"]);
    hfctl(&["--json", "describe", "secretive"]);
    hfctl(&["--json", "workflows"]);
    hfctl(&[
        "--json",
        "submit",
        "secretive",
        "--tenant",
        "acme",
        "-p",
        &format!("api_key={SUBMITTED}"),
        "--dry-run",
    ]);
    for id in jobs {
        let id = id.to_string();
        hfctl(&["--json", "status", &id]);
        hfctl(&["status", &id]);
        hfctl(&["logs", &id, "load.facts"]);
    }
    let socket = daemon.socket();
    let mut rpc = |method: &str, params: serde_json::Value| {
        let answer = rpc_call(socket, method, params);
        surfaces.push((format!("rpc {method}"), answer.to_string().into_bytes()));
    };
    for id in jobs {
        rpc("job.get", json!({"job_id": id}));
        rpc("job.logs", json!({"job_id": id, "activity": "load.facts"}));
    }
    rpc("job.list", json!({}));
    rpc("audit.list", json!({}));
    rpc("tenant.list", json!({}));
    rpc("workflow.list", json!({}));
    rpc("workflow.get", json!({"name": "secretive"}));
    rpc("rpc.discover", json!({}));
    rpc(
        "job.plan",
        json!({"target": "secretive", "tenant": "acme", "params": {"api_key": SUBMITTED}}),
    );
    files_under(&daemon.state_dir(), &mut surfaces);
    surfaces.push((
        "daemon log".into(),
        std::fs::read(daemon.log_path()).unwrap_or_default(),
    ));
    surfaces
}

/// Every file under `dir` (recursively) with its bytes.
pub(crate) fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

fn assert_nowhere(daemon: &TestDaemon, jobs: &[u64]) {
    for (surface, bytes) in every_surface(daemon, jobs) {
        for secret in [SUBMITTED, FROM_FILE] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{surface} shows the secret {secret}:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// `log` without the daemon's own `[holdfast] ...` lines, wherever they
/// landed.
fn without_notes(log: &str) -> String {
    let mut out = String::new();
    let mut rest = log;
    while let Some(at) = rest.find("[holdfast] ") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once('\n').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// Command lines of live processes that hold `text`.
fn cmdlines_with(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && cmdline.windows(text.len()).any(|w| w == text.as_bytes())
        {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

#[test]
fn a_secret_reaches_the_activity_environment_and_nothing_else() {
    let mut daemon = TestDaemon::start(&[("secretive.toml", CHAIN)]);
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("db.pw"), format!("{FROM_FILE}\n")).expect("secret file");
    daemon.write_tenant("acme", TENANT);
    daemon.hfctl_json(&["reload"]);

    let submit = |daemon: &TestDaemon| {
        daemon.submit(
            "secretive",
            &["--tenant", "acme", "-p", &format!("api_key={SUBMITTED}")],
        )
    };
    let first = submit(&daemon);
    eventually(Duration::from_secs(30), "the activity started", || {
        dir.join(format!("started.{first}"))
            .exists()
            .then_some(())
            .ok_or("no start mark")
    });
    // While it runs: no command line on the host holds either secret.
    for secret in [SUBMITTED, FROM_FILE] {
        let found = cmdlines_with(secret);
        assert!(found.is_empty(), "{secret} in command lines: {found:?}");
    }
    std::fs::write(dir.join("go"), "").expect("go");
    let job = daemon.wait_done(first);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert_eq!(read(&format!("api_key.{first}.sha")), sha256(SUBMITTED));
    assert_eq!(read(&format!("db_password.{first}.sha")), sha256(FROM_FILE));

    // The output was captured, with the secrets (whole, in two writes, and
    // templated into DB_URL) masked, and HF_PARAMS masks them too.
    // The daemon's notes ("[holdfast] ...") go to the same log from another
    // task, so one may land inside a line: read the output without them.
    let log = without_notes(&daemon.logs(first, "load.facts", None));
    assert!(
        log.contains("key=*** url=postgres://etl:***@db1/dw"),
        "{log}"
    );
    assert!(log.contains("split=*** end"), "{log}");
    assert!(log.contains(r#""api_key":"***""#), "{log}");
    assert!(log.contains(r#""db_password":"***""#), "{log}");
    assert_eq!(job.params["api_key"], "***", "{job:#?}");
    // What it said on the control channel is shown masked too.
    let shown_job = serde_json::to_string(&job).expect("json");
    assert!(shown_job.contains("login with *** refused"), "{shown_job}");
    assert!(
        shown_job.contains("postgres://etl:***@db1/dw"),
        "{shown_job}"
    );
    let raw = daemon.logs(first, "load.facts", None);
    assert!(
        raw.contains("ignored control message: unknown control message \"bogus\""),
        "{raw}"
    );
    assert!(!raw.contains(SUBMITTED), "{raw}");
    assert_eq!(job.params["host"], "db1", "{job:#?}");

    // A refusal does not quote the value.
    let bad = daemon.hfctl(&[
        "submit",
        "secretive",
        "--tenant",
        "acme",
        "-p",
        "api_key=REFUSED-SECRET-1234",
    ]);
    assert_eq!(bad.status.code(), Some(8), "{}", shown(&bad));
    let said = shown(&bad);
    assert!(
        said.contains("api_key") && said.contains("got ***"),
        "{said}"
    );
    assert!(!said.contains("REFUSED-SECRET-1234"), "{said}");

    // A reprocess and a resume after kill -9 get the secrets back from
    // their sealed row.
    std::fs::remove_file(dir.join("go")).expect("go removed");
    let retry = daemon.hfctl_json(&["retry", &first.to_string(), "--from-start"]);
    let second = retry["job_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{retry}"));
    eventually(
        Duration::from_secs(30),
        "the retried activity started",
        || {
            dir.join(format!("started.{second}"))
                .exists()
                .then_some(())
                .ok_or("no start mark")
        },
    );
    daemon.kill9();
    std::fs::remove_file(dir.join(format!("db_password.{second}.sha"))).expect("sha removed");
    std::fs::write(dir.join("go"), "").expect("go");
    daemon.launch();
    let job = daemon.wait_done(second);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(job.activities[0].attempts.len() >= 2, "{job:#?}");
    assert_eq!(read(&format!("api_key.{second}.sha")), sha256(SUBMITTED));
    assert_eq!(
        read(&format!("db_password.{second}.sha")),
        sha256(FROM_FILE)
    );

    let rejected = daemon.hfctl_json(&["list"]);
    assert!(
        rejected["jobs"].as_array().is_some_and(|j| j.len() == 2),
        "{rejected}"
    );
    assert_nowhere(&daemon, &[first, second]);
    // After a graceful stop too (the WAL folded into the database file).
    daemon.stop();
    for (surface, bytes) in {
        let mut files = Vec::new();
        files_under(&daemon.state_dir(), &mut files);
        files
    } {
        for secret in [SUBMITTED, FROM_FILE] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{surface} holds {secret} after the stop"
            );
        }
    }
}

#[test]
fn a_secret_in_argv_or_working_dir_is_refused_at_load() {
    let chain = r#"
[params.token]
type = "string"
secret = true
[process.p.activity.a]
command = ["curl", "-H", "Authorization: {{ params.token }}", "https://example.invalid"]
working_dir = "/srv/{{ params.token }}"
"#;
    let daemon = TestDaemon::start(&[("leaky.toml", chain)]);
    let path = daemon.workflows_dir().join("leaky.toml");
    let output = daemon.hfctl(&["validate", &path.display().to_string()]);
    assert!(!output.status.success(), "{}", shown(&output));
    let said = shown(&output);
    assert!(
        said.contains("leaky.toml:6:")
            && said.contains("command[2] would show the secret parameter \"token\""),
        "{said}"
    );
    assert!(
        said.contains("leaky.toml:7:") && said.contains("working_dir"),
        "{said}"
    );
    let listed = daemon.hfctl_json(&["workflows"]);
    assert!(listed.to_string().contains("broken"), "{listed}");
    let submitted = daemon.hfctl(&["submit", "leaky", "-p", "token=x"]);
    assert!(!submitted.status.success(), "{}", shown(&submitted));
}

/// `secret_file("name")`: a 0600 file holding the value, whose path (not
/// the value) may go into argv, removed when the attempt ends; a call on a
/// parameter that is not secret, or without a quoted name, is refused.
#[test]
fn secret_file_hands_a_secret_over_in_a_private_file() {
    let chain = r#"
[params.pw]
type = "string"
secret = true

[process.p.activity.a]
command = ["sh", "-c", 'echo "$1" > @DIR@/path; stat -c "%a" "$1"; sha256sum < "$1" > @DIR@/pw.sha', "x", "{{ secret_file('pw') }}"]
"#;
    let daemon = TestDaemon::start(&[("files.toml", chain)]);
    let dir = daemon.dir().to_path_buf();
    let id = daemon.submit(
        "files",
        &["--params", &{
            let file = dir.join("params.json");
            std::fs::write(&file, format!(r#"{{"pw": "{SUBMITTED}"}}"#)).expect("params file");
            file.display().to_string()
        }],
    );
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let log = daemon.logs(id, "p.a", None);
    assert!(log.starts_with("600"), "{log}");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert_eq!(read("pw.sha"), sha256(SUBMITTED));
    let path = read("path");
    let path = path.trim();
    assert!(path.ends_with(&format!("secrets/{id}-0-1/pw")), "{path}");
    assert!(
        !Path::new(path).exists(),
        "the secret file outlived its attempt"
    );
    assert_nowhere(&daemon, &[]);

    let refused = TestDaemon::start(&[(
        "bad.toml",
        r#"
[params.plain]
type = "string"
[params.pw]
type = "string"
secret = true
[process.p.activity.a]
command = ["cat", "{{ secret_file('plain') }}", "{{ secret_file(params.pw) }}"]
"#,
    )]);
    let path = refused.workflows_dir().join("bad.toml");
    let output = refused.hfctl(&["validate", &path.display().to_string()]);
    let said = shown(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("secret_file(\"plain\") reads a parameter that is not secret"),
        "{said}"
    );
    assert!(
        said.contains("secret_file takes the parameter's name in quotes"),
        "{said}"
    );
}

/// `{ credential = "name" }` reads `$CREDENTIALS_DIRECTORY/name`, as
/// systemd's `LoadCredential=` provides it (the systemd test does the same
/// under a real systemd where its credentials are readable).
#[test]
fn a_tenant_secret_comes_from_the_credentials_directory() {
    let chain = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.a]
shell = 'printf "%s" "$HF_PARAM_TOKEN" | sha256sum > @DIR@/token.sha'
"#;
    let mut daemon = TestDaemon::prepare(None, &[("cred.toml", chain)]);
    let credentials = daemon.dir().join("credentials");
    std::fs::create_dir_all(&credentials).expect("credentials dir");
    std::fs::write(credentials.join("acme-token"), format!("{SUBMITTED}\n")).expect("credential");
    daemon.set_env("CREDENTIALS_DIRECTORY", credentials.as_os_str());
    daemon.write_tenant(
        "acme",
        "[secrets]\ntoken = { credential = \"acme-token\" }\n",
    );
    daemon.launch();
    let id = daemon.submit("cred", &["--tenant", "acme"]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let sha = std::fs::read_to_string(daemon.dir().join("token.sha")).unwrap_or_default();
    assert_eq!(sha, sha256(SUBMITTED));
    assert_eq!(job.params["token"], "***", "{job:#?}");

    // A credential that is not there is a refusal naming it, not a value.
    daemon.write_tenant("acme", "[secrets]\ntoken = { credential = \"absent\" }\n");
    let _ = daemon.hfctl(&["reload"]);
    let refused = daemon.hfctl(&["submit", "cred", "--tenant", "acme"]);
    let said = shown(&refused);
    assert_eq!(refused.status.code(), Some(8), "{said}");
    assert!(said.contains("absent"), "{said}");
}

/// `foreach = "tenants"` carries each tenant's `[params]` in its item; a
/// value the chain declares secret, kept by a tenant under `[params]`, is
/// `***` there as in `tenant.list`. Before, `job.items` showed every
/// tenant's value to every socket member, and an item's `HF_ITEM` (in its
/// log) and `{{ item.params.x }}` (in its argv) carried the other tenants'
/// values, which the job's masking, made from its own tenant, did not know.
#[test]
fn foreach_tenants_items_never_carry_a_secret_parameter() {
    const ACME: &str = "hf-ACME-PW-3f9a1c";
    const GLOBEX: &str = "hf-GLOBEX-PW-77b2e0";
    let chain = r#"
[params.db_password]
type = "string"
secret = true

[process.bill.activity.each]
foreach = "tenants"
env = { ITEM_PW = "{{ item.params.db_password }}" }
shell = 'echo "item $HF_ITEM_INDEX: $HF_ITEM pw=$ITEM_PW"'
"#;
    let mut daemon = TestDaemon::prepare(None, &[("billing.toml", chain)]);
    daemon.write_tenant(
        "acme",
        &format!("chains = [\"billing\"]\n\n[params]\ndb_password = \"{ACME}\"\nregion = \"eu\"\n"),
    );
    daemon.write_tenant(
        "globex",
        &format!("chains = [\"billing\"]\n\n[params]\ndb_password = \"{GLOBEX}\"\n"),
    );
    daemon.launch();
    let id = daemon.submit("billing", &["--tenant", "acme"]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let page = rpc_call(
        daemon.socket(),
        "job.items",
        json!({"job_id": id, "activity": "bill.each"}),
    );
    let items = &page["result"]["items"];
    assert_eq!(
        items[0]["item"],
        json!({"tenant": "acme", "params": {"db_password": "***", "region": "eu"}}),
        "{page}"
    );
    assert_eq!(
        items[1]["item"],
        json!({"tenant": "globex", "params": {"db_password": "***"}}),
        "{page}"
    );
    let mut seen = page.to_string();
    for n in 0..2 {
        seen.push_str(&daemon.logs(id, &format!("bill.each[{n}]"), None));
    }
    assert!(
        seen.contains("item 1: {"),
        "the items' logs are read: {seen}"
    );
    for secret in [ACME, GLOBEX] {
        assert!(!seen.contains(secret), "{secret} leaked: {seen}");
    }
    let db = std::fs::read(daemon.state_dir().join("holdfast.db")).expect("database");
    let wal = std::fs::read(daemon.state_dir().join("holdfast.db-wal")).unwrap_or_default();
    for secret in [ACME, GLOBEX] {
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is stored in the database"
            );
        }
    }
}
