//! The rendering rules and the bounds of one render, against a fixed context.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::OnFailure;
use indexmap::IndexMap;
use serde_json::json;
use std::time::Duration;

fn ctx() -> RenderContext {
    let Value::Object(params) =
        json!({"date": "2024-05-01", "count": 5, "tags": ["a", "b"], "note": null})
    else {
        unreachable!()
    };
    let Value::Object(outputs) =
        json!({"extract": {"orders": {"rows": 1250, "stats": {"min": 1}}}})
    else {
        unreachable!()
    };
    RenderContext {
        params,
        job: JobContext {
            id: 42,
            run_id: 42,
            chain: "nightly-etl".to_string(),
            target: "nightly-etl".to_string(),
            tenant: None,
            attempt: 2,
            outcome: None,
        },
        outputs,
        secret_dir: None,
        item: None,
        schedule: None,
    }
}

fn activity(program: Program) -> Activity {
    Activity {
        process: "load".to_string(),
        name: "facts".to_string(),
        path: "nightly-etl.load.facts".to_string(),
        process_index: 1,
        program,
        env: IndexMap::new(),
        working_dir: None,
        timeout: None,
        retries: 0,
        retry_delay: Duration::from_secs(1),
        retry_backoff: 1.0,
        max_retry_delay: None,
        on_failure: OnFailure::Fail,
        memory_max: None,
        executor: crate::model::Executor::Local,
        cpus: None,
        slurm: crate::model::SlurmOptions::default(),
        deps: vec![0],
        output_refs: vec![0],
        secret_files: Vec::new(),
        simulate: None,
        handler: None,
        undoes: Vec::new(),
        foreach: None,
        max_parallel: None,
        user: None,
        group: None,
        nofile: None,
        tasks_max: None,
        cpu_weight: None,
        cpu_quota: None,
        connections: Vec::new(),
    }
}

#[test]
fn renders_params_job_and_outputs() {
    let ctx = ctx();
    assert_eq!(
        render("--date={{ params.date }}", &ctx).unwrap(),
        "--date=2024-05-01"
    );
    assert_eq!(
        render(
            "{{ job.id }}/{{ job.chain }}/{{ job.attempt }}/[{{ job.tenant }}]",
            &ctx
        )
        .unwrap(),
        "42/nightly-etl/2/[]"
    );
    assert_eq!(
        render("{{ outputs.extract.orders.rows }}", &ctx).unwrap(),
        "1250"
    );
    assert_eq!(render("{{ params.tags }}", &ctx).unwrap(), r#"["a","b"]"#);
    assert_eq!(render("{{ params.note }}", &ctx).unwrap(), "");
    assert_eq!(render("{{ params.count + 2 }}", &ctx).unwrap(), "7");
    // `*` repeats lists and strings without bound, so it is refused
    // even where both operands are numbers.
    let refused = render("{{ params.count * 2 }}", &ctx)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("the `*` operator"), "{refused}");
    assert_eq!(
        render("{{ outputs.extract.orders | tojson }}", &ctx).unwrap(),
        r#"{"rows":1250,"stats":{"min":1}}"#
    );
    // No escaping: these values go to argv, not HTML.
    let mut ctx = ctx;
    ctx.params.insert("q".to_string(), json!("a<b & 'c'"));
    assert_eq!(render("{{ params.q }}", &ctx).unwrap(), "a<b & 'c'");
}

#[test]
fn text_without_syntax_is_returned_as_is() {
    let ctx = ctx();
    assert_eq!(
        render("plain } { text\n", &ctx).unwrap(),
        "plain } { text\n"
    );
    assert_eq!(render("{{ params.date }}\n", &ctx).unwrap(), "2024-05-01\n");
}

#[test]
fn missing_output_key_names_the_activity_and_key() {
    let e = render("{{ outputs.extract.orders.total }}", &ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"outputs.extract.orders.total is not available: extract.orders produced no output "total""#
    );
    let e = render("{{ outputs.extract.csv.rows }}", &ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "outputs.extract.csv.rows is not available: extract.csv produced no output"
    );
    let e = render("{{ outputs.extract.orders.stats.max }}", &ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"outputs.extract.orders.stats.max is not available: output "stats" of extract.orders has no key "max""#
    );
}

#[test]
fn missing_param_and_other_undefined_values() {
    let e = render("{{ params.mode }}", &ctx()).unwrap_err();
    assert!(matches!(&e, TemplateError::MissingParam { name } if name == "mode"));
    let e = render("{{ nothing }}", &ctx()).unwrap_err();
    assert!(matches!(e, TemplateError::Render { .. }), "{e}");
}

#[test]
fn syntax_errors_and_size_limit() {
    let e = render("{{ params.date ", &ctx()).unwrap_err();
    assert!(matches!(e, TemplateError::Syntax { .. }), "{e}");
    let e = render(
        "{% for i in range(3000) %}{{ params.date }}{{ range(150) }}{% endfor %}",
        &ctx(),
    )
    .unwrap_err();
    assert!(
        matches!(e, TemplateError::TooLarge { limit, .. } if limit == MAX_RENDERED_BYTES),
        "{e}"
    );
}

#[test]
fn renders_command_env_and_working_dir() {
    let mut act = activity(Program::Command(vec![
        "/opt/etl/load".to_string(),
        "--rows".to_string(),
        "{{ outputs.extract.orders.rows }}".to_string(),
    ]));
    act.env
        .insert("DAY".to_string(), "{{ params.date }}".to_string());
    act.env.insert("FIXED".to_string(), "x".to_string());
    act.working_dir = Some("/srv/{{ job.id }}".to_string());
    let rendered = render_activity(&act, &ctx()).unwrap();
    assert_eq!(rendered.argv, ["/opt/etl/load", "--rows", "1250"]);
    assert_eq!(
        rendered.env,
        [
            ("DAY".to_string(), "2024-05-01".to_string()),
            ("FIXED".to_string(), "x".to_string())
        ]
    );
    assert_eq!(rendered.working_dir.as_deref(), Some("/srv/42"));
}

#[test]
fn shell_scripts_are_never_rendered() {
    let act = activity(Program::Shell("echo \"$HF_PARAM_DATE\" {{x}}".to_string()));
    let rendered = render_activity(&act, &ctx()).unwrap();
    assert_eq!(
        rendered.argv,
        ["/bin/sh", "-c", "echo \"$HF_PARAM_DATE\" {{x}}"]
    );
}

#[test]
fn references_are_dotted_paths_without_globals() {
    let refs = referenced_variables(
        "{{ params.date }}{% for i in range(2) %}{{ i }}{{ loop.index }}{% endfor %}{{ outputs.a.b.c | default('x') }}",
    )
    .unwrap();
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["outputs.a.b.c", "params.date"]
    );
    assert!(
        referenced_variables("no templates here")
            .unwrap()
            .is_empty()
    );
    assert!(referenced_variables("{% if %}").is_err());
}

#[test]
fn unavailable_filters_and_tests_are_named() {
    assert_eq!(
        unavailable_names("{{ params.xs | join(',') }} {{ params.a|upper }}"),
        ["filter `join`, which is withheld because it expands a whole sequence in one step"]
    );
    assert_eq!(
        unavailable_names("{% if params.a is not frobbed %}x{% endif %}{{ 'a|sort' }}"),
        ["test `frobbed`, which does not exist"]
    );
    assert_eq!(
        unavailable_names("{% filter upperr %}x{% endfilter %}{# |sort #}"),
        ["filter `upperr`, which does not exist"]
    );
    assert!(
        unavailable_names(
            "{{ params.a | default('x') | replace('a', 'b') | tojson }}{% if x is defined %}{% endif %}"
        )
        .is_empty()
    );
    assert!(unavailable_names("a | join, no template syntax").is_empty());
    assert_eq!(
        unavailable_names("{% set x = params.a %}{{ x | center(9) }}"),
        [
            "filter `center`, which is withheld because it can widen a value many times over \
             in one step",
            "`{% set %}`, which is not offered: a bound name can grow at every step",
        ]
    );
}

#[test]
fn runaway_templates_are_stopped() {
    let ctx = RenderContext {
        params: Map::new(),
        job: JobContext {
            id: 1,
            run_id: 1,
            chain: "c".into(),
            target: "c".into(),
            tenant: None,
            attempt: 1,
            outcome: None,
        },
        outputs: Map::new(),
        secret_dir: None,
        item: None,
        schedule: None,
    };
    let started = std::time::Instant::now();
    for template in [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ ([0] * 1000000000000) | list | length }}",
        "{{ ([\"xxxxxxxxxx\"] * 1000000000) | join }}",
        "{{ [0] * 1000000000000 }}",
        // Found by the params fuzz target: a huge lazy sequence forced
        // whole by `~` inside one instruction.
        "{{ ([0] * 1000000000100 ~ 000000000) }}",
        "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ f('x', 40) }}",
        "{% for x in [1] recursive %}{{ loop([x ~ x]) }}{% endfor %}",
        "{{ 'x' | center(100000000000) }}",
        "{{ 'xxxxxxxxxxxxxxxxxxxxxxx' | replace('', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') | replace('', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') | replace('', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') | length }}",
        "{{ '\\\\' | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | tojson | length }}",
    ] {
        assert!(
            render(template, &ctx).is_err(),
            "{template} must not render"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A handler gets every activity of the job in `outputs`, so a key an
/// activity did not produce can fall back to a default.
#[test]
fn a_missing_output_key_can_fall_back_to_a_default() {
    let mut ctx = ctx();
    ctx.outputs
        .insert("load".into(), serde_json::json!({"facts": {}}));
    assert_eq!(
        render("{{ outputs.load.facts.rows | default(0) }}", &ctx).unwrap(),
        "0"
    );
}
