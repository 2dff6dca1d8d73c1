//! Configuration as operators write it: chain files saved by editors and
//! picked up by the watcher, `hfctl validate` agreeing with the daemon,
//! typed parameters, tenants, dry runs, simulated jobs and the OpenRPC
//! document that describes it all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_api::{AttemptState, JobState, LoadError, WorkflowSummary};
use holdfast_tests::http::rpc_call;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Map, Value, json};

use crate::support::{activity, discovered_methods, shown};

/// The watcher applies a change within a second of a save; this leaves a
/// margin.
const RELOADED_WITHIN: Duration = Duration::from_secs(3);

/// The exit code of hfctl for INVALID_PARAMETERS.
const EXIT_INVALID_PARAMETERS: i32 = 8;

fn workflows(daemon: &TestDaemon) -> Vec<WorkflowSummary> {
    let value = daemon.hfctl_json(&["workflows"]);
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("`hfctl --json workflows` is not a list ({e}): {value}"))
}

/// Every job the daemon lists (newest first).
fn jobs(daemon: &TestDaemon) -> Vec<Value> {
    let listed = daemon.hfctl_json(&["list", "--limit", "1000"]);
    listed["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("`hfctl --json list` has no jobs array: {listed}"))
        .clone()
}

/// The `HF_*` variables an activity running `env` printed to its log.
fn hf_environment(daemon: &TestDaemon, job_id: u64, activity: &str) -> BTreeMap<String, String> {
    daemon
        .logs(job_id, activity, None)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| key.starts_with("HF_"))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Submit, require success, return the `HF_*` environment of `activity`.
fn run_env(daemon: &TestDaemon, target: &str, extra: &[&str]) -> BTreeMap<String, String> {
    let job_id = daemon.submit(target, extra);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    hf_environment(daemon, job_id, "p.show")
}

/// Run hfctl and require INVALID_PARAMETERS naming exactly `fields`.
fn refused(daemon: &TestDaemon, args: &[&str], fields: &[&str]) -> String {
    let output = daemon.hfctl(args);
    assert_eq!(
        output.status.code(),
        Some(EXIT_INVALID_PARAMETERS),
        "`hfctl {}` must exit {EXIT_INVALID_PARAMETERS}: {}",
        args.join(" "),
        shown(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // One line per bad field: "  <field>: <message>".
    let named: BTreeSet<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.split_once(": ").map(|(field, _)| field))
        .collect();
    let wanted: BTreeSet<&str> = fields.iter().copied().collect();
    assert_eq!(
        named,
        wanted,
        "`hfctl {}` must name exactly these fields: {}",
        args.join(" "),
        shown(&output)
    );
    stderr
}

// ---------------------------------------------------------------------
// The watcher and editors
// ---------------------------------------------------------------------

fn notes(version: u32) -> String {
    format!(
        r#"
[chain]
description = "notes v{version}"

[process.p.activity.say]
command = ["echo", "notes v{version}"]
"#
    )
}

/// Wait until chain `notes` is loaded with the description of `version`.
fn wait_notes(daemon: &TestDaemon, version: u32, how: &str) -> Duration {
    let wanted = format!("notes v{version}");
    let (_, took) = eventually(
        RELOADED_WITHIN,
        &format!("a save {how} to be picked up"),
        || {
            let listed = workflows(daemon);
            match listed.iter().find(|w| w.name == "notes") {
                Some(w) if w.description.as_deref() == Some(&wanted) && w.status == "loaded" => {
                    Ok(())
                }
                _ => Err(format!("{listed:#?}")),
            }
        },
    );
    took
}

#[test]
fn each_editor_save_style_is_picked_up_by_the_watcher() {
    let daemon = TestDaemon::start(&[("notes.toml", &notes(1))]);
    let dir = daemon.workflows_dir();
    wait_notes(&daemon, 1, "at start");

    // 1. Written in place (same inode), as `echo > file` or nano do.
    daemon.write_workflow("notes.toml", &notes(2));
    wait_notes(&daemon, 2, "written in place");

    // 2. A temporary file renamed over the chain file (VS Code, sed -i,
    //    emacs, most atomic writers).
    daemon.save_workflow_by_rename("notes.toml", &notes(3));
    wait_notes(&daemon, 3, "by a rename over the file");

    // 3. Vim: a swap file while editing, its `4913` probe, the original
    //    renamed to a backup `notes.toml~`, the new text written to a new
    //    `notes.toml`; the backup and swap file stay behind (`set backup`,
    //    vim still open). Stray editor files of another, valid, chain are
    //    there too: none of them is a chain file.
    let swap = dir.join(".notes.toml.swp");
    fs::write(&swap, b"b0VIM 9.0\0\0\0 [chain\n= not toml").expect("swap file");
    fs::write(dir.join(".other.toml.swp"), b"b0VIM 9.0\0\0\0").expect("swap file");
    fs::write(dir.join("other.toml~"), notes(99)).expect("backup file");
    let probe = dir.join("4913");
    fs::write(&probe, b"").expect("vim's probe file");
    fs::remove_file(&probe).expect("vim removes its probe file");
    fs::rename(dir.join("notes.toml"), dir.join("notes.toml~")).expect("backup by rename");
    fs::write(dir.join("notes.toml"), daemon.place(&notes(4))).expect("new file");
    let took = wait_notes(&daemon, 4, "vim-style");
    assert!(took < RELOADED_WITHIN, "{took:?}");
    assert!(swap.exists() && dir.join("notes.toml~").exists());

    // An explicit reload reads the directory with every leftover present.
    let reload = daemon.hfctl(&["reload"]);
    assert!(reload.status.success(), "{}", shown(&reload));
    let listed = workflows(&daemon);
    let names: Vec<&str> = listed.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        ["notes"],
        "swap, backup and probe files are not chains: {listed:#?}"
    );
    assert!(
        listed
            .iter()
            .all(|w| w.status == "loaded" && w.error.is_none()),
        "no leftover may show up as an error: {listed:#?}"
    );
    let log = fs::read_to_string(daemon.log_path()).unwrap_or_default();
    for leftover in [".notes.toml.swp", "notes.toml~", "other.toml~", "4913"] {
        let complaints: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(leftover) && (l.contains(" WARN ") || l.contains(" ERROR ")))
            .collect();
        assert!(
            complaints.is_empty(),
            "the daemon must ignore {leftover}: {complaints:#?}"
        );
    }

    // The saved version is the one that runs.
    let job_id = daemon.submit("notes", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(daemon.logs(job_id, "p.say", None), "notes v4\n");
}

// ---------------------------------------------------------------------
// hfctl validate agrees with the daemon
// ---------------------------------------------------------------------

/// A chain file: its name, its text, and for a broken one the line and
/// column its (first) error must point at.
type ChainFile = (&'static str, &'static str, Option<(usize, usize)>);

/// Good and broken chain files.
const FILES: &[ChainFile] = &[
    (
        "good.toml",
        r#"[params.day]
type = "date"
required = true

[schedule.nightly]
cron = "30 2 * * *"
timezone = "Europe/Berlin"
params = { day = "2024-01-01" }

[process.p.activity.a]
command = ["echo", "{{ params.day }}"]
"#,
        None,
    ),
    (
        "unknown-key.toml",
        "[process.p.activity.a]\ncommand = [\"true\"]\ncolour = \"red\"\n",
        Some((3, 1)),
    ),
    (
        "syntax.toml",
        "[process.p.activity.a]\ncommand = [\"true\"\n",
        Some((2, 18)),
    ),
    (
        "cycle.toml",
        r#"[process.a]
after = ["b"]
[process.a.activity.x]
command = ["true"]
[process.b]
after = ["a"]
[process.b.activity.y]
command = ["true"]
"#,
        Some((2, 9)),
    ),
    (
        "bad-template.toml",
        "[process.p.activity.a]\ncommand = [\"echo\", \"{{ params.missing }}\"]\n",
        Some((2, 20)),
    ),
    (
        "bad-cron.toml",
        "[schedule.nightly]\ncron = \"61 4 * * *\"\n[process.p.activity.a]\ncommand = [\"true\"]\n",
        Some((2, 8)),
    ),
    (
        "bad-zone.toml",
        "[schedule.s]\ncron = \"0 4 * * *\"\ntimezone = \"europe/berlin\"\n[process.p.activity.a]\ncommand = [\"true\"]\n",
        Some((3, 12)),
    ),
    (
        "bad-default.toml",
        "[params.size]\ntype = \"int\"\ndefault = \"ten\"\n[process.p.activity.a]\ncommand = [\"true\"]\n",
        Some((3, 11)),
    ),
    (
        "two-errors.toml",
        "[params.size]\ntype = \"integer\"\n[process.p.activity.a]\ncommand = [\"true\"]\nretries = -1\n",
        Some((2, 8)),
    ),
];

#[test]
fn offline_validate_agrees_with_the_daemon_on_good_and_broken_files() {
    let daemon = TestDaemon::start(
        &FILES
            .iter()
            .map(|(name, text, _)| (*name, *text))
            .collect::<Vec<_>>(),
    );
    let paths: Vec<PathBuf> = FILES
        .iter()
        .map(|(name, _, _)| daemon.workflows_dir().join(name))
        .collect();
    let path_of = |name: &str| daemon.workflows_dir().join(name).display().to_string();

    // The daemon's view: one entry per file.
    let listed = workflows(&daemon);
    let by_file: BTreeMap<String, &WorkflowSummary> =
        listed.iter().map(|w| (w.file.clone(), w)).collect();
    assert_eq!(
        by_file.len(),
        FILES.len(),
        "every file is listed: {listed:#?}"
    );

    // The offline view, with the same paths.
    let mut args = vec!["--json".to_string(), "validate".to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let output = daemon.hfctl(&args);
    assert_eq!(output.status.code(), Some(1), "{}", shown(&output));
    let verdicts: Vec<Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("`hfctl --json validate` printed no JSON ({e}): {output:?}"));
    assert_eq!(verdicts.len(), FILES.len(), "{verdicts:#?}");

    for ((name, _, position), verdict) in FILES.iter().zip(&verdicts) {
        let file = path_of(name);
        assert_eq!(verdict["file"], file.as_str(), "{verdict:#}");
        let entry = by_file
            .get(&file)
            .unwrap_or_else(|| panic!("the daemon does not list {file}: {listed:#?}"));
        let ok = verdict["ok"].as_bool().expect("ok is a bool");
        assert_eq!(
            ok,
            entry.status == "loaded",
            "validate and the daemon disagree on {name}: {verdict:#} vs {entry:#?}"
        );
        assert_eq!(ok, position.is_none(), "{name}: {verdict:#}");
        let errors: Vec<LoadError> = serde_json::from_value(verdict["errors"].clone())
            .unwrap_or_else(|e| panic!("errors of {name} are LoadErrors ({e}): {verdict:#}"));
        let Some((line, column)) = position else {
            assert!(errors.is_empty(), "{verdict:#}");
            assert!(entry.error.is_none(), "{entry:#?}");
            continue;
        };
        let first = errors
            .first()
            .unwrap_or_else(|| panic!("{name} is broken but validate gave no error"));
        assert_eq!(
            (first.line, first.column),
            (Some(*line), Some(*column)),
            "{name}: the error points at the wrong place: {first}"
        );
        assert_eq!(
            entry.error.as_ref(),
            Some(first),
            "{name}: `hfctl workflows` and `hfctl validate` must report the same error"
        );
    }

    // A file with more than one problem: validate lists them all.
    let two = verdicts
        .iter()
        .find(|v| v["file"] == path_of("two-errors.toml").as_str())
        .expect("listed");
    assert!(
        two["errors"].as_array().is_some_and(|e| e.len() >= 2),
        "every error of a file is reported: {two:#}"
    );

    // The text form: `file:line:column: message` on stderr, one line per
    // error, exactly as the daemon's error reads; good files on stdout.
    let mut args = vec!["validate".to_string()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let output = daemon.hfctl(&args);
    assert_eq!(output.status.code(), Some(1), "{}", shown(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr_lines: HashSet<&str> = stderr.lines().collect();
    for entry in &listed {
        if let Some(error) = &entry.error {
            let line = error.to_string();
            assert!(line.starts_with(&format!("{}:", entry.file)), "{line}");
            assert!(
                stderr_lines.contains(line.as_str()),
                "validate must print the daemon's error {line:?}:\n{stderr}"
            );
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{}: ok", path_of("good.toml"))),
        "{}",
        shown(&output)
    );

    // Good files alone pass.
    let good = daemon.hfctl(&["validate", &path_of("good.toml")]);
    assert_eq!(good.status.code(), Some(0), "{}", shown(&good));
}

// ---------------------------------------------------------------------
// Typed parameters
// ---------------------------------------------------------------------

const TYPED: &str = r#"
[params.mode]
type = "string"
enum = ["full", "incremental"]
required = true

[params.code]
type = "string"
pattern = "[A-Z]{2}[0-9]+"
required = true

[params.count]
type = "int"
required = true

[params.ratio]
type = "float"
required = true

[params.dry-run]
type = "bool"
required = true

[params.day]
type = "date"
required = true

[params.at]
type = "datetime"
required = true

[params.payload]
type = "json"
required = true

[process.p.activity.show]
command = ["env"]
"#;

/// (parameter, good value as typed, HF_PARAM_ value, bad value)
const TYPED_VALUES: &[(&str, &str, &str, &str)] = &[
    ("mode", "full", "full", "weekly"),
    ("code", "CO123", "CO123", "co1"),
    ("count", "042", "42", "5.5"),
    ("ratio", "2.50", "2.5", "fast"),
    ("dry-run", "true", "true", "yes"),
    ("day", "2024-02-29", "2024-02-29", "2023-02-29"),
    (
        "at",
        "2024-05-01T04:00:00+02:00",
        "2024-05-01T04:00:00+02:00",
        "2024-05-01 04:00",
    ),
    (
        "payload",
        r#"{"b": [1, 2], "a": null}"#,
        r#"{"b":[1,2],"a":null}"#,
        "{oops",
    ),
];

fn typed_args(bad: Option<&str>) -> Vec<String> {
    let mut args = vec!["submit".to_string(), "typed".to_string()];
    for (name, good, _, wrong) in TYPED_VALUES {
        args.push("-p".into());
        let value = if bad == Some(*name) || bad == Some("*") {
            wrong
        } else {
            good
        };
        args.push(format!("{name}={value}"));
    }
    args
}

#[test]
fn every_parameter_type_accepts_a_good_value_and_refuses_a_bad_one() {
    let daemon = TestDaemon::start(&[("typed.toml", TYPED)]);

    for (name, _, _, wrong) in TYPED_VALUES {
        let args = typed_args(Some(name));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = refused(&daemon, &args, &[name]);
        assert!(
            stderr.contains(&serde_json::to_string(wrong).expect("a string")),
            "the message quotes the bad value {wrong:?}: {stderr}"
        );
    }
    // Every problem at once.
    let args = typed_args(Some("*"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let names: Vec<&str> = TYPED_VALUES.iter().map(|(n, _, _, _)| *n).collect();
    refused(&daemon, &args, &names);
    assert!(
        jobs(&daemon).is_empty(),
        "a refused submission creates no job"
    );

    let args = typed_args(None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = run_env(&daemon, "typed", &args[2..]);
    for (name, _, normalised, _) in TYPED_VALUES {
        let key = format!("HF_PARAM_{}", name.to_ascii_uppercase().replace('-', "_"));
        let seen = env
            .get(&key)
            .unwrap_or_else(|| panic!("the activity has no {key}: {env:#?}"));
        if *name == "payload" {
            let parsed: Value = serde_json::from_str(seen)
                .unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {seen}"));
            assert_eq!(parsed, json!({"b": [1, 2], "a": null}), "{key}");
            assert!(!seen.contains(' '), "{key} is compact JSON: {seen:?}");
        } else {
            assert_eq!(seen, normalised, "{key}");
        }
    }
    let hf_params: Value = serde_json::from_str(&env["HF_PARAMS"]).expect("HF_PARAMS is JSON");
    assert_eq!(hf_params["count"], json!(42), "{hf_params}");
    assert_eq!(hf_params["ratio"], json!(2.5), "{hf_params}");
    assert_eq!(hf_params["dry-run"], json!(true), "{hf_params}");
    assert_eq!(
        hf_params["payload"],
        json!({"b": [1, 2], "a": null}),
        "{hf_params}"
    );
}

// ---------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------

const BILLING: &str = r#"
[params.region]
type = "string"
default = "chain-region"

[params.company]
type = "string"
default = "chain-company"

[params.limit]
type = "int"
default = 1

[process.p.activity.show]
command = ["env"]
"#;

fn tenant_daemon() -> TestDaemon {
    let mut daemon = TestDaemon::prepare(None, &[("billing.toml", BILLING)]);
    daemon.write_tenant(
        "acme",
        r#"
description = "Acme Corp"
chains = ["billing"]

[params]
company = "ACME"
limit = 5
unrelated = "ignored for chains that do not declare it"
"#,
    );
    daemon.write_tenant(
        "globex",
        r#"
description = "Globex"
chains = ["payroll"]

[params]
company = "GLOBEX"
"#,
    );
    daemon.write_tenant("initech", "description = \"Initech, every chain\"\n");
    daemon.launch();
    daemon
}

#[test]
fn tenant_parameters_sit_between_chain_defaults_and_submitted_values() {
    let daemon = tenant_daemon();

    let env = run_env(&daemon, "billing", &["--tenant", "acme", "-p", "limit=9"]);
    assert_eq!(env["HF_TENANT"], "acme", "{env:#?}");
    assert_eq!(
        env["HF_PARAM_REGION"], "chain-region",
        "chain default: {env:#?}"
    );
    assert_eq!(env["HF_PARAM_COMPANY"], "ACME", "tenant value: {env:#?}");
    assert_eq!(env["HF_PARAM_LIMIT"], "9", "submitted value: {env:#?}");
    assert!(!env.contains_key("HF_PARAM_UNRELATED"), "{env:#?}");

    let env = run_env(&daemon, "billing", &["--tenant", "acme"]);
    assert_eq!(env["HF_PARAM_LIMIT"], "5", "tenant over default: {env:#?}");

    let env = run_env(&daemon, "billing", &[]);
    assert_eq!(env["HF_TENANT"], "", "{env:#?}");
    assert_eq!(env["HF_PARAM_COMPANY"], "chain-company", "{env:#?}");
    assert_eq!(env["HF_PARAM_LIMIT"], "1", "{env:#?}");

    let job = daemon.status(daemon.submit("billing", &["--tenant", "initech"]));
    assert_eq!(job.tenant.as_deref(), Some("initech"), "{job:#?}");
}

#[test]
fn a_tenant_is_refused_for_a_chain_it_may_not_run_and_an_unknown_one_is_named() {
    let daemon = tenant_daemon();

    let stderr = refused(
        &daemon,
        &["submit", "billing", "--tenant", "globex"],
        &["tenant"],
    );
    assert!(stderr.contains("globex"), "{stderr}");
    let stderr = refused(
        &daemon,
        &["submit", "billing", "--tenant", "nobody", "-p", "limit=x"],
        &["tenant", "limit"],
    );
    assert!(stderr.contains("nobody"), "{stderr}");
    let stderr = refused(
        &daemon,
        &["submit", "billing", "--dry-run", "--tenant", "globex"],
        &["tenant"],
    );
    assert!(stderr.contains("globex"), "{stderr}");

    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "billing", "tenant": "nobody"}),
    );
    assert_eq!(answer["error"]["code"], -31002, "{answer}");
    let fields: Vec<&str> = answer["error"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("INVALID_PARAMETERS lists its fields: {answer}"))
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, ["tenant"], "{answer}");
    assert!(
        jobs(&daemon).is_empty(),
        "refused submissions create no job"
    );
}

#[test]
fn describe_and_tenant_list_show_who_may_run_a_chain() {
    let daemon = tenant_daemon();

    let detail = daemon.hfctl_json(&["describe", "billing"]);
    assert_eq!(
        detail["tenants"],
        json!(["acme", "initech"]),
        "tenants that may run billing: {detail:#}"
    );
    let output = daemon.hfctl(&["describe", "billing"]);
    assert!(output.status.success(), "{}", shown(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("tenants:"))
        .unwrap_or_else(|| panic!("describe shows a tenants: line:\n{text}"));
    assert!(
        line.contains("acme") && line.contains("initech") && !line.contains("globex"),
        "{line}"
    );

    let answer = rpc_call(daemon.socket(), "tenant.list", json!({}));
    let tenants = answer["result"]
        .as_array()
        .unwrap_or_else(|| panic!("tenant.list answers a list: {answer}"));
    let summary: BTreeMap<&str, (&str, &Value)> = tenants
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default(),
                (t["status"].as_str().unwrap_or_default(), &t["chains"]),
            )
        })
        .collect();
    assert_eq!(
        summary,
        BTreeMap::from([
            ("acme", ("loaded", &json!(["billing"]))),
            ("globex", ("loaded", &json!(["payroll"]))),
            ("initech", ("loaded", &Value::Null)),
        ]),
        "{answer:#}"
    );
}

/// `tenant.list` as name → (status, params).
fn tenant_params(daemon: &TestDaemon) -> BTreeMap<String, (String, Value)> {
    let answer = rpc_call(daemon.socket(), "tenant.list", json!({}));
    answer["result"]
        .as_array()
        .unwrap_or_else(|| panic!("tenant.list answers a list: {answer}"))
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                (
                    t["status"].as_str().unwrap_or_default().to_string(),
                    t["params"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn new_changed_and_removed_tenant_files_are_picked_up_by_the_watcher() {
    let daemon = tenant_daemon();

    daemon.write_tenant("umbrella", "[params]\ncompany = \"UMBRELLA\"\n");
    eventually(RELOADED_WITHIN, "a new tenant file to be loaded", || {
        let tenants = tenant_params(&daemon);
        match tenants.get("umbrella") {
            Some((status, _)) if status == "loaded" => Ok(()),
            _ => Err(format!("{tenants:?}")),
        }
    });
    let env = run_env(&daemon, "billing", &["--tenant", "umbrella"]);
    assert_eq!(env["HF_PARAM_COMPANY"], "UMBRELLA", "{env:#?}");

    // Saved through a temporary file and a rename, as editors do.
    let temporary = daemon.tenants_dir().join(".acme.toml.tmp-save");
    fs::write(
        &temporary,
        "chains = [\"billing\"]\n[params]\ncompany = \"ACME v2\"\n",
    )
    .expect("a temporary file");
    fs::rename(&temporary, daemon.tenants_dir().join("acme.toml")).expect("renamed over");
    eventually(
        RELOADED_WITHIN,
        "a changed tenant file to be loaded",
        || {
            let tenants = tenant_params(&daemon);
            match tenants.get("acme") {
                Some((_, params)) if params["company"] == "ACME v2" => Ok(()),
                _ => Err(format!("{tenants:?}")),
            }
        },
    );
    let env = run_env(&daemon, "billing", &["--tenant", "acme"]);
    assert_eq!(env["HF_PARAM_COMPANY"], "ACME v2", "{env:#?}");
    assert_eq!(
        env["HF_PARAM_LIMIT"], "1",
        "the old limit is gone: {env:#?}"
    );

    fs::remove_file(daemon.tenants_dir().join("initech.toml")).expect("removed");
    eventually(
        RELOADED_WITHIN,
        "a removed tenant file to be dropped",
        || {
            let tenants = tenant_params(&daemon);
            if tenants.contains_key("initech") {
                Err(format!("{tenants:?}"))
            } else {
                Ok(())
            }
        },
    );
    refused(
        &daemon,
        &["submit", "billing", "--tenant", "initech"],
        &["tenant"],
    );
}

/// The hint of an error, `` see `hfctl ...` ``, as arguments.
fn hint(stderr: &str) -> Option<Vec<String>> {
    let start = stderr.find("`hfctl ")? + "`hfctl ".len();
    let end = start + stderr[start..].find('`')?;
    Some(
        stderr[start..end]
            .split_whitespace()
            .map(String::from)
            .collect(),
    )
}

#[test]
fn the_unknown_tenant_hint_names_an_hfctl_command_that_exists() {
    let daemon = tenant_daemon();
    let stderr = refused(
        &daemon,
        &["submit", "billing", "--tenant", "nobody"],
        &["tenant"],
    );
    let Some(command) = hint(&stderr) else {
        return;
    };
    let output = daemon.hfctl(&command);
    assert!(
        output.status.success(),
        "the error says to run `hfctl {}`, which fails: {}",
        command.join(" "),
        shown(&output)
    );
    let listed = String::from_utf8_lossy(&output.stdout);
    for tenant in ["acme", "globex", "initech"] {
        assert!(listed.contains(tenant), "{}", shown(&output));
    }
}

const DATED: &str = r#"
[params.day]
type = "date"
required = true

[params.at]
type = "datetime"

# The same TOML date and date-time literals a tenant file uses below.
[schedule.yearly]
cron = "0 4 1 1 *"
params = { day = 2024-01-01, at = 2024-05-01T04:00:00Z }

[process.p.activity.show]
command = ["env"]
"#;

#[test]
fn a_tenant_file_may_give_dates_as_toml_dates_as_a_chain_file_may() {
    let mut daemon = TestDaemon::prepare(None, &[("dated.toml", DATED)]);
    daemon.write_tenant(
        "acme",
        "[params]\nday = 2024-01-01\nat = 2024-05-01T04:00:00Z\n",
    );
    daemon.launch();
    let listed = workflows(&daemon);
    assert!(
        listed
            .iter()
            .any(|w| w.name == "dated" && w.status == "loaded"),
        "a chain file may write dates as TOML dates: {listed:#?}"
    );

    let answer = rpc_call(daemon.socket(), "tenant.list", json!({}));
    assert_eq!(
        answer["result"][0]["params"],
        json!({"day": "2024-01-01", "at": "2024-05-01T04:00:00Z"}),
        "tenant.list shows the values as written: {answer:#}"
    );
    let env = run_env(&daemon, "dated", &["--tenant", "acme"]);
    assert_eq!(env["HF_PARAM_DAY"], "2024-01-01", "{env:#?}");
    assert_eq!(env["HF_PARAM_AT"], "2024-05-01T04:00:00Z", "{env:#?}");
}

// ---------------------------------------------------------------------
// Dry runs
// ---------------------------------------------------------------------

const EXPORT: &str = r#"
[params.day]
type = "date"
required = true

[params.password]
type = "string"
required = true

[defaults]
env = { PGHOST = "db1", DB_PASSWORD = "hunter2-env" }

[process.extract.activity.dump]
command = ["touch", "@DIR@/dumped-{{ params.day }}"]
env = { API_TOKEN = "tok-{{ params.day }}" }

[process.load]
after = ["extract"]

[process.load.activity.facts]
command = ["touch", "@DIR@/loaded-{{ outputs.extract.dump.rows }}"]
"#;

const SECRET: &str = "s3cret-value";

fn env_of(planned: &Value) -> BTreeMap<String, String> {
    planned["env"]
        .as_array()
        .unwrap_or_else(|| panic!("a planned activity has an env list: {planned:#}"))
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_string(),
                pair[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_dry_run_shows_rendered_argv_and_masked_secrets_and_creates_no_job() {
    let daemon = TestDaemon::start(&[("export.toml", EXPORT)]);
    let dir = daemon.dir().display().to_string();
    let password = format!("password={SECRET}");
    let args = [
        "submit",
        "export",
        "--dry-run",
        "-p",
        "day=2024-03-01",
        "-p",
        &password,
    ];

    let plan = daemon.hfctl_json(&args);
    assert_eq!(plan["target"], "export", "{plan:#}");
    assert_eq!(plan["chain"], "export", "{plan:#}");
    assert!(plan["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(plan["params"]["day"], "2024-03-01", "{plan:#}");
    let waves = plan["waves"].as_array().expect("waves");
    assert_eq!(waves.len(), 2, "extract, then load: {plan:#}");
    let dump = &waves[0][0];
    let facts = &waves[1][0];
    assert_eq!(dump["path"], "export.extract.dump", "{plan:#}");
    assert_eq!(
        dump["argv"],
        json!(["touch", format!("{dir}/dumped-2024-03-01")]),
        "parameters are rendered into argv: {plan:#}"
    );
    assert_eq!(facts["path"], "export.load.facts", "{plan:#}");
    assert_eq!(facts["depends_on"], json!(["export.extract.dump"]));
    assert_eq!(
        facts["argv"],
        json!([
            "touch",
            format!("{dir}/loaded-{{{{ outputs.extract.dump.rows }}}}")
        ]),
        "an output that does not exist yet stays a template: {plan:#}"
    );
    let env = env_of(dump);
    assert_eq!(env["HF_PARAM_DAY"], "2024-03-01", "{env:#?}");
    assert_eq!(env["PGHOST"], "db1", "{env:#?}");
    for secret in ["HF_PARAM_PASSWORD", "DB_PASSWORD", "API_TOKEN"] {
        assert_eq!(env.get(secret).map(String::as_str), Some("***"), "{secret}");
    }
    assert_eq!(env_of(facts)["DB_PASSWORD"], "***");
    let waves_text = plan["waves"].to_string();
    for leaked in [SECRET, "hunter2-env", "tok-2024-03-01"] {
        assert!(
            !waves_text.contains(leaked),
            "{leaked} leaks into the plan: {plan:#}"
        );
    }

    let output = daemon.hfctl(&args);
    assert!(output.status.success(), "{}", shown(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for wanted in [
        "no job created".to_string(),
        format!("argv: touch {dir}/dumped-2024-03-01"),
        "env DB_PASSWORD=***".to_string(),
        "env API_TOKEN=***".to_string(),
        "env PGHOST=db1".to_string(),
        "after: export.extract.dump".to_string(),
    ] {
        assert!(text.contains(&wanted), "dry run shows {wanted:?}:\n{text}");
    }
    for leaked in ["hunter2-env", "tok-2024-03-01"] {
        assert!(!text.contains(leaked), "{leaked} leaks:\n{text}");
    }

    // A dry run is checked like a submission.
    refused(
        &daemon,
        &["submit", "export", "--dry-run"],
        &["day", "password"],
    );

    assert!(
        jobs(&daemon).is_empty(),
        "a dry run creates no job: {:#?}",
        jobs(&daemon)
    );
    assert!(
        !Path::new(&format!("{dir}/dumped-2024-03-01")).exists(),
        "a dry run runs nothing"
    );
}

#[test]
fn a_dry_run_never_prints_a_secret_parameter_value() {
    let daemon = TestDaemon::start(&[("export.toml", EXPORT)]);
    let password = format!("password={SECRET}");
    let args = [
        "submit",
        "export",
        "--dry-run",
        "-p",
        "day=2024-03-01",
        "-p",
        &password,
    ];
    let plan = daemon.hfctl_json(&args);
    assert!(
        !plan.to_string().contains(SECRET),
        "the value of parameter `password` is masked in its environment variable but printed \
         in the plan's params: {:#}",
        plan["params"]
    );
    let output = daemon.hfctl(&args);
    assert!(output.status.success(), "{}", shown(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains(SECRET),
        "the dry run prints the secret parameter value:\n{text}"
    );
}

// ---------------------------------------------------------------------
// Simulation
// ---------------------------------------------------------------------

const FLAKY: &str = r#"
[process.p.activity.flaky]
command = ["touch", "@DIR@/flaky-ran"]
retries = 2
retry_delay = "10ms"

[process.p.activity.flaky.simulate]
exit_code = 1
"#;

#[test]
fn a_simulated_failure_goes_through_every_retry_without_running_the_command() {
    let daemon = TestDaemon::start(&[("flaky.toml", FLAKY)]);
    let output = daemon.hfctl(&["submit", "flaky", "--simulate", "--wait"]);
    assert_eq!(
        output.status.code(),
        Some(4),
        "a failed job exits 4 with --wait: {}",
        shown(&output)
    );
    let job_id = jobs(&daemon)[0]["id"].as_u64().expect("a job id");
    let value = daemon.status_value(job_id);
    assert_eq!(value["simulated"], true, "{value:#}");
    let job = daemon.status(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let flaky = activity(&job, "p.flaky");
    let attempts: Vec<(u32, AttemptState, Option<i32>)> = flaky
        .attempts
        .iter()
        .map(|a| (a.number, a.state, a.exit_code))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, AttemptState::Failed, Some(1)),
            (2, AttemptState::Failed, Some(1)),
            (3, AttemptState::Failed, Some(1)),
        ],
        "retries = 2 means three simulated attempts: {job:#?}"
    );
    assert!(
        !daemon.dir().join("flaky-ran").exists(),
        "a simulated job never runs the real command"
    );
}

const SIMULATED_PIPELINE: &str = r#"
[process.extract.activity.count]
command = ["touch", "@DIR@/count-ran"]

[process.extract.activity.count.simulate]
duration = "50ms"
outputs = { rows = 1250, table = "facts" }

[process.load]
after = ["extract"]

[process.load.activity.facts]
command = ["touch", "@DIR@/facts-{{ outputs.extract.count.rows }}-{{ outputs.extract.count.table }}"]
"#;

#[test]
fn simulated_outputs_flow_to_a_dependant() {
    let daemon = TestDaemon::start(&[("pipeline.toml", SIMULATED_PIPELINE)]);
    let job_id = daemon.submit("pipeline", &["--simulate"]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(job.simulated, "{job:#?}");
    assert_eq!(
        job.outputs.get("extract.count"),
        Some(&json!({"rows": 1250, "table": "facts"})),
        "the stand-in's outputs are the activity's outputs: {:#?}",
        job.outputs
    );
    for path in ["extract.count", "load.facts"] {
        let run = activity(&job, path);
        assert_eq!(run.attempts.len(), 1, "{run:#?}");
        assert_eq!(run.attempts[0].state, AttemptState::Succeeded, "{run:#?}");
    }
    let log = daemon.logs(job_id, "load.facts", None);
    let rendered = daemon.dir().join("facts-1250-facts").display().to_string();
    assert!(
        log.contains(&rendered),
        "the dependant's argv is rendered from the simulated outputs: {log:?}"
    );
    assert!(!daemon.dir().join("count-ran").exists());
    assert!(!daemon.dir().join("facts-1250-facts").exists());

    // The same command does create its file when it really runs.
    let real = daemon.submit("pipeline.extract.count", &[]);
    let real = daemon.wait_done(real);
    assert_eq!(real.state, JobState::Succeeded, "{real:#?}");
    assert!(!real.simulated);
    assert!(daemon.dir().join("count-ran").exists());
}

// ---------------------------------------------------------------------
// rpc.discover
// ---------------------------------------------------------------------

const DISCOVERED: &str = r#"
[params.mode]
type = "string"
enum = ["full", "incremental"]
default = "incremental"
description = "how much to load"

[params.code]
type = "string"
pattern = "[A-Z]{2}[0-9]+"
required = true

[params.count]
type = "int"
required = true

[params.ratio]
type = "float"

[params.dry-run]
type = "bool"
default = false

[params.day]
type = "date"
required = true

[params.at]
type = "datetime"

[params.payload]
type = "json"

[process.p.activity.a]
command = ["true"]
"#;

fn discover(daemon: &TestDaemon) -> Value {
    let answer = rpc_call(daemon.socket(), "rpc.discover", json!({}));
    assert!(answer["error"].is_null(), "{answer}");
    answer["result"].clone()
}

/// Every `$ref` in `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    out.push((
                        at.to_string(),
                        inner.as_str().unwrap_or_default().to_string(),
                    ));
                } else {
                    refs(inner, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                refs(inner, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn object<'a>(value: &'a Value, what: &str) -> &'a Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what} must be an object: {value:#}"))
}

#[test]
fn rpc_discover_is_a_structurally_valid_openrpc_document() {
    let daemon = TestDaemon::start(&[("discovered.toml", DISCOVERED)]);
    let doc = discover(&daemon);

    // Required top-level fields.
    let version = doc["openrpc"].as_str().expect("openrpc is a string");
    assert!(version.starts_with("1.2."), "OpenRPC 1.2.x: {version}");
    let info = object(&doc["info"], "info");
    for key in ["title", "version"] {
        assert!(
            info.get(key)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "info.{key} is a non-empty string: {info:#?}"
        );
    }

    // Methods: unique names, params and a result, each a content descriptor.
    let methods = doc["methods"].as_array().expect("methods is an array");
    assert!(!methods.is_empty());
    let mut names = HashSet::new();
    for method in methods {
        let name = method["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{method:#}"));
        assert!(names.insert(name), "method {name} is listed twice");
        if let Some(structure) = method.get("paramStructure") {
            assert!(
                ["by-name", "by-position", "either"].contains(&structure.as_str().unwrap_or("")),
                "{name}: {structure}"
            );
        }
        let params = method["params"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has a params array: {method:#}"));
        let mut param_names = HashSet::new();
        for param in params {
            let pname = param["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a param without a name: {param:#}"));
            assert!(param_names.insert(pname), "{name}.{pname} listed twice");
            object(&param["schema"], &format!("{name}.{pname} schema"));
            if let Some(required) = param.get("required") {
                assert!(required.is_boolean(), "{name}.{pname}: {param:#}");
            }
        }
        let result = object(&method["result"], &format!("{name} result"));
        assert!(
            result.get("name").and_then(Value::as_str).is_some(),
            "{name}: the result is a content descriptor with a name: {result:#?}"
        );
        object(&result["schema"], &format!("{name} result schema"));
    }
    for must in ["job.submit", "job.get", "rpc.discover", "workflow.list"] {
        assert!(names.contains(must), "{must} is described");
    }

    // Every $ref resolves inside the document.
    let schemas = object(&doc["components"]["schemas"], "components.schemas");
    let mut found = Vec::new();
    refs(&doc, "#", &mut found);
    assert!(!found.is_empty());
    for (at, target) in &found {
        if let Some(key) = target.strip_prefix("#/components/errors/") {
            assert!(
                doc["components"]["errors"].get(key).is_some(),
                "{at}: $ref {target:?} does not resolve"
            );
            continue;
        }
        let key = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| {
                panic!("{at}: $ref {target:?} points outside components.schemas and .errors")
            });
        assert!(
            schemas.contains_key(key),
            "{at}: $ref {target:?} does not resolve"
        );
    }
    if let Some(errors) = doc["components"].get("errors") {
        for (name, error) in object(errors, "components.errors") {
            assert!(error["code"].is_i64(), "{name}: {error}");
            assert!(error["message"].is_string(), "{name}: {error}");
        }
    }

    // The chain's parameters as a JSON Schema, reached from job.submit.
    let submit = methods
        .iter()
        .find(|m| m["name"] == "job.submit")
        .expect("job.submit");
    let target = submit["x-chain-params"]["discovered"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("x-chain-params maps the chain to a $ref: {submit:#}"));
    let key = target.trim_start_matches("#/components/schemas/");
    let schema = &schemas[key];
    assert_eq!(schema["type"], "object", "{schema:#}");
    assert_eq!(schema["additionalProperties"], false, "{schema:#}");
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .expect("required is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["code", "count", "day"]),
        "required without a default: {schema:#}"
    );
    let properties = object(&schema["properties"], "properties");
    let names: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "at", "code", "count", "day", "dry-run", "mode", "payload", "ratio"
        ])
    );
    let property = |name: &str| &properties[name];
    assert_eq!(property("mode")["type"], "string");
    assert_eq!(property("mode")["enum"], json!(["full", "incremental"]));
    assert_eq!(property("mode")["default"], "incremental");
    assert_eq!(property("mode")["description"], "how much to load");
    assert_eq!(property("code")["type"], "string");
    let pattern = property("code")["pattern"].as_str().expect("a pattern");
    assert!(pattern.contains("[A-Z]{2}[0-9]+"), "{pattern}");
    assert_eq!(property("count")["type"], "integer");
    assert_eq!(property("ratio")["type"], "number");
    assert_eq!(property("dry-run")["type"], "boolean");
    assert_eq!(property("dry-run")["default"], false);
    assert_eq!(property("day")["type"], "string");
    assert_eq!(property("day")["format"], "date");
    assert_eq!(property("at")["type"], "string");
    assert_eq!(property("at")["format"], "date-time");
    assert!(
        property("payload").get("type").is_none(),
        "json accepts any value: {:#}",
        property("payload")
    );
}

/// The methods of the `Holdfast` RPC trait (api/src/rpc.rs) and their
/// parameters.
const API_METHODS: &[(&str, &[&str])] = &[
    ("daemon.info", &[]),
    (
        "job.submit",
        &[
            "target",
            "params",
            "tenant",
            "priority",
            "simulate",
            "request_id",
        ],
    ),
    ("job.plan", &["target", "params", "tenant"]),
    ("job.get", &["job_id"]),
    ("job.items", &["job_id", "activity", "offset", "limit"]),
    ("job.list", &["state", "chain", "limit", "before"]),
    ("job.cancel", &["job_ids"]),
    ("job.retry", &["job_id", "from_start"]),
    (
        "job.logs",
        &["job_id", "activity", "attempt", "offset", "max_bytes"],
    ),
    (
        "job.follow_logs",
        &["job_id", "activity", "attempt", "offset"],
    ),
    ("job.watch", &["job_id"]),
    ("workflow.list", &[]),
    ("workflow.get", &["name"]),
    ("rpc.discover", &[]),
    ("schedule.list", &[]),
    ("schedule.pause", &["name"]),
    ("schedule.resume", &["name"]),
    ("schedule.trigger", &["name"]),
    ("tenant.list", &[]),
    ("audit.list", &["limit", "before"]),
    ("config.reload", &[]),
    ("store.backup", &[]),
    ("connection.list", &[]),
    (
        "events.subscribe",
        &["since", "chain", "tenant", "kinds", "states", "follow"],
    ),
    ("notification.list", &["failed", "limit"]),
    ("notification.retry", &["id"]),
];

#[test]
fn rpc_discover_describes_every_method_and_parameter_the_daemon_answers() {
    let daemon = TestDaemon::start(&[("discovered.toml", DISCOVERED)]);
    let doc = discover(&daemon);
    let described = discovered_methods(&doc);
    let mut problems = Vec::new();
    for (name, params) in API_METHODS {
        // The daemon answers the method over HTTP (subscriptions need a
        // WebSocket).
        if !matches!(
            *name,
            "job.watch" | "job.follow_logs" | "store.backup" | "events.subscribe"
        ) {
            let answer = rpc_call(daemon.socket(), name, json!({}));
            assert_ne!(answer["error"]["code"], -32601, "{name}: {answer}");
        }
        match described.get(*name) {
            None => problems.push(format!("{name} is not described")),
            Some(listed) => {
                for param in *params {
                    if !listed.contains(*param) {
                        problems.push(format!("{name} does not describe its parameter {param}"));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "rpc.discover is incomplete:\n  {}",
        problems.join("\n  ")
    );
}
