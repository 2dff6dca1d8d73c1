//! Submitted parameters and templates: arbitrary JSON maps checked against a
//! fixed chain that declares every parameter type (with `enum`, `pattern`,
//! defaults and a required one), then arbitrary template text rendered
//! against the result and arbitrary upstream outputs. Nothing may panic,
//! accepted values must have their declared type, and rendered text stays
//! within the documented bound.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Result, Unstructured};
use holdfast_workflow::params::{resolve_params, value_as_env};
use holdfast_workflow::template::{
    JobContext, MAX_RENDERED_BYTES, RenderContext, has_template_syntax, render,
};
use holdfast_workflow::{Chain, ParamKind, parse_chain};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

const CHAIN: &str = r#"
[params.name]
type = "string"
pattern = "[a-z][a-z0-9-]{0,30}"

[params.mode]
type = "string"
enum = ["full", "incremental"]
default = "incremental"

[params.count]
type = "int"
default = 10

[params.level]
type = "int"
enum = [1, 2, 3]

[params.ratio]
type = "float"

[params.dry-run]
type = "bool"
default = false

[params.date]
type = "date"
required = true

[params.at]
type = "datetime"

[params.payload]
type = "json"

[process.main.activity.run]
command = ["/bin/true", "{{ params.name }}", "{{ params.mode }}", "{{ params.count }}",
  "{{ params.level }}", "{{ params.ratio }}", "{{ params['dry-run'] }}", "{{ params.date }}",
  "{{ params.at }}", "{{ params.payload | tojson }}"]
"#;

fn chain() -> &'static Chain {
    static CHAIN_PARSED: OnceLock<Chain> = OnceLock::new();
    CHAIN_PARSED.get_or_init(|| match parse_chain(Path::new("fuzz.toml"), CHAIN) {
        Ok(chain) => chain,
        Err(errors) => panic!("the fixed chain does not load: {errors:?}"),
    })
}

/// Strings that reach the interesting branches of the type checks.
const INTERESTING: &[&str] = &[
    "",
    "full",
    "incremental",
    "abc-1",
    "A",
    "2024-05-01",
    "2024-02-30",
    "2024-5-1",
    "+12024-05-01",
    "2024-05-01T04:00:00Z",
    "2024-05-01T04:00:00+25:00",
    "2024-05-01 04:00:00",
    "true",
    "false",
    "1",
    "-0",
    "10",
    "1e309",
    "NaN",
    "inf",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551616",
    "0.1",
    "{\"a\":[1,2,{\"b\":null}]}",
    "[[[[[[[[[[]]]]]]]]]]",
    "{{ params.name }}",
];

const MAX_DEPTH: u32 = 6;

fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let choices = if depth >= MAX_DEPTH { 7 } else { 9 };
    Ok(match u.choose_index(choices)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => Value::String((*u.choose(INTERESTING)?).to_string()),
        7 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array(
                (0..len)
                    .map(|_| value(u, depth + 1))
                    .collect::<Result<_>>()?,
            )
        }
        _ => Value::Object(object(u, depth + 1, &[])?),
    })
}

fn object(u: &mut Unstructured<'_>, depth: u32, names: &[&str]) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0..=12)?;
    let mut map = Map::new();
    for _ in 0..len {
        let key = if !names.is_empty() && u.ratio(7, 8)? {
            (*u.choose(names)?).to_string()
        } else {
            u.arbitrary()?
        };
        map.insert(key, value(u, depth)?);
    }
    Ok(map)
}

#[derive(Debug)]
struct Input {
    submitted: Map<String, Value>,
    outputs: Map<String, Value>,
    tenant: Option<String>,
    template: String,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let names: Vec<&str> = chain().params.keys().map(String::as_str).collect();
        Ok(Input {
            submitted: object(u, 0, &names)?,
            outputs: object(u, 0, &["main", "extract"])?,
            tenant: u.arbitrary()?,
            template: u.arbitrary()?,
        })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> Result<Self> {
        let names: Vec<&str> = chain().params.keys().map(String::as_str).collect();
        Ok(Input {
            submitted: object(&mut u, 0, &names)?,
            outputs: object(&mut u, 0, &["main", "extract"])?,
            tenant: u.arbitrary()?,
            // The template last, as the rest of the input, so that text
            // mutations reach it directly.
            template: String::from_utf8_lossy(u.take_rest()).into_owned(),
        })
    }
}

fn has_kind(kind: ParamKind, value: &Value) -> bool {
    match kind {
        ParamKind::String | ParamKind::Date | ParamKind::DateTime => value.is_string(),
        ParamKind::Int => value.is_i64() || value.is_u64(),
        ParamKind::Float => value.as_f64().is_some_and(f64::is_finite),
        ParamKind::Bool => value.is_boolean(),
        ParamKind::Json => true,
    }
}

fuzz_target!(|input: Input| {
    let chain = chain();
    let params = match resolve_params(chain, &input.submitted) {
        Ok(resolved) => {
            for (name, value) in &resolved {
                let spec = chain
                    .params
                    .get(name)
                    .unwrap_or_else(|| panic!("undeclared parameter {name:?} accepted"));
                assert!(
                    has_kind(spec.kind, value),
                    "{name} is {:?} but {value} was accepted",
                    spec.kind
                );
                if let Some(allowed) = &spec.allowed {
                    assert!(
                        allowed.contains(value),
                        "{name}: {value} is not in its enum"
                    );
                }
                let _ = value_as_env(value);
            }
            for (name, spec) in &chain.params {
                if spec.required || spec.default.is_some() {
                    assert!(resolved.contains_key(name), "{name} has no value");
                }
            }
            resolved
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal lists at least one field");
            for error in &errors {
                assert!(
                    chain.params.contains_key(&error.field)
                        || input.submitted.contains_key(&error.field),
                    "error about a field nobody named: {error:?}"
                );
                assert!(!error.message.is_empty(), "each field error says why");
            }
            // Render against the raw values anyway: json parameters and
            // outputs can hold anything.
            input.submitted.clone()
        }
    };
    let ctx = RenderContext {
        params,
        job: JobContext {
            id: 7,
            run_id: 7,
            chain: chain.name.clone(),
            target: "fuzz.main.run".to_string(),
            tenant: input.tenant,
            attempt: 1,
            outcome: None,
        },
        outputs: input.outputs,
        secret_dir: None,
        item: None,
        schedule: None,
    };
    match render(&input.template, &ctx) {
        Ok(text) if has_template_syntax(&input.template) => {
            assert!(
                text.len() <= MAX_RENDERED_BYTES,
                "rendered {} bytes, more than the bound",
                text.len()
            );
        }
        Ok(text) => assert_eq!(text, input.template, "plain text renders to itself"),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty(), "a render error says why");
        }
    }
    for activity in &chain.activities {
        let _ = holdfast_workflow::template::render_activity(activity, &ctx);
    }
});
