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

mod scan;

pub use scan::refused_constructs;
pub(crate) use scan::unavailable_names;

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
        for name in EXPANDING_FILTERS.iter().chain(&WIDENING_FILTERS) {
            env.remove_filter(name);
        }
        env.add_filter("replace", replace);
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

/// Builtin filters that can make a value many times wider in one step
/// (a width argument, or an escape that grows every character), so that a
/// chain of them grows it exponentially. (`format` is the business-date
/// filter of `dates.rs`, whose printf fallback bounds widths itself.)
pub(crate) const WIDENING_FILTERS: [&str; 7] = [
    "center",
    "indent",
    "wordwrap",
    "urlencode",
    "escape",
    "e",
    "pprint",
];

/// `replace(from, to)`: the builtin, except that a result larger than a
/// whole rendered template is refused before it is built (replacing `''`
/// inserts `to` between every two characters).
fn replace(value: &str, from: &str, to: &str) -> Result<String, minijinja::Error> {
    let count = if from.is_empty() {
        value.chars().count() + 1
    } else {
        value.matches(from).count()
    };
    let grown = count.saturating_mul(to.len().saturating_sub(from.len()));
    if value.len().saturating_add(grown) > MAX_RENDERED_BYTES {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("replace would build more than {MAX_RENDERED_BYTES} bytes"),
        ));
    }
    Ok(value.replace(from, to))
}

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
    let json = serde_json::to_string(value).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot write the value as JSON: {e}"),
        )
    })?;
    // Escaping widens a string, so `tojson | tojson | ...` would grow it
    // exponentially: no one step may build more than a whole template.
    if json.len() > MAX_RENDERED_BYTES {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("the JSON would be more than {MAX_RENDERED_BYTES} bytes"),
        ));
    }
    Ok(json)
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
    let compiled = compile(template)?;
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

/// Compiles `template` for one render, refusing first the constructs that
/// could build a value without bound (the load-time check refuses them
/// too, but the renderer does not rely on its caller).
fn compile<'s>(template: &'s str) -> Result<minijinja::Template<'s, 's>, TemplateError> {
    if let Some(refused) = refused_constructs(template).into_iter().next() {
        return Err(TemplateError::Render {
            template: excerpt(template),
            message: format!("it uses {refused}"),
        });
    }
    environment()
        .template_from_str(template)
        .map_err(|e| TemplateError::Syntax {
            template: excerpt(template),
            message: describe_error(&e),
        })
}

fn render_with(
    template: &str,
    value: &minijinja::Value,
    ctx: &RenderContext,
) -> Result<String, TemplateError> {
    let compiled = compile(template)?;
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
mod tests;
