//! Tests of chain file parsing and validation.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::cron::{CatchUp, CronRule, Overlap};
use crate::model::{Foreach, Mode, OnFailure, Program, Schedule};

/// The example of DESIGN.md's "Workflow file" section.
const DESIGN_EXAMPLE: &str = r#"# workflows.d/nightly-etl.toml
[chain]
description = "Nightly warehouse load"
max_parallel = 4            # activities of one job running at once
concurrency = 1             # jobs of this chain running at once; more wait in the queue
timeout = "2h"              # whole job

[params.date]
type = "date"
required = true
description = "Business date to load"

[params.mode]
type = "string"
enum = ["full", "incremental"]
default = "incremental"

[defaults]
timeout = "30m"
retries = 3
retry_delay = "5s"
retry_backoff = 2.0
on_failure = "fail"
env = { PGHOST = "db1" }

[schedule.nightly]
cron = "0 4 * * *"
timezone = "America/Bogota"
params = { mode = "full" }
tenants = ["afinia", "air-e"]
catch_up = "latest"
overlap = "skip"

[process.extract]
mode = "parallel"

[process.extract.activity.orders]
command = ["python3", "/opt/etl/extract.py", "--source", "oro", "--date", "{{ params.date }}"]

[process.extract.activity.csv]
shell = "cp /srv/in/*.csv /srv/stage/"
timeout = "5m"

[process.load]
after = ["extract"]
mode = "serial"

[process.load.activity.facts]
command = ["/opt/etl/load", "--rows-from", "{{ outputs.extract.orders.rows }}"]
memory_max = "512M"
"#;

fn parse(source: &str) -> Result<Chain, Vec<LoadError>> {
    parse_chain(Path::new("/etc/holdfast/workflows.d/test.toml"), source)
}

/// The errors as `line:column: message`, for exact comparisons.
fn errors(source: &str) -> Vec<String> {
    parse(source)
        .map(|_| ())
        .unwrap_err()
        .into_iter()
        .map(|e| {
            assert_eq!(e.file, "/etc/holdfast/workflows.d/test.toml");
            match (e.line, e.column) {
                (Some(line), Some(column)) => format!("{line}:{column}: {}", e.message),
                _ => format!("-: {}", e.message),
            }
        })
        .collect()
}

fn one_error(source: &str) -> String {
    let mut all = errors(source);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

/// A minimal valid body to append processes to.
const PROCESS: &str = "[process.p.activity.a]\ncommand = [\"true\"]\n";

#[test]
fn design_example_parses_with_defaults_applied() {
    let chain = parse_chain(
        Path::new("/etc/holdfast/workflows.d/nightly-etl.toml"),
        DESIGN_EXAMPLE,
    )
    .unwrap();
    assert_eq!(chain.name, "nightly-etl");
    assert_eq!(chain.description.as_deref(), Some("Nightly warehouse load"));
    assert_eq!(chain.max_parallel, Some(4));
    assert_eq!(chain.concurrency, Some(1));
    assert_eq!(chain.timeout, Some(Duration::from_secs(7200)));
    assert_eq!(chain.source, DESIGN_EXAMPLE);
    assert_eq!(chain.version.len(), 64);
    assert!(
        chain
            .version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );

    assert_eq!(chain.params.keys().collect::<Vec<_>>(), ["date", "mode"]);
    let date = &chain.params["date"];
    assert_eq!(date.kind, ParamKind::Date);
    assert!(date.required);
    assert_eq!(date.description.as_deref(), Some("Business date to load"));
    let mode = &chain.params["mode"];
    assert_eq!(mode.default, Some(json!("incremental")));
    assert_eq!(
        mode.allowed,
        Some(vec![json!("full"), json!("incremental")])
    );

    let names: Vec<(&str, Mode, &[usize])> = chain
        .processes
        .iter()
        .map(|p| (p.name.as_str(), p.mode, p.activities.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("extract", Mode::Parallel, &[0, 1][..]),
            ("load", Mode::Serial, &[2][..])
        ]
    );
    assert_eq!(chain.processes[1].after, ["extract"]);

    let paths: Vec<&str> = chain.activities.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "nightly-etl.extract.orders",
            "nightly-etl.extract.csv",
            "nightly-etl.load.facts"
        ]
    );
    let [orders, csv, facts] = &chain.activities[..] else {
        panic!("three activities expected");
    };
    assert_eq!(orders.process_index, 0);
    assert_eq!(facts.process_index, 1);
    assert_eq!(
        orders.program,
        Program::Command(
            [
                "python3",
                "/opt/etl/extract.py",
                "--source",
                "oro",
                "--date",
                "{{ params.date }}"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    assert_eq!(
        csv.program,
        Program::Shell("cp /srv/in/*.csv /srv/stage/".to_string())
    );
    assert_eq!(orders.timeout, Some(Duration::from_secs(1800)));
    assert_eq!(csv.timeout, Some(Duration::from_secs(300)));
    for activity in &chain.activities {
        assert_eq!(activity.retries, 3);
        assert_eq!(activity.retry_delay, Duration::from_secs(5));
        assert_eq!(activity.retry_backoff, 2.0);
        assert_eq!(activity.max_retry_delay, None);
        assert_eq!(activity.on_failure, OnFailure::Fail);
        assert_eq!(activity.env.get("PGHOST").map(String::as_str), Some("db1"));
        assert_eq!(activity.working_dir, None);
    }
    assert_eq!(orders.memory_max, None);
    assert_eq!(facts.memory_max, Some(512 * 1024 * 1024));

    assert!(orders.deps.is_empty());
    assert!(csv.deps.is_empty());
    assert_eq!(facts.deps, [0, 1]);
    assert!(orders.output_refs.is_empty());
    assert_eq!(facts.output_refs, [0]);

    assert_eq!(
        chain.schedules,
        [Schedule {
            name: "nightly".to_string(),
            rule: CronRule::parse("0 4 * * *", Some("America/Bogota")).unwrap(),
            timezone: Some("America/Bogota".to_string()),
            params: json!({"mode": "full"}).as_object().unwrap().clone(),
            tenants: vec!["afinia".to_string(), "air-e".to_string()],
            catch_up: CatchUp::Latest,
            max_catch_up: 10,
            overlap: Overlap::Skip,
            enabled: true,
        }]
    );
    let schedule = &chain.schedules[0];
    assert_eq!(schedule.cron(), "0 4 * * *");
    assert_eq!(schedule.rule.zone_name(), "America/Bogota");
}

#[test]
fn processes_and_activities_keep_file_order() {
    let chain = parse(
        r#"
[process.zeta.activity.second]
command = ["true"]
[process.zeta.activity.first]
command = ["true"]
[process.alpha]
mode = "parallel"
[process.alpha.activity.b]
command = ["true"]
[process.alpha.activity.a]
command = ["true"]
[process.alpha.activity.c]
command = ["true"]
[process.mid.activity.only]
shell = "true"
"#,
    )
    .unwrap();
    let processes: Vec<&str> = chain.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(processes, ["zeta", "alpha", "mid"]);
    let activities: Vec<&str> = chain.activities.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(activities, ["second", "first", "b", "a", "c", "only"]);
    assert_eq!(chain.processes[1].activities, [2, 3, 4]);
    // Serial: each waits for the one before; parallel and unrelated: none.
    let deps: Vec<&[usize]> = chain.activities.iter().map(|a| a.deps.as_slice()).collect();
    assert_eq!(deps, [&[][..], &[0], &[], &[], &[], &[]]);
    // Defaults without [defaults].
    let a = &chain.activities[0];
    assert_eq!(a.retries, 0);
    assert_eq!(a.retry_delay, Duration::from_secs(1));
    assert_eq!(a.retry_backoff, 1.0);
    assert_eq!(a.timeout, None);
    assert_eq!(chain.name, "test");
}

#[test]
fn deps_are_direct_after_plus_serial_predecessor() {
    let chain = parse(
        r#"
[process.a.activity.one]
command = ["true"]
[process.a.activity.two]
command = ["true"]
[process.b]
after = ["a"]
[process.b.activity.one]
command = ["true"]
[process.b.activity.two]
command = ["true"]
[process.c]
after = ["b", "a", "b"]
mode = "parallel"
[process.c.activity.one]
command = ["true"]
"#,
    )
    .unwrap();
    let deps: Vec<&[usize]> = chain.activities.iter().map(|a| a.deps.as_slice()).collect();
    assert_eq!(deps, [&[][..], &[0], &[0, 1], &[0, 1, 2], &[0, 1, 2, 3]]);
}

#[test]
fn unknown_key_has_line_and_column() {
    let source = "[process.p]\nmode = \"serial\"\n  bogus = 1\n[process.p.activity.a]\ncommand = [\"true\"]\n";
    assert_eq!(
        one_error(source),
        "3:3: unknown key `bogus`, expected one of `mode`, `after`, `description`, `activity`"
    );
    let source = "[process.p.activity.a]\ncommand = [\"true\"]\nretry = 2\n";
    assert_eq!(
        one_error(source),
        "3:1: unknown key `retry`, expected one of `command`, `shell`, `description`, `timeout`, \
         `retries`, `retry_delay`, `retry_backoff`, `max_retry_delay`, `on_failure`, `env`, \
         `working_dir`, `memory_max`, `user`, `group`, `nofile`, `tasks_max`, `cpu_weight`, `cpu_quota`, `connections`, `executor`, `cpus`, `slurm`, `simulate`, `undoes`, `foreach`, `max_parallel`"
    );
    assert_eq!(
        one_error(&format!("{PROCESS}[chains]\nname = \"x\"\n")),
        "3:2: unknown key \"chains\" at the top level; expected [chain], [params.<name>], \
         [defaults], [schedule.<name>], [process.<name>], [handler.<kind>] or [notify.<name>]"
    );
}

#[test]
fn several_shape_errors_are_reported_together() {
    let source = r#"
[params.date]
typ = "date"

[defaults]
retries = "three"

[process.p.activity.a]
command = ["true"]
tiemout = "5m"

[process.q.activity.b]
shell = 5
"#;
    assert_eq!(
        errors(source),
        [
            "3:1: unknown key `typ`, expected one of `type`, `required`, `default`, `enum`, \
             `pattern`, `min`, `max`, `description`, `secret`",
            "6:11: invalid type: string \"three\", expected an integer",
            "10:1: unknown key `tiemout`, expected one of `command`, `shell`, `description`, \
             `timeout`, `retries`, `retry_delay`, `retry_backoff`, `max_retry_delay`, \
             `on_failure`, `env`, `working_dir`, `memory_max`, `user`, `group`, `nofile`, `tasks_max`, \
             `cpu_weight`, `cpu_quota`, `connections`, `executor`, `cpus`, `slurm`, `simulate`, `undoes`, `foreach`, `max_parallel`",
            "13:9: invalid type: integer `5`, expected a string",
        ]
    );
}

#[test]
fn toml_syntax_error_has_position() {
    assert_eq!(
        one_error("[process.p.activity.a]\ncommand = = [\"true\"]\n"),
        "2:11: extra `=`, expected nothing"
    );
}

#[test]
fn bad_names() {
    let source = r#"
[params.Date]
type = "date"
[process.Load.activity.a]
command = ["true"]
[process.p.activity._x]
command = ["true"]
"#;
    let rule = "use lowercase letters, digits, \"_\" and \"-\", starting with a letter or digit";
    assert_eq!(
        errors(source),
        [
            format!("2:9: invalid parameter name \"Date\": {rule}"),
            format!("4:10: invalid process name \"Load\": {rule}"),
            format!("6:21: invalid activity name \"_x\": {rule}"),
        ]
    );
    let e = parse_chain(Path::new("/x/Nightly ETL.toml"), PROCESS).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].line, e[0].column), (None, None));
    assert!(
        e[0].message
            .starts_with("the chain is named after the file, and \"Nightly ETL\"")
    );
    let chain = parse_chain(
        Path::new("/x/Nightly ETL.toml"),
        &format!("[chain]\nname = \"nightly\"\n{PROCESS}"),
    )
    .unwrap();
    assert_eq!(chain.name, "nightly");
    assert_eq!(
        one_error(&format!("[chain]\nname = \"a.b\"\n{PROCESS}")),
        format!("2:8: invalid chain name \"a.b\": {rule}")
    );
}

#[test]
fn after_cycles_are_named() {
    let source = r#"
[process.a]
after = ["c"]
[process.a.activity.x]
command = ["true"]
[process.b]
after = ["a"]
[process.b.activity.x]
command = ["true"]
[process.c]
after = ["b"]
[process.c.activity.x]
command = ["true"]
"#;
    assert_eq!(
        one_error(source),
        "3:9: after forms a cycle: a -> c -> b -> a (each process runs after the next)"
    );
}

#[test]
fn after_must_name_other_existing_processes() {
    let source = r#"
[process.extract.activity.x]
command = ["true"]
[process.load]
after = ["extrac", "load"]
[process.load.activity.x]
command = ["true"]
"#;
    assert_eq!(
        errors(source),
        [
            "5:10: after names unknown process \"extrac\"; processes: extract, load",
            "5:20: process \"load\" cannot run after itself",
        ]
    );
}

#[test]
fn chain_and_processes_need_content() {
    assert_eq!(
        errors("[chain]\ndescription = \"x\"\n"),
        [
            "-: the chain has no process; add a [process.<name>] table with at least one \
          [process.<name>.activity.<name>]"
        ]
    );
    assert_eq!(
        one_error(&format!("{PROCESS}[process.empty]\nmode = \"parallel\"\n")),
        "3:1: process \"empty\" has no activities; add a [process.empty.activity.<name>] table"
    );
}

#[test]
fn programs_need_exactly_one_of_command_and_shell() {
    assert_eq!(
        one_error("[process.p.activity.a]\ncommand = [\"true\"]\nshell = \"true\"\n"),
        "2:11: give either command (an argv) or shell (a script), not both"
    );
    assert_eq!(
        one_error("[process.p.activity.a]\ntimeout = \"5s\"\n"),
        "1:1: the activity has nothing to run; add command (an argv) or shell (a script)"
    );
    assert_eq!(
        one_error("[process.p.activity.a]\ncommand = []\n"),
        "2:11: command is empty; give the program and its arguments, like [\"/usr/bin/env\", \"true\"]"
    );
}

#[test]
fn shell_scripts_cannot_hold_templates() {
    assert_eq!(
        one_error("[process.p.activity.a]\nshell = \"echo {{ params.date }}\"\n"),
        "2:9: shell scripts are not templates, so values are never spliced into them: read \
         parameters from $HF_PARAM_<NAME>, or set a templated value in env and use that variable"
    );
    // `${#x}` is shell syntax, not a template comment.
    parse("[process.p.activity.a]\nshell = 'x=ab; echo ${#x}'\n").unwrap();
}

#[test]
fn templates_must_reference_declared_params() {
    let source = r#"
[params.date]
type = "date"
[params.dry-run]
type = "bool"
[process.p.activity.a]
command = ["run", "{{ params.dat }}", "{{ params.dry-run }}", "{{ params['dry-run'] }}"]
env = { WHO = "{{ job.user }}", WHAT = "{{ thing }}" }
working_dir = "{{ params.date"
"#;
    assert_eq!(
        errors(source),
        [
            "7:19: activity test.p.a: command[1] references unknown parameter \"dat\"; declared: date, dry-run",
            "7:39: activity test.p.a: command[2] references unknown parameter \"dry\"; declared: date, dry-run; a name with \"-\" is written params[\"dry-run\"]",
            "7:39: activity test.p.a: command[2] references unknown variable \"run\"; templates can use params.<name>, job.<field> and outputs.<process>.<activity>.<key>",
            "8:15: activity test.p.a: env.WHO references unknown job field \"user\"; available: id, run_id, chain, target, tenant, attempt",
            "8:40: activity test.p.a: env.WHAT references unknown variable \"thing\"; templates can use params.<name>, job.<field> and outputs.<process>.<activity>.<key>",
            "9:15: activity test.p.a: working_dir is not a valid template: syntax error: unexpected end of input, expected end of variable block",
        ]
    );
    let chain = parse(
        "[process.p.activity.a]\ncommand = [\"{{ job.id }}-{{ job.tenant }}-{{ range(2) | first }}\"]\n",
    )
    .unwrap();
    assert!(chain.activities[0].output_refs.is_empty());
    // Withheld and unknown filters and tests are load errors, not run-time
    // surprises.
    assert_eq!(
        errors(
            "[process.p.activity.a]\ncommand = [\"{{ range(2) | join }}{% if job.id is evenish %}{% endif %}\"]\n"
        ),
        [
            "2:12: activity test.p.a: command[0] uses filter `join`, which is withheld because it \
             expands a whole sequence in one step",
            "2:12: activity test.p.a: command[0] uses test `evenish`, which does not exist",
        ]
    );
}

#[test]
fn templates_may_only_read_upstream_outputs() {
    let source = r#"
[process.extract]
mode = "parallel"
[process.extract.activity.orders]
command = ["true"]
[process.extract.activity.csv]
command = ["x", "{{ outputs.extract.orders.rows }}"]
[process.load.activity.facts]
command = ["x", "{{ outputs.extract.orders.rows }}", "{{ outputs.report.mail.id }}", "{{ outputs.extract }}"]
[process.report]
after = ["load"]
[process.report.activity.mail]
command = ["x", "{{ outputs.load.facts.n }}", "{{ outputs.extract.csv.n }}"]
"#;
    assert_eq!(
        errors(source),
        [
            "7:17: activity test.extract.csv: command[1] references outputs of extract.orders, which does not run before it; only earlier activities of a serial process run before it",
            "9:17: activity test.load.facts: command[1] references outputs of extract.orders, which does not run before it; list its process in this process's after",
            "9:54: activity test.load.facts: command[2] references outputs of report.mail, which does not run before it; list its process in this process's after",
            "9:86: activity test.load.facts: command[3] references outputs.extract without naming an activity; write outputs.<process>.<activity>.<key>",
            "13:47: activity test.report.mail: command[2] references outputs of extract.csv, which does not run before it; list its process in this process's after",
        ]
    );
}

#[test]
fn output_refs_follow_transitive_upstream() {
    let source = r#"
[process.extract.activity.orders]
command = ["true"]
[process.load]
after = ["extract"]
[process.load.activity.facts]
command = ["true"]
[process.load.activity.check]
command = ["x", "{{ outputs.load.facts.n }}"]
[process.report]
after = ["load"]
[process.report.activity.mail]
command = ["x", "{{ outputs.extract.orders.rows }}", "{{ outputs.load.facts.n | int }}"]
env = { ROWS = "{{ outputs.extract.orders.rows }}" }
"#;
    let chain = parse(source).unwrap();
    assert_eq!(chain.activities[2].output_refs, [1]);
    assert_eq!(chain.activities[3].output_refs, [0, 1]);
    assert_eq!(
        one_error(&format!(
            "{PROCESS}[process.q.activity.b]\ncommand = [\"{{{{ outputs.p.nope.x }}}}\"]\n"
        )),
        "4:12: activity test.q.b: command[0] references outputs of p.nope, but the chain has no such activity"
    );
}

#[test]
fn defaults_templates_are_checked_once_and_cannot_read_outputs() {
    let source = r#"
[defaults]
env = { DAY = "{{ params.day }}", ROWS = "{{ outputs.p.a.rows }}" }
[process.p.activity.a]
command = ["true"]
[process.p.activity.b]
command = ["true"]
"#;
    assert_eq!(
        errors(source),
        [
            "3:15: [defaults]: env.DAY references unknown parameter \"day\"; the chain declares no parameters",
            "3:42: [defaults]: env.ROWS references outputs of p.a, but [defaults] apply to every activity; set this on the activities that run after it",
        ]
    );
}

#[test]
fn env_is_merged_over_defaults() {
    let source = r#"
[defaults]
env = { A = "1", B = "2" }
working_dir = "/srv"
[process.p.activity.a]
command = ["true"]
env = { B = "override", C = "3" }
working_dir = "/tmp/{{ job.id }}"
[process.p.activity.b]
command = ["true"]
"#;
    let chain = parse(source).unwrap();
    let env = |i: usize| -> Vec<(String, String)> {
        chain.activities[i]
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        env(0),
        [pair("A", "1"), pair("B", "override"), pair("C", "3")]
    );
    assert_eq!(env(1), [pair("A", "1"), pair("B", "2")]);
    assert_eq!(
        chain.activities[0].working_dir.as_deref(),
        Some("/tmp/{{ job.id }}")
    );
    assert_eq!(chain.activities[1].working_dir.as_deref(), Some("/srv"));
    assert_eq!(
        one_error(&format!("{PROCESS}env = {{ HF_JOB_ID = \"1\" }}\n")),
        "3:9: env name \"HF_JOB_ID\" is reserved: the daemon sets the HF_ variables itself"
    );
}

#[test]
fn settings_values_are_checked() {
    let source = r#"
[chain]
max_parallel = 0
timeout = "soon"
[defaults]
retries = -1
retry_backoff = 0.5
on_failure = "ignore"
memory_max = "1.5G"
timeout = "0s"
[process.p.activity.a]
command = ["true"]
retry_delay = "2h 30m"
max_retry_delay = "10x"
"#;
    assert_eq!(
        errors(source),
        [
            "3:16: max_parallel must be at least 1; got 0",
            "4:11: timeout: invalid duration \"soon\" (expected number at 0); write it like \"30s\", \"5m\", \"2h\" or \"1h 30m\"",
            "6:11: retries must be a whole number from 0 to 4294967295; got -1",
            "7:17: retry_backoff must be a number of at least 1.0; got 0.5",
            "8:14: on_failure must be \"fail\" or \"continue\"; got \"ignore\"",
            "9:14: memory_max: invalid size \"1.5G\"; write bytes, or a number with K, M, G or T (powers of 1024) like \"512M\" or \"2GiB\"",
            "10:11: timeout must be longer than 0s",
            "14:19: max_retry_delay: invalid duration \"10x\" (unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like \"30s\", \"5m\", \"2h\" or \"1h 30m\"",
        ]
    );
    let chain = parse(&format!(
        "[defaults]\nretry_delay = \"1h 30m\"\nmemory_max = 1048576\nmax_retry_delay = \"10m\"\non_failure = \"continue\"\n{PROCESS}"
    ))
    .unwrap();
    let a = &chain.activities[0];
    assert_eq!(a.retry_delay, Duration::from_secs(5400));
    assert_eq!(a.memory_max, Some(1 << 20));
    assert_eq!(a.max_retry_delay, Some(Duration::from_secs(600)));
    assert_eq!(a.on_failure, OnFailure::Continue);
}

#[test]
fn cpu_quota_is_a_percentage() {
    let chain = parse(&format!(
        "[defaults]\ncpu_quota = \"150%\"\nmemory_max = \"64mib\"\n{PROCESS}"
    ))
    .unwrap();
    assert_eq!(chain.activities[0].cpu_quota, Some(150));
    assert_eq!(chain.activities[0].memory_max, Some(64 << 20));
    for bad in ["150", "0%", "1.5%", "x%", "200000%"] {
        assert_eq!(
            one_error(&format!("[defaults]\ncpu_quota = \"{bad}\"\n{PROCESS}")),
            format!(
                "2:13: cpu_quota must be a percentage of one CPU from 1% to 100000%, like \"50%\" \
                 or \"200%\"; got \"{bad}\""
            ),
            "{bad}"
        );
    }
}

#[test]
fn slurm_keys_merge_over_defaults_and_are_checked() {
    let chain = parse(
        "[defaults]\nexecutor = \"slurm\"\ncpus = 2\n\
         [defaults.slurm]\npartition = \"batch\"\nsbatch_args = [\"--nice=5\"]\n\
         [process.p.activity.a]\ncommand = [\"true\"]\n\
         [process.p.activity.a.slurm]\naccount = \"ops\"\n\
         [process.p.activity.b]\ncommand = [\"true\"]\nexecutor = \"local\"\n",
    )
    .unwrap();
    let a = &chain.activities[0];
    assert_eq!(a.executor, crate::model::Executor::Slurm);
    assert_eq!(a.cpus, Some(2));
    assert_eq!(a.slurm.partition.as_deref(), Some("batch"));
    assert_eq!(a.slurm.account.as_deref(), Some("ops"));
    assert_eq!(a.slurm.sbatch_args, vec!["--nice=5".to_string()]);
    assert_eq!(chain.activities[1].executor, crate::model::Executor::Local);
    assert_eq!(
        one_error(&format!("[defaults]\nexecutor = \"k8s\"\n{PROCESS}")),
        "2:12: executor must be \"local\" or \"slurm\"; got \"k8s\""
    );
    assert_eq!(
        one_error(&format!("[defaults]\ncpus = 0\n{PROCESS}")),
        "2:8: cpus must be a whole number from 1 to 100000; got 0"
    );
}

#[test]
fn param_declarations_are_checked() {
    let source = r#"
[params.a]
type = "text"
[params.b]
type = "int"
default = "5"
[params.c]
type = "date"
default = "2024-02-30"
[params.d]
type = "string"
enum = ["x", 1]
default = "z"
[params.e]
type = "int"
pattern = "[0-9]+"
[params.f]
type = "string"
pattern = "("
[params.g]
type = "string"
enum = []
[params.h]
type = "string"
pattern = "[a-z]+"
enum = ["ok", "NO"]
"#;
    assert_eq!(
        errors(&format!("{source}{PROCESS}")),
        [
            "3:8: unknown parameter type \"text\"; use string, int, float, bool, date, datetime or json",
            "6:11: default: expected an integer, got \"5\"",
            "9:11: default: expected a date YYYY-MM-DD, got \"2024-02-30\"",
            "12:14: enum value: expected a string, got 1",
            "13:11: default: must be one of \"x\"; got \"z\"",
            "16:11: pattern applies to string parameters only; e is int",
            "19:11: invalid pattern: found open group without closing ')'",
            "22:8: enum must list at least one value",
            "26:15: enum value: must match the pattern \"[a-z]+\"; got \"NO\"",
        ]
    );
}

#[test]
fn param_values_of_every_type_in_files() {
    let source = r#"
[params.s]
type = "string"
default = "x"
[params.i]
type = "int"
default = 5
[params.f]
type = "float"
default = 2
enum = [1, 2.5, 2]
[params.b]
type = "bool"
default = true
[params.d]
type = "date"
default = 2024-02-29
[params.d2]
type = "date"
default = "2024-02-29"
[params.t]
type = "datetime"
default = 2024-05-01T04:00:00Z
[params.j]
type = "json"
default = { a = [1, "x"] }
"#;
    let chain = parse(&format!("{source}{PROCESS}")).unwrap();
    let defaults: Vec<serde_json::Value> = chain
        .params
        .values()
        .map(|p| p.default.clone().unwrap())
        .collect();
    assert_eq!(
        defaults,
        [
            json!("x"),
            json!(5),
            json!(2.0),
            json!(true),
            json!("2024-02-29"),
            json!("2024-02-29"),
            json!("2024-05-01T04:00:00Z"),
            json!({"a": [1, "x"]}),
        ]
    );
    assert_eq!(
        chain.params["f"].allowed,
        Some(vec![json!(1.0), json!(2.5), json!(2.0)])
    );
    assert_eq!(
        one_error(&format!(
            "[params.t]\ntype = \"datetime\"\ndefault = 2024-05-01T04:00:00\n{PROCESS}"
        )),
        "3:11: default: expected an RFC 3339 date-time like 2024-05-01T04:00:00Z, got \"2024-05-01T04:00:00\""
    );
    assert_eq!(
        one_error(&format!(
            "[params.b]\ntype = \"bool\"\ndefault = \"true\"\n{PROCESS}"
        )),
        "3:11: default: expected true or false, got \"true\""
    );
}

#[test]
fn param_names_must_not_share_an_environment_variable() {
    assert_eq!(
        one_error(&format!(
            "[params.dry-run]\ntype = \"bool\"\n[params.dry_run]\ntype = \"bool\"\n{PROCESS}"
        )),
        "3:9: parameters \"dry-run\" and \"dry_run\" would both be passed as HF_PARAM_DRY_RUN; rename one"
    );
}

#[test]
fn schedules_are_checked() {
    let source = r#"
[params.date]
type = "date"
required = true
[params.n]
type = "int"
[schedule.daily]
cron = "0 4 * * *"
params = { n = "x", zzz = 1 }
catch_up = "sometimes"
overlap = "replace"
[schedule.hourly]
cron = "0 * * * *"
params = { n = "5", date = "2024-01-01" }
enabled = false
[schedule.per-tenant]
cron = "0 * * * *"
tenants = ["air-e"]
"#;
    assert_eq!(
        errors(&format!("{source}{PROCESS}")),
        [
            "7:1: schedule \"daily\" does not give the required parameter \"date\"; add it to params",
            "9:16: parameter \"n\": expected an integer, got \"x\"",
            "9:21: parameter \"zzz\": unknown parameter; declared: date, n",
            "10:12: catch_up must be one of \"none\", \"latest\", \"all\"; got \"sometimes\"",
            "11:11: overlap must be one of \"skip\", \"queue\", \"allow\"; got \"replace\"",
        ]
    );
    let source = source
        .replace("n = \"x\", zzz = 1", "date = \"2024-01-01\"")
        .replace("sometimes", "all")
        .replace("replace", "queue");
    let chain = parse(&format!("{source}{PROCESS}")).unwrap();
    let hourly = &chain.schedules[1];
    assert_eq!(hourly.params["n"], json!(5));
    assert!(!hourly.enabled);
    assert_eq!(hourly.catch_up, CatchUp::Latest);
    assert_eq!(hourly.overlap, Overlap::Skip);
    assert_eq!(hourly.max_catch_up, 10);
    assert_eq!(hourly.timezone, None);
    assert_eq!(hourly.rule.zone_name(), "local");
    assert_eq!(chain.schedules[0].catch_up, CatchUp::All);
    assert_eq!(chain.schedules[0].overlap, Overlap::Queue);
    assert_eq!(chain.schedules[2].tenants, ["air-e"]);
    assert_eq!(
        one_error(&format!("[schedule.x]\ntimezone = \"UTC\"\n{PROCESS}")),
        "1:1: missing key `cron`"
    );
}

#[test]
fn schedule_rules_are_checked_where_they_are_written() {
    // Both the expression and the zone are reported, each at its value.
    assert_eq!(
        errors(&format!(
            "[schedule.x]\ncron = \"0 25 * * *\"\ntimezone = \"Europe/Berlín\"\n{PROCESS}"
        )),
        [
            "2:8: invalid hour field \"25\" in cron expression \"0 25 * * *\": number out of \
             bounds; use 0-23",
            "3:12: unknown time zone \"Europe/Berlín\"; use an IANA name like \"Europe/Berlin\" \
             or \"UTC\"",
        ]
    );
    assert_eq!(
        one_error(&format!("[schedule.x]\ncron = \"\"\n{PROCESS}")),
        "2:8: the cron expression is empty; write 5 fields (minute hour day-of-month month \
         day-of-week) like \"0 4 * * *\""
    );
    assert_eq!(
        one_error(&format!("[schedule.x]\ncron = \"0 4 * *\"\n{PROCESS}")),
        "2:8: cron expression \"0 4 * *\" has 4 fields; write 5 (minute hour day-of-month \
         month day-of-week), or 6 with seconds first"
    );
    assert_eq!(
        one_error(&format!(
            "[schedule.x]\ncron = \"0 4 * * *\"\ntimezone = \"america/bogota\"\n{PROCESS}"
        )),
        "3:12: unknown time zone \"america/bogota\"; did you mean \"America/Bogota\"?"
    );
    assert_eq!(
        one_error(&format!("[schedule.x]\ncron = \"0 0 30 2 *\"\n{PROCESS}")),
        "2:8: cron expression \"0 0 30 2 *\" never fires: no date matches its day-of-month, \
         month and day-of-week fields"
    );
    let chain = parse(&format!(
        "[schedule.x]\ncron = \"*/10 0 4 * * MON-FRI\"\ntimezone = \"Asia/Tokyo\"\n{PROCESS}"
    ))
    .unwrap();
    let rule = &chain.schedules[0].rule;
    assert_eq!(rule.expression(), "*/10 0 4 * * MON-FRI");
    assert_eq!(rule.zone_name(), "Asia/Tokyo");
}

#[test]
fn max_catch_up_is_at_least_one() {
    let schedule = |value: &str| {
        format!(
            "[schedule.x]\ncron = \"@daily\"\ncatch_up = \"all\"\nmax_catch_up = {value}\n{PROCESS}"
        )
    };
    let chain = parse(&schedule("3")).unwrap();
    assert_eq!(chain.schedules[0].max_catch_up, 3);
    assert_eq!(
        one_error(&schedule("0")),
        "4:16: max_catch_up must be at least 1; got 0"
    );
    assert_eq!(
        one_error(&schedule("\"3\"")),
        "4:16: invalid type: string \"3\", expected an integer"
    );
}

#[test]
fn load_file_reads_or_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daily.toml");
    fs::write(&path, PROCESS).unwrap();
    let chain = load_file(&path).unwrap();
    assert_eq!(chain.name, "daily");
    assert_eq!(chain.file, path);

    let missing = dir.path().join("missing.toml");
    let errors = load_file(&missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, missing.display().to_string());
    assert_eq!((errors[0].line, errors[0].column), (None, None));
    assert!(
        errors[0].message.starts_with("cannot read the file: "),
        "{}",
        errors[0].message
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_column("aé\nxé y", "aé\nxé ".len()), (2, 4));
    assert_eq!(line_column("abc", 0), (1, 1));
    assert_eq!(line_column("abc\n", 99), (2, 1));
    // An offset inside a character is moved back to its start.
    assert_eq!(line_column("é", 1), (1, 1));
    assert_eq!(
        one_error("# é\n[process.p.activity.a]\ncommand = [\"true\"]\n  \"é\" = 1\n"),
        "4:3: unknown key `é`, expected one of `command`, `shell`, `description`, `timeout`, \
         `retries`, `retry_delay`, `retry_backoff`, `max_retry_delay`, `on_failure`, `env`, \
         `working_dir`, `memory_max`, `user`, `group`, `nofile`, `tasks_max`, `cpu_weight`, `cpu_quota`, `connections`, `executor`, `cpus`, `slurm`, `simulate`, `undoes`, `foreach`, `max_parallel`"
    );
}

#[test]
fn workflow_file_names() {
    for good in ["nightly.toml", "a-b_c.toml", "X.toml"] {
        assert!(is_workflow_file_name(good), "{good}");
    }
    for bad in [
        ".toml",
        ".hidden.toml",
        "nightly.toml~",
        ".nightly.toml.swp",
        "#nightly.toml#",
        "nightly.toml.dpkg-new",
        "nightly.dpkg-dist.toml",
        "nightly.ucf-old.toml",
        "nightly.toml.tmp",
        "nightly.yaml",
        "nightly",
    ] {
        assert!(!is_workflow_file_name(bad), "{bad}");
    }
}

#[test]
fn names() {
    for good in ["a", "0", "nightly-etl", "a_b-9"] {
        assert!(valid_name(good), "{good}");
    }
    for bad in ["", "-a", "_a", "A", "a.b", "a b", "é"] {
        assert!(!valid_name(bad), "{bad}");
    }
}

#[test]
fn sections_must_be_tables() {
    assert_eq!(
        errors("[process.p]\nactivity = 5\n[defaults]\nenv = 3\n"),
        [
            "2:12: process.p.activity must hold named tables, like [process.p.activity.<name>]",
            "4:7: invalid type: integer `3`, expected a table",
        ]
    );
    assert_eq!(
        one_error(&format!("chain = 1\n{PROCESS}")),
        "1:9: invalid type: integer `1`, expected a table"
    );
}

#[test]
fn secret_params_never_reach_argv_or_working_dir() {
    let source = r#"
[params.db_password]
type = "string"
secret = true
[params.token]
type = "string"
secret = true
default = "abc"
[process.p.activity.a]
command = ["load", "--password={{ params.db_password }}", "{{ params['db_password'] }}", "{{ params | tojson }}"]
env = { PGPASSWORD = "{{ params.db_password }}" }
working_dir = "/srv/{{ params.db_password }}"
"#;
    let found = errors(source);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(
        found[0].starts_with("8:11: token is secret, so it has no default"),
        "{found:#?}"
    );
    for (error, field) in
        found[1..]
            .iter()
            .zip(["command[1]", "command[2]", "command[3]", "working_dir"])
    {
        assert!(
            error.contains(&format!("activity test.p.a: {field} would show"))
                && error.contains("secrets reach an activity only through its environment"),
            "{field}: {found:#?}"
        );
    }
    assert!(
        found[3].contains("every parameter, and \"db_password\" is secret"),
        "{found:#?}"
    );

    // Through env only, it loads, and the spec says it is secret.
    let chain = parse(
        r#"
[params.db_password]
type = "string"
secret = true
[process.p.activity.a]
command = ["load", "--host={{ params.host }}"]
env = { PGPASSWORD = "{{ params.db_password }}" }
[params.host]
type = "string"
default = "db1"
"#,
    )
    .expect("a secret used through env loads");
    assert!(chain.params["db_password"].secret);
    assert!(!chain.params["host"].secret);
}

#[test]
fn a_refused_secret_is_not_quoted() {
    let chain = parse(
        r#"
[params.pin]
type = "string"
enum = ["1111", "2222"]
secret = true
[params.code]
type = "string"
pattern = "[A-Z]+"
secret = true
[process.p.activity.a]
shell = "true"
"#,
    )
    .expect("loads");
    let submitted: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"pin": "REALKEY-123", "code": "REALKEY-456"}"#).expect("json");
    let errors = params::resolve_params(&chain, &submitted).expect_err("refused");
    let text = format!("{errors:?}");
    assert!(!text.contains("REALKEY"), "{text}");
    assert!(
        text.contains("must be one of \\\"1111\\\", \\\"2222\\\"; got ***"),
        "{text}"
    );
    assert!(
        text.contains("must match the pattern \\\"[A-Z]+\\\"; got ***"),
        "{text}"
    );

    let good: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"pin": "2222", "code": "ABC"}"#).expect("json");
    let resolved = params::resolve_params(&chain, &good).expect("accepted");
    let shown = params::masked(&chain, &resolved);
    assert_eq!(shown["pin"], "***");
    assert_eq!(shown["code"], "***");
    assert_eq!(
        params::secret_values(&chain, &resolved, &Default::default()).len(),
        2
    );
}

#[test]
fn a_schedule_cannot_hold_a_secret_value() {
    let source = r#"
[params.pw]
type = "string"
secret = true
[schedule.nightly]
cron = "0 4 * * *"
tenants = ["afinia"]
params = { pw = "in-the-file" }
[process.p.activity.a]
shell = "true"
"#;
    let found = errors(source);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .starts_with("8:17: parameter \"pw\" is secret, so a schedule cannot hold its value"),
        "{found:#?}"
    );
    assert!(!found[0].contains("in-the-file"), "{found:#?}");
}

#[test]
fn connections_come_from_defaults_unless_the_activity_names_its_own() {
    let source = "[defaults]\nconnections = [\"erp\"]\n\
                  [process.p.activity.a]\ncommand = [\"true\"]\n\
                  [process.p.activity.b]\ncommand = [\"true\"]\nconnections = [\"crm\", \"erp\"]\n";
    let chain = parse_chain(Path::new("c.toml"), source).expect("the chain parses");
    assert_eq!(chain.activities[0].connections, ["erp"]);
    assert_eq!(chain.activities[1].connections, ["crm", "erp"]);
    assert_eq!(
        errors("[process.p.activity.a]\ncommand = [\"true\"]\nconnections = [\"ERP\"]\n"),
        [
            "3:16: invalid connection name \"ERP\": use lowercase letters, digits, \"_\" and \"-\", \
          starting with a letter or digit"
        ]
    );
}

const WITH_HANDLERS: &str = r#"
[process.load.activity.facts]
command = ["true"]

[process.upload]
after = ["load"]

[process.upload.activity.send]
command = ["true"]

[handler.on_failure.activity.rollback]
command = ["echo", "{{ job.state }}", "{{ job.failed | tojson }}", "{{ outputs.load.facts.rows | default(0) }}"]
undoes = ["load.facts", "upload"]

[handler.on_exit.activity.note]
command = ["true"]
"#;

#[test]
fn handlers_are_processes_that_see_the_outcome_and_undo() {
    let chain = parse(WITH_HANDLERS).unwrap();
    let rollback = chain.activity("on_failure", "rollback").unwrap();
    assert_eq!(rollback.handler, Some(crate::model::HandlerKind::OnFailure));
    assert_eq!(rollback.path, "test.on_failure.rollback");
    assert!(rollback.deps.is_empty(), "a handler waits for no process");
    let undone: Vec<&str> = (rollback.undoes.iter())
        .map(|&i| chain.activities[i].path.as_str())
        .collect();
    assert_eq!(undone, ["test.load.facts", "test.upload.send"]);
    let exit = chain.process("on_exit").unwrap();
    assert_eq!(exit.handler, Some(crate::model::HandlerKind::OnExit));
}

#[test]
fn handler_mistakes_are_located() {
    let source = r#"
[process.load.activity.facts]
command = ["echo", "{{ job.state }}"]
undoes = ["load"]

[process.on_exit.activity.x]
command = ["true"]

[handler.on_error.activity.x]
command = ["true"]

[handler.on_failure]
after = ["load"]

[handler.on_failure.activity.rollback]
command = ["true"]
undoes = ["lod.facts"]
"#;
    let errors = errors(source);
    let expected = [
        "3:20: activity test.load.facts: command[1] references job.state, which only handlers ([handler.<kind>]) see: the job has no outcome before they run",
        "4:10: undoes belongs to handler activities ([handler.<kind>.activity.<name>]); remove it",
        "6:10: process name \"on_exit\" is kept for [handler.on_exit]; rename the process",
        "9:10: unknown handler \"on_error\"; handlers are on_failure, on_success, on_cancel, on_exit",
        "13:9: a handler runs once the whole job is done, so it takes no after; remove it",
        "17:11: activity test.on_failure.rollback: undoes names \"lod.facts\", which is no process or process.activity of the chain; processes: load, on_exit",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e == want),
            "missing {want:?} in {errors:#?}"
        );
    }
}

#[test]
fn foreach_takes_a_list_template_or_count_and_chunk_size() {
    let chain = parse(
        r#"
[params.rows]
type = "int"

[process.split.activity.plan]
command = ["plan"]

[process.load]
after = ["split"]

[process.load.activity.list]
foreach = "{{ outputs.split.plan.chunks }}"
max_parallel = 4
command = ["w", "{{ item.start }}"]

[process.load.activity.chunks]
foreach = { count = "{{ params.rows }}", chunk_size = 1000 }
command = ["w", "{{ item.index }}"]
"#,
    )
    .unwrap();
    let list = chain.activity("load", "list").unwrap();
    assert_eq!(
        list.foreach,
        Some(Foreach::List("{{ outputs.split.plan.chunks }}".into()))
    );
    assert_eq!(list.max_parallel, Some(4));
    // The foreach template's outputs count as the activity's references.
    assert_eq!(list.output_refs, [0]);
    let chunks = chain.activity("load", "chunks").unwrap();
    assert_eq!(
        chunks.foreach,
        Some(Foreach::Chunks {
            count: "{{ params.rows }}".into(),
            chunk_size: 1000
        })
    );
    assert_eq!(chunks.max_parallel, None);
}

#[test]
fn foreach_mistakes_are_load_errors() {
    let all = errors(
        r#"
[process.p.activity.a]
command = ["w", "{{ item }}"]

[process.p.activity.b]
command = ["w"]
max_parallel = 2

[process.p.activity.c]
foreach = 5
command = ["w"]

[process.p.activity.d]
foreach = { count = 10, chunk_size = 0 }
command = ["w"]

[process.p.activity.e]
foreach = "[1, 2]"
max_parallel = 0
command = ["w"]
"#,
    );
    let joined = all.join("\n");
    for expected in [
        "item, which only an activity with foreach (a fan-out) sees",
        "max_parallel on an activity bounds the items of its foreach",
        "foreach takes a template of a JSON array",
        "foreach.chunk_size must be a whole number, at least 1",
        "max_parallel must be at least 1; got 0",
    ] {
        assert!(joined.contains(expected), "{expected:?} not in:\n{joined}");
    }
    assert_eq!(all.len(), 5, "{joined}");
}

#[test]
fn notify_rules_parse_with_the_chains_default_user() {
    let chain = parse(&format!(
        "[defaults]\nuser = \"etl\"\n{PROCESS}\n[notify.pager]\non = [\"job.failed\"]\n\
         exec = [\"/usr/local/bin/page\"]\ncoalesce = \"5m\"\n"
    ))
    .unwrap();
    let rule = &chain.notify[0];
    assert_eq!(rule.name, "pager");
    assert_eq!((rule.line, rule.column), (6, 9));
    assert_eq!(rule.on, ["job.failed"]);
    assert_eq!(
        rule.exec.as_deref(),
        Some(&["/usr/local/bin/page".to_string()][..])
    );
    assert_eq!(rule.coalesce, Some(Duration::from_secs(300)));
    assert_eq!(rule.user.as_deref(), Some("etl"));
}

#[test]
fn notify_rules_refuse_chains_unknown_kinds_and_missing_targets() {
    let all = errors(&format!(
        "{PROCESS}[notify.a]\non = [\"job.failed\"]\nchains = [\"x\"]\nexec = [\"/bin/true\"]\n\
         [notify.b]\non = [\"job.exploded\"]\n[notify.c]\non = [\"job.failed\"]\nretry_delay = \"soon\"\n\
         webhook = {{ url = \"http://h/\" }}\nmail = {{ to = [\"a@b\"] }}\n"
    ));
    assert_eq!(all.len(), 5, "{all:#?}");
    assert!(
        all[0].starts_with("5:10: notify.a: chains: a chain file's rule sees only"),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("7:9: notify.b: give `webhook`"),
        "{all:#?}"
    );
    assert!(
        all[2].starts_with("8:7: notify.b: on: unknown event kind \"job.exploded\""),
        "{all:#?}"
    );
    assert!(all[3].starts_with("9:9: notify.c: give one of"), "{all:#?}");
    assert!(
        all[4].starts_with("11:15: notify.c: retry_delay"),
        "{all:#?}"
    );
}
