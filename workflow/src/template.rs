//! Templates in workflow files: the load-time list of what a template
//! references, and the run-time rendering of an activity's argv, env and
//! working directory.
//!
//! Templates are minijinja with strict undefined values, no loader (so no
//! filesystem access), no access to the daemon's environment and no HTML
//! escaping. A `shell` script is never rendered: values reach scripts through
//! the environment only.

use std::collections::BTreeSet;
use std::io;
use std::sync::OnceLock;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, Output, State, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::dates::{BusinessDate, ZONE_VAR};
use crate::model::{Activity, Program};

/// Upper bound of one rendered template. An argv element or env value larger
/// than this is a mistake (or a loop gone wrong), and the kernel would refuse
/// the exec anyway.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// The `job` variable of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobContext {
    pub id: u64,
    /// The id of the first job of its retry chain: the same for a job and
    /// every `job.retry` of it, for paths and idempotency keys.
    pub run_id: u64,
    pub chain: String,
    pub target: String,
    /// Renders as an empty string when the job has no tenant.
    pub tenant: Option<String>,
    pub attempt: u32,
    /// For a handler's activities: the outcome it answers.
    #[serde(flatten)]
    pub outcome: Option<JobOutcome>,
}

/// What a handler sees of the job it answers: `job.state`, `job.failed`
/// (the failed activities' paths) and `job.errors` (one object per failed
/// activity: `path`, `error_id`, `error`, `error_tail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobOutcome {
    pub state: String,
    pub failed: Vec<String>,
    pub errors: Vec<Value>,
}

/// Everything a template can see.
#[derive(Debug, Clone)]
pub struct RenderContext {
    /// The job's resolved parameters.
    pub params: Map<String, Value>,
    pub job: JobContext,
    /// `{"process": {"activity": {key: value}}}` for the upstream activities
    /// the template references.
    pub outputs: Map<String, Value>,
    /// Where this attempt's secret files are (`secret_file("name")` renders
    /// `<dir>/<name>`); None where there are none (a plan).
    pub secret_dir: Option<String>,
    /// The item of a fan-out's instance (`{{ item }}`); None elsewhere.
    pub item: Option<Value>,
    /// The instant the job runs as of (`schedule.at`); None only for jobs
    /// stored before jobs had one.
    pub schedule: Option<BusinessDate>,
}

/// An activity's program with every template rendered, ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedProgram {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse (load-time checks make this rare).
    #[error("invalid template {template:?}: {message}")]
    Syntax { template: String, message: String },
    /// An `outputs.<process>.<activity>...` reference the upstream activity
    /// did not produce.
    #[error("{reference} is not available: {message}")]
    MissingOutput { reference: String, message: String },
    /// A declared parameter without a value in this job.
    #[error("parameter {name:?} has no value in this job: submit it or give it a default")]
    MissingParam { name: String },
    #[error(
        "template {template:?} renders to more than {limit} bytes: pass large values through a file"
    )]
    TooLarge { template: String, limit: usize },
    #[error("cannot render template {template:?}: {message}")]
    Render { template: String, message: String },
}

/// True when `text` holds template syntax; anything else renders to itself.
pub fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The one environment every template uses. It is configured once; building
/// it per render would re-register every builtin filter each time.
fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // The fast path returns text unchanged, so a rendered template must
        // not lose its trailing newline either.
        env.set_keep_trailing_newline(true);
        env.set_formatter(format_value);
        env.add_filter("tojson", to_json);
        env.add_function("secret_file", secret_file);
        crate::dates::register(&mut env);
        // A template is written by an operator but rendered inside the
        // daemon's engine, so its work is bounded: fuel caps the
        // instructions one render may run (loops included), and the builtins
        // that expand or materialise whole sequences in a single step (a
        // `[0] * 10**12 | list`, say) are not offered at all.
        env.set_fuel(Some(RENDER_FUEL));
        for name in EXPANDING_FILTERS {
            env.remove_filter(name);
        }
        env
    })
}

/// Instructions one render may run.
pub const RENDER_FUEL: u64 = 100_000;

/// Sequences longer than this are not written out by a template.
const MAX_WRITTEN_ITEMS: usize = 10_000;

/// Builtin filters that walk or build a whole sequence inside one
/// instruction, where fuel cannot stop them.
const EXPANDING_FILTERS: [&str; 22] = [
    "list",
    "join",
    "batch",
    "slice",
    "sort",
    "reverse",
    "unique",
    "map",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "sum",
    "min",
    "max",
    "groupby",
    "dictsort",
    "items",
    "last",
    "chain",
    "zip",
    "wordcount",
];

/// Writes values the way `HF_PARAM_*` shows them: none as nothing, lists and
/// maps as compact JSON, everything else as text.
fn format_value(
    out: &mut Output,
    state: &State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None => Ok(()),
        // As in HF_PARAM_*: `true`/`false`, not Python's spelling.
        ValueKind::Bool => {
            let text = if value.is_true() { "true" } else { "false" };
            out.write_str(text)
                .map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
        }
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            if value.len().is_none_or(|n| n > MAX_WRITTEN_ITEMS) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("a sequence of more than {MAX_WRITTEN_ITEMS} items cannot be written"),
                ));
            }
            let text = to_json(value)?;
            out.write_str(&text)
                .map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// The `tojson` filter: minijinja ships one only behind a feature the
/// workspace does not enable, and serde_json is here anyway.
fn to_json(value: &minijinja::Value) -> Result<String, minijinja::Error> {
    if matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable)
        && value.len().is_none_or(|n| n > MAX_WRITTEN_ITEMS)
    {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("a sequence of more than {MAX_WRITTEN_ITEMS} items cannot be written"),
        ));
    }
    serde_json::to_string(value).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot write the value as JSON: {e}"),
        )
    })
}

/// The context variable holding the attempt's secret directory; not a name
/// templates can use (load-time checks allow only params, job, outputs).
const SECRET_DIR_VAR: &str = "__hf_secret_dir";

/// `secret_file("name")`: the path of the file holding secret parameter
/// `name` for this attempt. The daemon writes the file (mode 0600, owned by
/// the activity's user) before the start and removes it when the attempt
/// ends; the path, unlike the value, may appear anywhere, argv included.
fn secret_file(state: &State, name: &str) -> Result<String, minijinja::Error> {
    let dir = state
        .lookup(SECRET_DIR_VAR)
        .filter(|v| !v.is_undefined() && !v.is_none());
    match dir {
        Some(dir) => Ok(format!("{dir}/{name}")),
        None => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "secret files exist only while an attempt runs",
        )),
    }
}

/// The parameter names of every `secret_file("...")` call in `template`.
/// Each call must name its parameter as a quoted literal, so the daemon
/// knows at load which files an activity needs.
pub(crate) fn secret_file_calls(template: &str) -> Result<BTreeSet<String>, String> {
    const CALL: &str = "secret_file(";
    let mut names = BTreeSet::new();
    let mut rest = template;
    while let Some(at) = rest.find(CALL) {
        rest = rest[at + CALL.len()..].trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
        let parsed = quote.and_then(|q| {
            let body = &rest[1..];
            let end = body.find(q)?;
            let name = &body[..end];
            let after = body[end + 1..].trim_start();
            after
                .starts_with(')')
                .then(|| (name.to_string(), &after[1..]))
        });
        match parsed {
            Some((name, after)) if !name.is_empty() => {
                names.insert(name);
                rest = after;
            }
            _ => {
                return Err(
                    "secret_file takes the parameter's name in quotes, like secret_file(\"db_password\")"
                        .to_string(),
                );
            }
        }
    }
    Ok(names)
}

/// Does `template` read any of the parameters named in `names`: by name,
/// through the whole `params` object, through `debug()` (which shows the
/// whole context) or through `secret_file(...)`? A template that does not
/// parse counts as reading them.
pub fn reads_any_param(template: &str, names: &BTreeSet<String>) -> bool {
    if names.is_empty() || !has_template_syntax(template) {
        return false;
    }
    if template.contains("debug(") || template.contains("secret_file(") {
        return true;
    }
    match referenced_variables(template) {
        Ok(references) => references.iter().any(|reference| {
            let mut segments = reference.split('.');
            segments.next() == Some("params")
                && segments.next().is_none_or(|name| names.contains(name))
        }),
        Err(_) => true,
    }
}

/// The variables `template` looks up, as dotted paths (`params.date`,
/// `outputs.extract.orders.rows`), without minijinja's own globals such as
/// `range`. An error is the syntax error's description.
pub(crate) fn referenced_variables(template: &str) -> Result<BTreeSet<String>, String> {
    if !has_template_syntax(template) {
        return Ok(BTreeSet::new());
    }
    let env = environment();
    let compiled = env
        .template_from_str(template)
        .map_err(|e| describe_error(&e))?;
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    Ok(compiled
        .undeclared_variables(true)
        .into_iter()
        .filter(|name| {
            let root = name.split('.').next().unwrap_or(name);
            !globals.contains(root)
        })
        .collect())
}

/// The filters and tests `template` applies that this environment does not
/// offer (the withheld builtins, misspellings), as messages. Found by a small
/// scan of its expression blocks, each name then checked against the
/// environment itself, so the answer is the one rendering would give.
pub(crate) fn unavailable_names(template: &str) -> Vec<String> {
    if !has_template_syntax(template) {
        return Vec::new();
    }
    let env = environment();
    let (filters, tests) = applied_names(template);
    let mut problems = Vec::new();
    for name in filters {
        let probe = format!("{{{{ none | {name} }}}}");
        if env
            .render_str(&probe, ())
            .is_err_and(|e| e.kind() == ErrorKind::UnknownFilter)
        {
            let why = if EXPANDING_FILTERS.contains(&name.as_str()) {
                "is withheld because it expands a whole sequence in one step"
            } else {
                "does not exist"
            };
            problems.push(format!("filter `{name}`, which {why}"));
        }
    }
    for name in tests {
        let probe = format!("{{{{ none is {name} }}}}");
        if env
            .render_str(&probe, ())
            .is_err_and(|e| e.kind() == ErrorKind::UnknownTest)
        {
            problems.push(format!("test `{name}`, which does not exist"));
        }
    }
    problems
}

/// Names after `|` (filters, also `{% filter name %}`) and after `is` /
/// `is not` (tests) inside `{{ }}` and `{% %}` blocks; string literals and
/// comments are skipped.
fn applied_names(template: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let bytes = template.as_bytes();
    let (mut filters, mut tests) = (BTreeSet::new(), BTreeSet::new());
    let ident = |at: usize| -> (usize, &str) {
        let mut i = at;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        (i, &template[start..i])
    };
    let mut i = 0;
    while i + 1 < bytes.len() {
        let close: &[u8] = match &bytes[i..i + 2] {
            b"{{" => b"}}",
            b"{%" => b"%}",
            b"{#" => {
                i = template[i..]
                    .find("#}")
                    .map_or(bytes.len(), |at| i + at + 2);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let statement = close == b"%}";
        i += 2;
        let mut first_word = true;
        while i < bytes.len() && !bytes[i..].starts_with(close) {
            match bytes[i] {
                quote @ (b'"' | b'\'') => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'|' => {
                    let (end, name) = ident(i + 1);
                    if !name.is_empty() {
                        filters.insert(name.to_string());
                    }
                    i = end.max(i + 1);
                }
                b if b.is_ascii_alphabetic() || b == b'_' => {
                    let (end, word) = ident(i);
                    if word == "is" {
                        let (after, next) = ident(end);
                        let (after, name) = if next == "not" {
                            ident(after)
                        } else {
                            (after, next)
                        };
                        if !name.is_empty() {
                            tests.insert(name.to_string());
                        }
                        i = after;
                    } else if statement && first_word && word == "filter" {
                        let (after, name) = ident(end);
                        if !name.is_empty() {
                            filters.insert(name.to_string());
                        }
                        i = after;
                    } else {
                        i = end;
                    }
                    first_word = false;
                    continue;
                }
                _ => i += 1,
            }
            if !bytes
                .get(i.saturating_sub(1))
                .is_some_and(u8::is_ascii_whitespace)
            {
                first_word = false;
            }
        }
        i += 2;
    }
    (filters, tests)
}

/// Renders one template against `ctx`.
pub fn render(template: &str, ctx: &RenderContext) -> Result<String, TemplateError> {
    if !has_template_syntax(template) {
        return Ok(template.to_string());
    }
    render_with(template, &context_value(ctx), ctx)
}

/// Renders an activity's argv, env values and working directory. The
/// context is converted once and shared by all of them.
pub fn render_activity(
    activity: &Activity,
    ctx: &RenderContext,
) -> Result<RenderedProgram, TemplateError> {
    // Converting the context is the costly part; most argvs hold no
    // template at all, so do it only when one needs it.
    let mut value: Option<minijinja::Value> = None;
    let mut one = |text: &str| -> Result<String, TemplateError> {
        if !has_template_syntax(text) {
            return Ok(text.to_string());
        }
        let value = value.get_or_insert_with(|| context_value(ctx));
        render_with(text, value, ctx)
    };
    let argv = match &activity.program {
        Program::Command(argv) => argv.iter().map(|arg| one(arg)).collect::<Result<_, _>>()?,
        // The script is passed untouched: values reach it through the
        // environment, never spliced into shell text.
        Program::Shell(script) => vec!["/bin/sh".to_string(), "-c".to_string(), script.clone()],
    };
    let env = activity
        .env
        .iter()
        .map(|(name, text)| Ok((name.clone(), one(text)?)))
        .collect::<Result<_, TemplateError>>()?;
    let working_dir = activity.working_dir.as_deref().map(&mut one).transpose()?;
    Ok(RenderedProgram {
        argv,
        env,
        working_dir,
    })
}

fn context_value(ctx: &RenderContext) -> minijinja::Value {
    let base = minijinja::context! {
        params => minijinja::Value::from_serialize(&ctx.params),
        job => minijinja::Value::from_serialize(&ctx.job),
        outputs => minijinja::Value::from_serialize(&ctx.outputs),
        __hf_secret_dir => ctx.secret_dir.clone(),
        item => ctx.item.as_ref().map(minijinja::Value::from_serialize),
    };
    match &ctx.schedule {
        Some(date) => minijinja::value::merge_maps([schedule_value(date), base]),
        None => base,
    }
}

/// `schedule.at` and `schedule.timezone`, and the zone the date filters
/// compute in.
fn schedule_value(date: &BusinessDate) -> minijinja::Value {
    let zone = date.zone.name();
    let mut values = std::collections::BTreeMap::new();
    values.insert(
        "schedule",
        minijinja::Value::from_serialize(serde_json::json!({
            "at": date.rfc3339(),
            "timezone": zone,
        })),
    );
    values.insert(ZONE_VAR, minijinja::Value::from(zone));
    minijinja::Value::from_object(values)
}

/// What a schedule's `params` value may read: the fire's instant.
pub const SCHEDULE_FIELDS: [&str; 2] = ["at", "timezone"];

/// Checks a schedule's `params` value that is a template, at load: it
/// parses, reads only `schedule.at` / `schedule.timezone`, and applies only
/// filters that exist.
pub fn check_schedule_template(template: &str) -> Result<(), String> {
    let references = referenced_variables(template)?;
    for reference in references {
        let mut segments = reference.split('.');
        let root = segments.next().unwrap_or_default();
        let field = segments.next();
        if root != "schedule" || field.is_some_and(|f| !SCHEDULE_FIELDS.contains(&f)) {
            return Err(format!(
                "a schedule's parameter can read only schedule.at and schedule.timezone, not \
                 {reference}"
            ));
        }
    }
    match unavailable_names(template).first() {
        Some(problem) => Err(format!("the template applies {problem}")),
        None => Ok(()),
    }
}

/// Renders a schedule's `params` value for one fire.
pub fn render_schedule_value(template: &str, date: &BusinessDate) -> Result<String, TemplateError> {
    let env = environment();
    let compiled = env
        .template_from_str(template)
        .map_err(|e| TemplateError::Syntax {
            template: excerpt(template),
            message: describe_error(&e),
        })?;
    let mut out = BoundedWriter::default();
    match compiled.render_captured_to(schedule_value(date), &mut out) {
        Ok(_) => String::from_utf8(out.bytes).map_err(|_| TemplateError::Render {
            template: excerpt(template),
            message: "the output is not valid UTF-8".to_string(),
        }),
        Err(_) if out.overflowed => Err(TemplateError::TooLarge {
            template: excerpt(template),
            limit: MAX_RENDERED_BYTES,
        }),
        Err(e) => Err(TemplateError::Render {
            template: excerpt(template),
            message: describe_error(&e),
        }),
    }
}

/// Renders a template to a JSON value: one that is a single expression
/// (`{{ outputs.split.plan.chunks }}`) gives that value as it is; any
/// other must render to JSON text (`foreach`).
pub fn render_json(template: &str, ctx: &RenderContext) -> Result<Value, TemplateError> {
    let trimmed = template.trim();
    let single = trimmed
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .filter(|inner| !inner.contains("{{") && !inner.contains("}}"));
    let text = match single {
        Some(inner) => render(&format!("{{{{ ({}) | tojson }}}}", inner.trim()), ctx)?,
        None => render(template, ctx)?,
    };
    serde_json::from_str(&text).map_err(|e| TemplateError::Render {
        template: excerpt(template),
        message: format!("it does not give JSON ({e}); render a list, e.g. with | tojson"),
    })
}

fn render_with(
    template: &str,
    value: &minijinja::Value,
    ctx: &RenderContext,
) -> Result<String, TemplateError> {
    let env = environment();
    let compiled = env
        .template_from_str(template)
        .map_err(|e| TemplateError::Syntax {
            template: excerpt(template),
            message: describe_error(&e),
        })?;
    let mut out = BoundedWriter::default();
    match compiled.render_captured_to(value, &mut out) {
        Ok(_) => String::from_utf8(out.bytes).map_err(|_| TemplateError::Render {
            template: excerpt(template),
            message: "the output is not valid UTF-8".to_string(),
        }),
        Err(_) if out.overflowed => Err(TemplateError::TooLarge {
            template: excerpt(template),
            limit: MAX_RENDERED_BYTES,
        }),
        Err(e) if e.kind() == ErrorKind::UndefinedError => Err(explain_undefined(template, ctx)
            .unwrap_or_else(|| TemplateError::Render {
                template: excerpt(template),
                message: describe_error(&e),
            })),
        Err(e) => Err(TemplateError::Render {
            template: excerpt(template),
            message: describe_error(&e),
        }),
    }
}

/// Strict mode only says "undefined value"; find which reference of the
/// template is missing so the operator learns what to fix.
fn explain_undefined(template: &str, ctx: &RenderContext) -> Option<TemplateError> {
    let references = referenced_variables(template).ok()?;
    references
        .iter()
        .find_map(|reference| missing_reference(reference, ctx))
}

fn missing_reference(reference: &str, ctx: &RenderContext) -> Option<TemplateError> {
    let segments: Vec<&str> = reference.split('.').collect();
    match segments.as_slice() {
        ["params", name, ..] if !ctx.params.contains_key(*name) => {
            Some(TemplateError::MissingParam {
                name: (*name).to_string(),
            })
        }
        ["outputs", process, activity, keys @ ..] => {
            let missing = |message: String| {
                Some(TemplateError::MissingOutput {
                    reference: reference.to_string(),
                    message,
                })
            };
            let Some(mut current) = ctx.outputs.get(*process).and_then(|p| p.get(*activity)) else {
                return missing(format!("{process}.{activity} produced no output"));
            };
            for (depth, key) in keys.iter().enumerate() {
                match current.get(*key) {
                    Some(next) => current = next,
                    None if depth == 0 => {
                        return missing(format!("{process}.{activity} produced no output {key:?}"));
                    }
                    None => {
                        return missing(format!(
                            "output {:?} of {process}.{activity} has no key {key:?}",
                            keys[..depth].join(".")
                        ));
                    }
                }
            }
            None
        }
        _ => None,
    }
}

fn describe_error(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// A template as quoted in an error: long ones are cut so a message stays
/// one readable line.
fn excerpt(template: &str) -> String {
    const MAX_CHARS: usize = 200;
    match template.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &template[..cut]),
        None => template.to_string(),
    }
}

/// Collects rendered bytes and fails the write past [`MAX_RENDERED_BYTES`],
/// which aborts rendering early instead of building a huge string.
#[derive(Default)]
struct BoundedWriter {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("rendered template too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
        assert_eq!(render("{{ params.count * 2 }}", &ctx).unwrap(), "10");
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
            "{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}",
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
}
