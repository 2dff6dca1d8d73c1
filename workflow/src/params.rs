//! Job parameters: checking submitted values against a chain's declared
//! parameters (types, `enum`, `pattern`, required, defaults), and how a value
//! is shown in an activity's environment.
//!
//! The load-time checks of defaults and `enum` values in `parse` use the same
//! functions, so a default can never be a value a submission would refuse.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate};
use holdfast_api::error::FieldError;
use regex_lite::Regex;
use serde_json::{Map, Value};

use crate::model::{Chain, ParamKind, ParamSpec};

/// What a secret value is shown as, to everyone.
pub const MASK: &str = "***";

/// `params` with the value of every secret parameter of `chain` replaced by
/// [`MASK`]: what answers, the audit, `HF_PARAMS` and the stored job show.
pub fn masked(chain: &Chain, params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .map(|(name, value)| {
            let shown = match chain.params.get(name) {
                Some(spec) => spec.shown(value).into_owned(),
                None => value.clone(),
            };
            (name.clone(), shown)
        })
        .collect()
}

/// The values of `params` that are secret: those of parameters `chain`
/// declares secret, and those named in `also` (a tenant's `[secrets]`).
pub fn secret_values(
    chain: &Chain,
    params: &Map<String, Value>,
    also: &BTreeSet<String>,
) -> Map<String, Value> {
    params
        .iter()
        .filter(|(name, _)| {
            also.contains(*name) || chain.params.get(*name).is_some_and(|spec| spec.secret)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// `params` with every value whose name is in `secret` shown as [`MASK`].
pub fn masked_names(params: &Map<String, Value>, secret: &BTreeSet<String>) -> Map<String, Value> {
    params
        .iter()
        .map(|(name, value)| {
            let shown = if secret.contains(name) {
                Value::String(MASK.to_string())
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect()
}

/// Checks `submitted` against the chain's declared parameters and returns
/// every declared parameter that has a value (submitted or default).
///
/// Every problem is reported, one [`FieldError`] per bad field, so an
/// operator fixes a submission in one go. Values are inserted in declared
/// order; whether the map keeps that order depends on serde_json's
/// `preserve_order` feature.
pub fn resolve_params(
    chain: &Chain,
    submitted: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    resolve_hiding(chain, submitted, &BTreeSet::new())
}

/// [`resolve_params`], with the values of the parameters named in `hidden`
/// (beside those the chain declares secret) never quoted in a refusal.
fn resolve_hiding(
    chain: &Chain,
    submitted: &Map<String, Value>,
    hidden: &BTreeSet<String>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut resolved = Map::new();
    let mut errors = Vec::new();
    for (name, spec) in &chain.params {
        let problem = match submitted.get(name) {
            // `null` is no value: the parameter is absent, which only an
            // optional one without a default may be.
            Some(Value::Null) if spec.required => {
                Some("required parameter is missing (null is no value); give a value".to_string())
            }
            Some(Value::Null) if spec.default.is_some() => Some(
                "null is refused for a parameter with a default; leave it out to use the default"
                    .to_string(),
            ),
            Some(Value::Null) => None,
            Some(value) => match check_value(spec, value, Strictness::Submitted) {
                Ok(value) => {
                    resolved.insert(name.clone(), value);
                    None
                }
                // A refusal is answered, logged and audited: it never
                // quotes a secret.
                Err(message) if spec.secret || hidden.contains(name) => {
                    Some(message.replace(&show(value), MASK))
                }
                Err(message) => Some(message),
            },
            None => match &spec.default {
                Some(default) => {
                    resolved.insert(name.clone(), default.clone());
                    None
                }
                None if spec.required => Some("required parameter is missing".to_string()),
                None => None,
            },
        };
        if let Some(message) = problem {
            errors.push(FieldError {
                field: name.clone(),
                message,
            });
        }
    }
    for name in submitted.keys() {
        if !chain.params.contains_key(name) {
            errors.push(FieldError {
                field: name.clone(),
                message: unknown_parameter_message(chain.params.keys()),
            });
        }
    }
    if errors.is_empty() {
        errors = check_deliverable(&resolved);
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(errors)
    }
}

/// The most one environment string (`NAME=value` and its NUL) may take:
/// Linux refuses to start a program with a longer one (`MAX_ARG_STRLEN`,
/// 32 pages) with "Argument list too long".
pub const MAX_ENVIRONMENT_STRING: usize = 32 * 4096;

/// Whether a variable `name` with a value of `value_bytes` bytes can be put
/// in a program's environment.
pub fn fits_environment(name: &str, value_bytes: usize) -> bool {
    // `NAME`, `=`, the value and the NUL.
    let string = name.len() + 1 + value_bytes + 1;
    string <= MAX_ENVIRONMENT_STRING
}

/// The parameters must reach every activity: each in its `HF_PARAM_<NAME>`
/// and all of them in `HF_PARAMS`, each variable within
/// [`MAX_ENVIRONMENT_STRING`]. A value too large for that would be accepted
/// and then fail every attempt, so it is refused here, naming the parameter
/// (for `HF_PARAMS`, the largest one).
fn check_deliverable(resolved: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut largest: Option<(&String, usize)> = None;
    for (name, value) in resolved {
        let text = value_as_env(value);
        if text.contains('\0') {
            // An environment string ends at its first NUL: execve refuses it.
            errors.push(FieldError {
                field: name.clone(),
                message: "contains a NUL character, which no environment variable can hold"
                    .to_string(),
            });
            continue;
        }
        let bytes = text.len();
        if largest.is_none_or(|(_, most)| bytes > most) {
            largest = Some((name, bytes));
        }
        let variable = env_name(name);
        if !fits_environment(&variable, bytes) {
            errors.push(FieldError {
                field: name.clone(),
                message: format!(
                    "value of {bytes} bytes is too large for {variable}: one environment variable \
                     holds at most 128 KiB; pass a file path instead"
                ),
            });
        }
    }
    let all = Value::Object(resolved.clone()).to_string().len();
    if errors.is_empty()
        && !fits_environment("HF_PARAMS", all)
        && let Some((name, bytes)) = largest
    {
        errors.push(FieldError {
            field: name.clone(),
            message: format!(
                "the parameters together take {all} bytes in HF_PARAMS (this one {bytes}), more \
                 than the 128 KiB one environment variable holds; pass file paths instead of data"
            ),
        });
    }
    errors
}

/// The environment variable carrying a parameter: `HF_PARAM_<NAME>`,
/// uppercase with `-` as `_` so it is a valid shell name.
pub fn env_name(param: &str) -> String {
    format!("HF_PARAM_{}", param.to_ascii_uppercase().replace('-', "_"))
}

/// A parameter's value as an environment variable: strings as they are,
/// anything else as compact JSON.
pub fn value_as_env(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where a value comes from, which decides how strictly it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// From a submission (`hfctl submit -p count=5` sends the string "5"):
    /// a string is parsed as the declared type.
    Submitted,
    /// Written in a workflow file, where TOML has types of its own: the
    /// value must already have the declared type.
    File,
}

/// The message for a parameter a chain does not declare.
pub(crate) fn unknown_parameter_message<'a>(declared: impl Iterator<Item = &'a String>) -> String {
    let declared: Vec<&str> = declared.map(String::as_str).collect();
    if declared.is_empty() {
        "unknown parameter; this chain declares no parameters".to_string()
    } else {
        format!("unknown parameter; declared: {}", declared.join(", "))
    }
}

/// Checks one value against its declaration: type (coercing as
/// `strictness` allows), then `enum`, then `pattern`.
pub(crate) fn check_value(
    spec: &ParamSpec,
    value: &Value,
    strictness: Strictness,
) -> Result<Value, String> {
    let value = coerce(spec.kind, value, strictness)?;
    check_bounds(spec, &value)?;
    check_allowed(spec.allowed.as_deref(), &value)?;
    if let Some(pattern) = &spec.pattern {
        let regex = compile_pattern(pattern)
            .map_err(|e| format!("the declared pattern cannot be used: {e}"))?;
        check_pattern(pattern, &regex, &value)?;
    }
    Ok(value)
}

/// Converts `value` to `kind`, or says what was expected.
pub(crate) fn coerce(
    kind: ParamKind,
    value: &Value,
    strictness: Strictness,
) -> Result<Value, String> {
    if let (Value::String(text), Strictness::Submitted) = (value, strictness) {
        match kind {
            ParamKind::Int => {
                return text
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| expected("an integer", value));
            }
            ParamKind::Float => {
                return text
                    .parse::<f64>()
                    .ok()
                    .and_then(float_value)
                    .ok_or_else(|| expected("a number", value));
            }
            ParamKind::Bool => {
                return match text.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(expected("true or false", value)),
                };
            }
            ParamKind::Json => {
                return serde_json::from_str(text)
                    .map_err(|e| format!("{}: {e}", expected("JSON text", value)));
            }
            ParamKind::String | ParamKind::Date | ParamKind::DateTime => {}
        }
    }
    match (kind, value) {
        (ParamKind::String, Value::String(_)) => Ok(value.clone()),
        (ParamKind::String, _) => Err(expected("a string", value)),
        (ParamKind::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        (ParamKind::Int, _) => Err(expected("an integer", value)),
        (ParamKind::Float, Value::Number(n)) => n
            .as_f64()
            .and_then(float_value)
            .ok_or_else(|| expected("a number", value)),
        (ParamKind::Float, _) => Err(expected("a number", value)),
        (ParamKind::Bool, Value::Bool(_)) => Ok(value.clone()),
        (ParamKind::Bool, _) => Err(expected("true or false", value)),
        (ParamKind::Date, Value::String(text)) if is_date(text) => Ok(value.clone()),
        (ParamKind::Date, _) => Err(expected("a date YYYY-MM-DD", value)),
        (ParamKind::DateTime, Value::String(text))
            if DateTime::parse_from_rfc3339(text).is_ok() =>
        {
            Ok(value.clone())
        }
        (ParamKind::DateTime, _) => Err(expected(
            "an RFC 3339 date-time like 2024-05-01T04:00:00Z",
            value,
        )),
        (ParamKind::Json, _) => Ok(value.clone()),
    }
}

/// `min` and `max`, inclusive, for a value already of the spec's type.
pub(crate) fn check_bounds(spec: &ParamSpec, value: &Value) -> Result<(), String> {
    use std::cmp::Ordering::{Greater, Less};
    if let Some(min) = &spec.min
        && compare(value, min) == Some(Less)
    {
        return Err(format!("must be at least {min}; got {}", show(value)));
    }
    if let Some(max) = &spec.max
        && compare(value, max) == Some(Greater)
    {
        return Err(format!("must be at most {max}; got {}", show(value)));
    }
    Ok(())
}

/// Orders two JSON numbers: exactly when both are integers, else as
/// floats. None for anything else.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// `enum`: the value must be one of the allowed ones.
pub(crate) fn check_allowed(allowed: Option<&[Value]>, value: &Value) -> Result<(), String> {
    match allowed {
        Some(allowed) if !allowed.contains(value) => {
            let choices: Vec<String> = allowed.iter().map(Value::to_string).collect();
            Err(format!(
                "must be one of {}; got {}",
                choices.join(", "),
                show(value)
            ))
        }
        _ => Ok(()),
    }
}

/// `pattern`: a string value must match it as a whole.
pub(crate) fn check_pattern(pattern: &str, regex: &Regex, value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) if !regex.is_match(text) => Err(format!(
            "must match the pattern {pattern:?}; got {}",
            show(value)
        )),
        _ => Ok(()),
    }
}

/// Compiles a `pattern` anchored at both ends: authors write `[a-z]+` and
/// mean the whole value, not a substring of it.
pub(crate) fn compile_pattern(pattern: &str) -> Result<Regex, regex_lite::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// A `YYYY-MM-DD` date that exists in the calendar. The shape is checked
/// first because chrono alone also accepts forms like `2024-5-1`.
fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
        && NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

fn float_value(f: f64) -> Option<Value> {
    serde_json::Number::from_f64(f).map(Value::Number)
}

fn expected(what: &str, got: &Value) -> String {
    format!("expected {what}, got {}", show(got))
}

/// A value as quoted in a message: JSON, cut when long.
pub(crate) fn show(value: &Value) -> String {
    const MAX_CHARS: usize = 100;
    let text = value.to_string();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Resolve parameters from every layer, lowest first: the chain's defaults,
/// then the tenant's values (keys the chain does not declare are skipped:
/// one tenant file serves many chains), then a schedule's, then the
/// submitted ones. Every problem is reported at once, as by
/// [`resolve_params`].
pub fn resolve_layered(
    chain: &Chain,
    tenant: Option<&Map<String, Value>>,
    tenant_secrets: Option<&Map<String, Value>>,
    schedule: Option<&Map<String, Value>>,
    submitted: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut combined = Map::new();
    let mut hidden = BTreeSet::new();
    for (layer, secret) in [(tenant, false), (tenant_secrets, true)] {
        for (key, value) in layer.into_iter().flatten() {
            if chain.params.contains_key(key) {
                combined.insert(key.clone(), value.clone());
                if secret {
                    hidden.insert(key.clone());
                }
            }
        }
    }
    for layer in schedule.into_iter().chain(std::iter::once(submitted)) {
        for (key, value) in layer {
            combined.insert(key.clone(), value.clone());
        }
    }
    resolve_hiding(chain, &combined, &hidden)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::parse::parse_chain;
    use serde_json::json;
    use std::path::Path;

    const FILE: &str = r#"
[params.date]
type = "date"
required = true

[params.at]
type = "datetime"

[params.count]
type = "int"
default = 10

[params.ratio]
type = "float"

[params.dry-run]
type = "bool"
default = false

[params.payload]
type = "json"

[params.mode]
type = "string"
enum = ["full", "incremental"]
default = "incremental"

[params.code]
type = "string"
pattern = "[A-Z]{2}[0-9]+"

[process.p.activity.a]
command = ["true"]
"#;

    fn chain() -> Chain {
        parse_chain(Path::new("params.toml"), FILE).unwrap()
    }

    fn submit(value: Value) -> Result<Map<String, Value>, Vec<FieldError>> {
        let Value::Object(map) = value else {
            panic!("test submissions are objects")
        };
        resolve_params(&chain(), &map)
    }

    fn field_errors(value: Value) -> Vec<(String, String)> {
        submit(value)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    fn pair(field: &str, message: &str) -> (String, String) {
        (field.to_string(), message.to_string())
    }

    #[test]
    fn strings_are_parsed_per_type_and_defaults_applied() {
        let resolved = submit(json!({
            "date": "2024-02-29",
            "at": "2024-05-01T04:00:00-05:00",
            "ratio": "0.5",
            "dry-run": "true",
            "payload": "{\"a\": [1, 2]}",
            "code": "CO123",
        }))
        .unwrap();
        assert_eq!(
            Value::Object(resolved),
            json!({
                "date": "2024-02-29",
                "at": "2024-05-01T04:00:00-05:00",
                "count": 10,
                "ratio": 0.5,
                "dry-run": true,
                "payload": {"a": [1, 2]},
                "mode": "incremental",
                "code": "CO123",
            })
        );
    }

    #[test]
    fn typed_values_are_accepted_when_they_match() {
        let resolved = submit(json!({
            "date": "2024-01-31",
            "count": 5,
            "ratio": 2,
            "dry-run": false,
            "payload": "\"text\"",
            "mode": "full",
        }))
        .unwrap();
        assert_eq!(resolved["count"], json!(5));
        assert_eq!(resolved["ratio"], json!(2.0));
        assert_eq!(resolved["payload"], json!("text"));
        assert_eq!(resolved["mode"], json!("full"));
        assert!(!resolved.contains_key("at"));
        let resolved = submit(json!({"date": "2024-01-31", "count": "5"})).unwrap();
        assert_eq!(resolved["count"], json!(5));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = field_errors(json!({
            "date": "2024-02-30",
            "at": "yesterday",
            "count": "5.5",
            "ratio": "fast",
            "dry-run": "yes",
            "payload": "{oops",
            "mode": "weekly",
            "code": "co1",
            "colour": "red",
        }));
        assert_eq!(
            errors,
            [
                pair("date", r#"expected a date YYYY-MM-DD, got "2024-02-30""#),
                pair(
                    "at",
                    r#"expected an RFC 3339 date-time like 2024-05-01T04:00:00Z, got "yesterday""#
                ),
                pair("count", r#"expected an integer, got "5.5""#),
                pair("ratio", r#"expected a number, got "fast""#),
                pair("dry-run", r#"expected true or false, got "yes""#),
                pair(
                    "payload",
                    r#"expected JSON text, got "{oops": key must be a string at line 1 column 2"#
                ),
                pair(
                    "mode",
                    r#"must be one of "full", "incremental"; got "weekly""#
                ),
                pair(
                    "code",
                    r#"must match the pattern "[A-Z]{2}[0-9]+"; got "co1""#
                ),
                pair(
                    "colour",
                    "unknown parameter; declared: date, at, count, ratio, dry-run, payload, mode, code"
                ),
            ]
        );
    }

    #[test]
    fn typed_values_of_the_wrong_type_are_refused() {
        let errors = field_errors(json!({
            "date": 20240101,
            "count": 1.5,
            "ratio": true,
            "dry-run": 1,
            "code": 12,
        }));
        assert_eq!(
            errors,
            [
                pair("date", "expected a date YYYY-MM-DD, got 20240101"),
                pair("count", "expected an integer, got 1.5"),
                pair("ratio", "expected a number, got true"),
                pair("dry-run", "expected true or false, got 1"),
                pair("code", "expected a string, got 12"),
            ]
        );
    }

    #[test]
    fn dates_must_have_the_exact_shape() {
        for bad in [
            "2024-5-01",
            "24-05-01",
            "2024-05-01T00:00:00Z",
            "2023-02-29",
        ] {
            let errors = field_errors(json!({ "date": bad }));
            assert_eq!(errors.len(), 1, "{bad}");
        }
    }

    #[test]
    fn required_parameter_is_missing() {
        assert_eq!(
            field_errors(json!({})),
            [pair("date", "required parameter is missing")]
        );
    }

    #[test]
    fn undeclared_parameters_with_no_declarations() {
        let chain = parse_chain(
            Path::new("bare.toml"),
            "[process.p.activity.a]\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let Value::Object(map) = json!({"x": 1}) else {
            unreachable!()
        };
        let errors = resolve_params(&chain, &map).unwrap_err();
        assert_eq!(
            errors,
            [FieldError {
                field: "x".to_string(),
                message: "unknown parameter; this chain declares no parameters".to_string(),
            }]
        );
    }

    #[test]
    fn values_too_large_for_the_environment_are_refused_by_name() {
        let near = "x".repeat(MAX_ENVIRONMENT_STRING - 100);
        let errors = field_errors(json!({"date": "2026-11-22", "code": format!("AB{near}")}));
        // Refused by its pattern first: only digits after the letters.
        assert_eq!(errors.len(), 1, "{errors:?}");
        let digits = "1".repeat(MAX_ENVIRONMENT_STRING);
        let errors = field_errors(json!({"date": "2026-11-22", "code": format!("AB{digits}")}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "code");
        assert!(errors[0].1.contains("HF_PARAM_CODE"), "{errors:?}");

        // Each fits alone, together they do not fit in HF_PARAMS.
        let half = "1".repeat(MAX_ENVIRONMENT_STRING / 2);
        let errors = field_errors(json!({
            "date": "2026-11-22",
            "code": format!("AB{half}"),
            "payload": {"data": format!("{half}0")},
        }));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "payload", "the largest is named: {errors:?}");
        assert!(errors[0].1.contains("HF_PARAMS"), "{errors:?}");

        let fits = "1".repeat(MAX_ENVIRONMENT_STRING / 4);
        assert!(submit(json!({"date": "2026-11-22", "code": format!("AB{fits}")})).is_ok());
    }

    #[test]
    fn bounds_are_checked_at_load_and_at_submit() {
        let chain = parse_chain(
            Path::new("b.toml"),
            "[params.rows]\ntype = \"int\"\nmin = 1\nmax = 100\ndefault = 10\n\
             [params.ratio]\ntype = \"float\"\nmin = 0\nmax = 0.5\n\
             [params.note]\ntype = \"string\"\n\
             [process.p.activity.a]\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let Value::Object(bad) = json!({"rows": "0", "ratio": 0.75, "note": null}) else {
            unreachable!()
        };
        let errors: Vec<(String, String)> = resolve_params(&chain, &bad)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect();
        assert_eq!(
            errors,
            [
                pair("rows", "must be at least 1; got 0"),
                pair("ratio", "must be at most 0.5; got 0.75"),
            ]
        );
        let Value::Object(good) = json!({"rows": 100, "ratio": "0", "note": null}) else {
            unreachable!()
        };
        let resolved = resolve_params(&chain, &good).unwrap();
        assert_eq!(Value::Object(resolved), json!({"rows": 100, "ratio": 0.0}));

        for (file, wanted) in [
            ("type = \"int\"\nmin = 5\nmax = 1", "min 5 is above max 1"),
            ("type = \"int\"\nmin = 1.5", "min: expected an integer"),
            ("type = \"string\"\nmax = 3", "max applies to int and float"),
            (
                "type = \"int\"\nmax = 3\ndefault = 4",
                "default: must be at most 3",
            ),
        ] {
            let source =
                format!("[params.x]\n{file}\n[process.p.activity.a]\ncommand = [\"true\"]\n");
            let errors = parse_chain(Path::new("b.toml"), &source).unwrap_err();
            assert!(
                errors.iter().any(|e| e.message.contains(wanted)),
                "{file}: {errors:?}"
            );
        }
    }

    #[test]
    fn null_is_absent_for_optional_parameters_only() {
        let errors = field_errors(json!({"date": null, "count": null, "ratio": null}));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "date");
        assert!(errors[0].1.starts_with("required parameter is missing"));
        assert_eq!(errors[1].0, "count");
        assert!(errors[1].1.contains("leave it out to use the default"));
    }

    #[test]
    fn environment_names_and_values() {
        assert_eq!(env_name("dry-run"), "HF_PARAM_DRY_RUN");
        assert_eq!(env_name("date"), "HF_PARAM_DATE");
        assert_eq!(value_as_env(&json!("a b")), "a b");
        assert_eq!(value_as_env(&json!(5)), "5");
        assert_eq!(value_as_env(&json!(true)), "true");
        assert_eq!(value_as_env(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    }
}
