//! Connection profiles (`connections.d/`): an activity that names a
//! connection gets its fields as `HF_CONN_<NAME>_<FIELD>` and its password
//! read from a file at the attempt's start; the password shows on no
//! surface (answers, hfctl, database, logs); an edited profile reaches the
//! next attempt without touching the chain; tenants map the name to their
//! own profiles; `allow` decides who submits (real users); operators see
//! hosts and members do not; broken profiles are listed with positions,
//! and `hfctl validate` checks a profile file.

use std::path::Path;
use std::time::Duration;

use holdfast_api::{AttemptState, JobState};
use holdfast_tests::http::rpc_call;
use holdfast_tests::users::SystemDaemon;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Value, json};

use crate::secrets::files_under;
use crate::support::shown;
use crate::users::accounts_or_skip;

/// The password before and after the profile is edited.
const FIRST_PASSWORD: &str = "hf-CONNPW-7e31a9";
const SECOND_PASSWORD: &str = "hf-CONNPW-b04d2c";

/// A profile whose password is read from `@DIR@/<pw file>`.
fn profile(host: &str, database: &str, pw_file: &str) -> String {
    format!(
        "[connection]\nkind = \"postgres\"\nhost = \"{host}\"\nport = 5432\n\
         database = \"{database}\"\nuser = \"etl\"\npassword_file = \"@DIR@/{pw_file}\"\n"
    )
}

/// Writes what it got of connection `erp` to `@DIR@/conn.<job>.<attempt>`
/// (the password as a hash), prints the password, and fails its first
/// attempt once `@DIR@/go` exists, so the second attempt shows what an
/// edited profile gives.
const LOADER: &str = r#"
[defaults]
connections = ["erp"]

[process.load.activity.facts]
retries = 1
retry_delay = "0s"
shell = '''
out=@DIR@/conn.$HF_JOB_ID.$HF_ATTEMPT
pw=$(printf '%s' "$HF_CONN_ERP_PASSWORD" | sha256sum | cut -d' ' -f1)
echo "$HF_CONN_ERP_KIND $HF_CONN_ERP_HOST $HF_CONN_ERP_PORT $HF_CONN_ERP_DATABASE $HF_CONN_ERP_USER $pw" > $out.tmp
mv $out.tmp $out
echo "pw=$HF_CONN_ERP_PASSWORD host=$HF_CONN_ERP_HOST"
if [ "$HF_ATTEMPT" = 1 ] && [ -z "$HF_TENANT" ]; then
  while [ ! -e @DIR@/go ]; do sleep 0.05; done
  exit 1
fi
'''
"#;

fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What attempt `attempt` of job `job` wrote, once it has.
fn written(dir: &Path, job: u64, attempt: u32) -> String {
    let path = dir.join(format!("conn.{job}.{attempt}"));
    eventually(Duration::from_secs(30), "the activity wrote", || {
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    })
    .0
    .trim_end()
    .to_string()
}

/// `hfctl --json connections` as root, by name.
fn connections(daemon: &TestDaemon) -> Vec<Value> {
    daemon
        .hfctl_json(&["connections"])
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("hfctl connections prints a list"))
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no connection {name} in {list:#?}"))
}

/// Everything a caller or a file could show, as text.
fn every_surface(daemon: &TestDaemon, jobs: &[u64]) -> Vec<(String, Vec<u8>)> {
    let mut surfaces = Vec::new();
    let mut hfctl = |args: &[&str]| {
        let output = daemon.hfctl(args);
        let mut text = output.stdout.clone();
        text.extend_from_slice(&output.stderr);
        surfaces.push((format!("hfctl {}", args.join(" ")), text));
    };
    hfctl(&["--json", "connections"]);
    hfctl(&["connections"]);
    hfctl(&["--json", "describe", "loader"]);
    hfctl(&["describe", "loader"]);
    hfctl(&["--json", "workflows"]);
    hfctl(&["--json", "list"]);
    hfctl(&["--json", "audit"]);
    hfctl(&["--json", "submit", "loader", "--dry-run"]);
    for id in jobs {
        let id = id.to_string();
        hfctl(&["--json", "status", &id]);
        hfctl(&["logs", &id, "load.facts", "--attempt", "1"]);
        hfctl(&["logs", &id, "load.facts", "--attempt", "2"]);
    }
    for method in ["connection.list", "workflow.list", "job.list", "audit.list"] {
        let answer = rpc_call(daemon.socket(), method, json!({}));
        surfaces.push((format!("rpc {method}"), answer.to_string().into_bytes()));
    }
    let answer = rpc_call(daemon.socket(), "workflow.get", json!({"name": "loader"}));
    surfaces.push(("rpc workflow.get".into(), answer.to_string().into_bytes()));
    for id in jobs {
        let answer = rpc_call(daemon.socket(), "job.get", json!({"job_id": id}));
        surfaces.push(("rpc job.get".into(), answer.to_string().into_bytes()));
    }
    files_under(&daemon.state_dir(), &mut surfaces);
    surfaces.push((
        "daemon log".into(),
        std::fs::read(daemon.log_path()).unwrap_or_default(),
    ));
    surfaces
}

/// An activity gets the profile's fields and its password (read from a
/// file) in its environment; the password is masked in its captured output
/// and appears on no other surface; after the profile file is edited (host
/// and password) the retry gets the new values, the chain untouched, the
/// watcher having reloaded it by itself.
#[test]
fn a_profile_reaches_the_activity_and_an_edit_reaches_the_next_attempt() {
    let daemon = TestDaemon::start(&[("loader.toml", LOADER)]);
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("erp.pw"), format!("{FIRST_PASSWORD}\n")).expect("password file");
    daemon.write_connection("erp", &profile("db1", "erp", "erp.pw"));
    daemon.hfctl_json(&["reload"]);

    let detail = rpc_call(daemon.socket(), "workflow.get", json!({"name": "loader"}));
    assert_eq!(
        detail["result"]["processes"][0]["activities"][0]["connections"],
        json!(["erp"]),
        "{detail}"
    );
    let described = daemon.hfctl(&["describe", "loader"]);
    assert!(
        String::from_utf8_lossy(&described.stdout).contains("facts uses connections erp"),
        "{}",
        shown(&described)
    );

    let job = daemon.submit("loader", &[]);
    assert_eq!(
        written(&dir, job, 1),
        format!("postgres db1 5432 erp etl {}", sha256(FIRST_PASSWORD))
    );

    // Edit the profile (host and password) while the first attempt runs.
    std::fs::write(dir.join("erp2.pw"), format!("{SECOND_PASSWORD}\n")).expect("password file");
    daemon.write_connection("erp", &profile("db2", "erp", "erp2.pw"));
    eventually(
        Duration::from_secs(20),
        "the watcher reloaded the profile",
        || {
            let listed = connections(&daemon);
            let host = named(&listed, "erp")["fields"]["host"].clone();
            (host == "db2").then_some(()).ok_or(host)
        },
    );
    std::fs::write(dir.join("go"), "").expect("go");
    let done = daemon.wait_done(job);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(
        written(&dir, job, 2),
        format!("postgres db2 5432 erp etl {}", sha256(SECOND_PASSWORD))
    );

    let first = daemon.logs(job, "load.facts", Some(1));
    assert!(first.contains("pw=*** host=db1"), "{first}");
    let second = daemon.logs(job, "load.facts", Some(2));
    assert!(second.contains("pw=*** host=db2"), "{second}");

    let listed = connections(&daemon);
    let erp = named(&listed, "erp");
    assert_eq!(erp["fields"]["password"], "***", "{erp}");
    assert_eq!(erp["secrets"], json!(["password"]), "{erp}");
    assert_eq!(erp["used_by"], json!(["loader"]), "{erp}");

    for (surface, bytes) in every_surface(&daemon, &[job]) {
        for secret in [FIRST_PASSWORD, SECOND_PASSWORD] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{surface} shows the password {secret}:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// Two tenants map the chain's `erp` to their own profiles, each job gets
/// its tenant's database and password; without a tenant (and no profile
/// called `erp`) the submission is refused with a field error naming the
/// connection; `hfctl connections` says which chain uses each profile
/// through which tenant.
#[test]
fn tenants_map_a_connection_to_their_own_profiles() {
    let daemon = TestDaemon::start(&[("loader.toml", LOADER)]);
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("afinia.pw"), "pw-of-afinia\n").expect("password file");
    std::fs::write(dir.join("air-e.pw"), "pw-of-air-e\n").expect("password file");
    daemon.write_connection("erp-afinia", &profile("db", "afinia", "afinia.pw"));
    daemon.write_connection("erp-air-e", &profile("db", "aire", "air-e.pw"));
    daemon.write_tenant("afinia", "[connections]\nerp = \"erp-afinia\"\n");
    daemon.write_tenant("air-e", "[connections]\nerp = \"erp-air-e\"\n");
    daemon.hfctl_json(&["reload"]);

    let afinia = daemon.submit("loader", &["--tenant", "afinia"]);
    let air_e = daemon.submit("loader", &["--tenant", "air-e"]);
    for job in [afinia, air_e] {
        let done = daemon.wait_done(job);
        assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    }
    assert_eq!(
        written(&dir, afinia, 1),
        format!("postgres db 5432 afinia etl {}", sha256("pw-of-afinia"))
    );
    assert_eq!(
        written(&dir, air_e, 1),
        format!("postgres db 5432 aire etl {}", sha256("pw-of-air-e"))
    );

    let refused = daemon.hfctl(&["submit", "loader"]);
    assert_eq!(refused.status.code(), Some(8), "{}", shown(&refused));
    let said = shown(&refused);
    assert!(
        said.contains("connections")
            && said.contains("erp")
            && said.contains("connections.d/erp.toml"),
        "{said}"
    );

    let listed = connections(&daemon);
    assert_eq!(
        named(&listed, "erp-afinia")["used_by"],
        json!(["loader (tenant afinia)"])
    );
    assert_eq!(
        named(&listed, "erp-air-e")["used_by"],
        json!(["loader (tenant air-e)"])
    );
}

/// Runs `first` until `@DIR@/go` exists, then `second`, which uses `erp`.
const TWO_STEPS: &str = r#"
[process.p]
mode = "serial"
[process.p.activity.first]
shell = "touch @DIR@/first.$HF_JOB_ID; while [ ! -e @DIR@/go ]; do sleep 0.05; done"
[process.p.activity.second]
connections = ["erp"]
shell = "echo $HF_CONN_ERP_HOST"
"#;

/// A broken profile is listed `broken` with file:line:column and keeps its
/// last good version; `hfctl validate` checks a profile file like the
/// daemon; a profile gone by an attempt's start, or whose password file
/// cannot be read then, fails that attempt with a spawn error naming it
/// (and no password).
#[test]
fn broken_and_missing_profiles_are_reported() {
    let daemon = TestDaemon::start(&[("two.toml", TWO_STEPS)]);
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("erp.pw"), "pw-not-shown\n").expect("password file");
    let good = profile("db1", "erp", "erp.pw");
    daemon.write_connection("erp", &good);
    daemon.hfctl_json(&["reload"]);

    let path = daemon.connections_dir().join("erp.toml");
    let checked = daemon.hfctl(&["validate", &path.display().to_string()]);
    assert!(checked.status.success(), "{}", shown(&checked));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("ok (connection erp)"),
        "{}",
        shown(&checked)
    );

    daemon.write_connection("erp", &format!("{good}  hosts = [1]\n"));
    daemon.hfctl_json(&["reload"]);
    let listed = connections(&daemon);
    let erp = named(&listed, "erp");
    assert_eq!(erp["status"], "broken", "{erp}");
    assert_eq!(erp["errors"][0]["line"], 8, "{erp}");
    assert_eq!(erp["errors"][0]["column"], 11, "{erp}");
    assert_eq!(
        erp["fields"]["host"], "db1",
        "the last good version stays: {erp}"
    );
    let table = daemon.hfctl(&["connections"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("erp.toml:8:11"),
        "{}",
        shown(&table)
    );
    let checked = daemon.hfctl(&["validate", &path.display().to_string()]);
    assert!(!checked.status.success(), "{}", shown(&checked));
    assert!(
        shown(&checked).contains("erp.toml:8:11"),
        "{}",
        shown(&checked)
    );

    // Gone between submission and the attempt that needs it.
    daemon.write_connection("erp", &good);
    daemon.hfctl_json(&["reload"]);
    let job = daemon.submit("two", &[]);
    eventually(
        Duration::from_secs(30),
        "the first activity started",
        || {
            dir.join(format!("first.{job}"))
                .exists()
                .then_some(())
                .ok_or("not yet")
        },
    );
    std::fs::remove_file(&path).expect("profile removed");
    daemon.hfctl_json(&["reload"]);
    std::fs::write(dir.join("go"), "").expect("go");
    let done = daemon.wait_done(job);
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let attempt = &crate::support::activity(&done, "p.second").attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{done:#?}");
    let error = attempt.error.clone().unwrap_or_default();
    assert!(
        error.contains("connection erp") && error.contains("no profile \"erp\""),
        "{error}"
    );
    assert!(!format!("{done:?}").contains("pw-not-shown"));

    // Back, but its password file is gone.
    daemon.write_connection("erp", &profile("db1", "erp", "gone.pw"));
    daemon.hfctl_json(&["reload"]);
    let job = daemon.submit("two", &[]);
    let done = daemon.wait_done(job);
    let attempt = &crate::support::activity(&done, "p.second").attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{done:#?}");
    let error = attempt.error.clone().unwrap_or_default();
    assert!(
        error.contains("connection erp (profile erp): password: cannot read secret file")
            && error.contains("gone.pw"),
        "{error}"
    );
}

const ACCESS_SETTINGS: &str = r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"
"#;

const USES_RESTRICTED: &str = r#"
[process.p.activity.work]
connections = ["warehouse"]
command = ["true"]
"#;

/// With real users: a profile's `allow` refuses a member outside it (exit
/// 7, audited), at submission and at a reprocess of a job the member ran
/// before the profile was restricted, and admits a member of its group;
/// `hfctl connections` shows an operator the hosts and a member only
/// names, and neither the password.
#[test]
fn a_profiles_allow_decides_who_submits_and_operators_see_hosts() {
    let Some(accounts) =
        accounts_or_skip("a_profiles_allow_decides_who_submits_and_operators_see_hosts")
    else {
        return;
    };
    let daemon = SystemDaemon::start(ACCESS_SETTINGS, &[("uses.toml", USES_RESTRICTED)], &[]);
    let open = "[connection]\nkind = \"postgres\"\nhost = \"dw.internal\"\npassword = \"pw-in-the-file\"\n";
    daemon.write_connection("warehouse", open);
    daemon.hfctl_json(&["reload"]);
    let socket = daemon.socket();
    let (member, etl, operator) = (&accounts.member, &accounts.etl_member, &accounts.operator);
    let before = member.submit(socket, "uses", &[]);
    assert_eq!(daemon.wait_done(before).state, JobState::Succeeded);
    daemon.write_connection("warehouse", &format!("{open}allow = [\"group:hft-etl\"]\n"));
    daemon.hfctl_json(&["reload"]);
    let reprocess = member.hfctl(socket, &["retry", &before.to_string(), "--from-start"]);
    assert_eq!(reprocess.status.code(), Some(7), "{}", shown(&reprocess));
    assert!(
        shown(&reprocess).contains("connection warehouse"),
        "{}",
        shown(&reprocess)
    );

    let refused = member.hfctl(socket, &["submit", "uses"]);
    assert_eq!(refused.status.code(), Some(7), "{}", shown(&refused));
    let said = shown(&refused);
    assert!(
        said.contains("connection warehouse") && said.contains("group:hft-etl"),
        "{said}"
    );
    let job = etl.submit(socket, "uses", &[]);
    assert_eq!(daemon.wait_done(job).state, JobState::Succeeded);
    let audit = crate::users::audit(&daemon);
    assert!(
        audit.iter().any(|e| e.uid == Some(member.uid)
            && e.method == "job.submit"
            && e.outcome == "refused"
            && e.detail.as_deref().is_some_and(|d| d.contains("warehouse"))),
        "{audit:#?}"
    );

    let as_operator = operator.hfctl_json(socket, &["connections"]);
    assert_eq!(
        as_operator[0]["fields"]["host"], "dw.internal",
        "{as_operator}"
    );
    assert_eq!(as_operator[0]["fields"]["password"], "***", "{as_operator}");
    let as_member = member.hfctl_json(socket, &["connections"]);
    assert_eq!(as_member[0]["name"], "warehouse", "{as_member}");
    assert_eq!(as_member[0]["fields"], Value::Null, "{as_member}");
    assert_eq!(as_member[0]["secrets"], json!(["password"]), "{as_member}");
    let table = member.hfctl(socket, &["connections"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        text.contains("warehouse") && !text.contains("dw.internal"),
        "{text}"
    );
    for shown in [as_operator.to_string(), as_member.to_string(), text] {
        assert!(!shown.contains("pw-in-the-file"), "{shown}");
    }
}

/// The shipped examples (the chain using a connection, the profile, the
/// tenant with its commented mapping) pass `hfctl validate`, and a daemon
/// loading them lists the profile as used by the example chain.
#[test]
fn the_shipped_examples_validate_and_load() {
    let etc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .join("etc");
    let profile = etc.join("connections.d/erp.toml");
    let chain = etc.join("workflows.d/erp-export.toml");
    let read = |path: &Path| std::fs::read_to_string(path).expect("the example is readable");
    let daemon = TestDaemon::start(&[("erp-export.toml", &read(&chain))]);
    daemon.write_connection("erp", &read(&profile));
    daemon.write_tenant("afinia", &read(&etc.join("tenants.d/afinia.toml")));
    let checked = daemon.hfctl(&[
        "validate",
        &chain.display().to_string(),
        &profile.display().to_string(),
    ]);
    assert!(checked.status.success(), "{}", shown(&checked));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("ok (connection erp)"),
        "{}",
        shown(&checked)
    );
    daemon.hfctl_json(&["reload"]);
    let listed = connections(&daemon);
    let erp = named(&listed, "erp");
    assert_eq!(erp["status"], "loaded", "{erp}");
    assert_eq!(erp["used_by"], json!(["erp-export"]), "{erp}");
    let tenants = daemon.hfctl_json(&["tenants"]);
    assert_eq!(tenants[0]["status"], "loaded", "{tenants}");
}
