//! Reading chain files: TOML text to a fully validated [`Chain`], with every
//! error located by file, line and column, and as many errors as possible
//! reported in one pass.
//!
//! Shape errors (unknown keys, wrong types) come from serde on private raw
//! structs; everything else (names, values, `after`, templates) is checked
//! here. When any table has a shape error, template references and
//! schedules' required parameters are not checked: a parameter or activity
//! whose table failed would show up again as "unknown", repeating the same
//! mistake in other words.

mod graph;
mod handlers;
mod locate;
mod notify;
mod processes;
mod raw;
mod references;
mod schedules;
mod slurm;
#[cfg(test)]
mod tests;
mod values;

pub use locate::setting_position;
pub(crate) use values::to_json as toml_to_json;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use holdfast_api::LoadError;
use indexmap::IndexMap;
use sha2::{Digest, Sha256};
use toml::de::DeTable;

use crate::model::{Chain, ConcurrencyPer, ParamKind, ParamSpec};
use crate::params::{self, Strictness};
use processes::Draft;
use raw::{Named, RawChain, RawFile, RawParam, Span};
use schedules::build_schedules;
use values::{Settings, duration, positive, to_json};

/// Reads and validates one chain file.
pub fn load_file(path: &Path) -> Result<Chain, Vec<LoadError>> {
    match fs::read_to_string(path) {
        Ok(source) => parse_chain(path, &source),
        Err(e) => Err(vec![LoadError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        }]),
    }
}

/// Parses and validates one chain file's text. `file` names the chain (its
/// stem, unless `[chain].name` is set) and every error.
pub fn parse_chain(file: &Path, source: &str) -> Result<Chain, Vec<LoadError>> {
    let mut diagnostics = Diagnostics::new(file, source);
    let chain = match DeTable::parse(source) {
        Ok(root) => {
            let raw = raw::read_file(root.into_inner(), &mut diagnostics);
            Some(build(file, source, raw, &mut diagnostics))
        }
        Err(e) => {
            diagnostics.shape_error(&e.span().unwrap_or(0..0), e.message());
            None
        }
    };
    match chain {
        Some(chain) if diagnostics.errors.is_empty() => Ok(chain),
        _ => Err(diagnostics.into_errors()),
    }
}

/// Whether a file in `workflows.d/` is a chain: `*.toml`, and not a hidden
/// file, an editor's backup or swap file, or a package manager's leftover.
pub fn is_workflow_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".toml") else {
        return false;
    };
    // Most leftovers already fail the suffix test (`x.toml~`,
    // `x.toml.dpkg-new`); they are named anyway so the rule reads whole.
    let leftover = name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".tmp")
        || (name.starts_with('#') && name.ends_with('#'))
        || name.contains(".dpkg-")
        || name.contains(".ucf-");
    !stem.is_empty() && !name.starts_with('.') && !leftover
}

/// Names of chains, processes, activities, parameters and schedules:
/// `[a-z0-9][a-z0-9_-]*`.
pub fn valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Collects the errors of one file, turning byte spans into lines and
/// columns.
struct Diagnostics<'a> {
    file: String,
    source: &'a str,
    errors: Vec<(Option<usize>, LoadError)>,
    /// Errors in the shape of a table; see the module documentation.
    shape_errors: usize,
}

impl<'a> Diagnostics<'a> {
    fn new(file: &Path, source: &'a str) -> Self {
        Diagnostics {
            file: file.display().to_string(),
            source,
            errors: Vec::new(),
            shape_errors: 0,
        }
    }

    fn error(&mut self, span: &Span, message: impl Into<String>) {
        let (line, column) = line_column(self.source, span.start);
        self.errors.push((
            Some(span.start),
            LoadError {
                file: self.file.clone(),
                line: Some(line),
                column: Some(column),
                message: message.into(),
            },
        ));
    }

    /// An error about the file as a whole (its name, a missing table).
    fn unlocated(&mut self, message: impl Into<String>) {
        self.errors.push((
            None,
            LoadError {
                file: self.file.clone(),
                line: None,
                column: None,
                message: message.into(),
            },
        ));
    }

    fn shape_error(&mut self, span: &Span, message: impl Into<String>) {
        self.shape_errors += 1;
        self.error(span, message);
    }

    /// The errors in file order, whole-file ones first.
    fn into_errors(mut self) -> Vec<LoadError> {
        self.errors.sort_by_key(|(at, _)| *at);
        self.errors.dedup();
        self.errors.into_iter().map(|(_, e)| e).collect()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

const NAME_RULE: &str =
    "use lowercase letters, digits, \"_\" and \"-\", starting with a letter or digit";

fn check_name(what: &str, name: &str, span: &Span, diagnostics: &mut Diagnostics<'_>) {
    if !valid_name(name) {
        diagnostics.error(span, format!("invalid {what} name {name:?}: {NAME_RULE}"));
    }
}

fn build(file: &Path, source: &str, raw: RawFile, diagnostics: &mut Diagnostics<'_>) -> Chain {
    let header = raw.chain.unwrap_or(RawChain {
        name: None,
        description: None,
        max_parallel: None,
        concurrency: None,
        concurrency_per: None,
        timeout: None,
        allow: Vec::new(),
        journal: false,
        max_priority: None,
    });
    let name = chain_name(file, &header, diagnostics);
    let params = build_params(raw.params, diagnostics);
    let defaults =
        Settings::default().overridden(raw.defaults.unwrap_or_default(), true, diagnostics);

    let mut draft = Draft::default();
    for process in raw.processes {
        draft.add_process(&name, process, None, &defaults, diagnostics);
    }
    handlers::add_handlers(&mut draft, &name, raw.handlers, &defaults, diagnostics);
    if draft.processes.iter().all(|p| p.process.handler.is_some()) {
        diagnostics.unlocated(
            "the chain has no process; add a [process.<name>] table with at least one \
             [process.<name>.activity.<name>]",
        );
    }
    draft.link(diagnostics);
    handlers::resolve_undoes(&mut draft, diagnostics);
    if diagnostics.shape_errors == 0 {
        draft.check_templates(&params, &defaults, diagnostics);
    }
    let schedules = build_schedules(raw.schedules, &params, diagnostics);
    let concurrency_per = concurrency_per(&header, diagnostics);
    let notify = notify::build_rules(raw.notify, &defaults, diagnostics);
    let mut allow = Vec::new();
    for entry in &header.allow {
        match entry.get_ref().split_once(':') {
            Some(("group" | "user", who)) if !who.is_empty() => allow.push(entry.get_ref().clone()),
            _ => diagnostics.error(
                &entry.span(),
                format!(
                    "allow entries are \"group:NAME\" or \"user:NAME\", got {:?}",
                    entry.get_ref()
                ),
            ),
        }
    }

    Chain {
        name,
        file: file.to_path_buf(),
        version: Sha256::digest(source.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        source: source.to_string(),
        description: header.description,
        max_parallel: header
            .max_parallel
            .and_then(|n| positive("max_parallel", &n, diagnostics)),
        concurrency: header
            .concurrency
            .and_then(|n| positive("concurrency", &n, diagnostics)),
        concurrency_per,
        timeout: header
            .timeout
            .and_then(|t| duration("timeout", &t, false, diagnostics)),
        params,
        processes: draft.processes.into_iter().map(|p| p.process).collect(),
        activities: draft.activities,
        schedules,
        allow,
        journal: header.journal,
        max_priority: header.max_priority.and_then(|n| {
            i32::try_from(*n.get_ref())
                .map_err(|_| {
                    diagnostics.error(
                        &n.span(),
                        format!("max_priority must fit in 32 bits; got {}", n.get_ref()),
                    )
                })
                .ok()
        }),
        notify,
    }
}

/// `concurrency_per`: `"chain"` or `"tenant"`, and only beside a
/// `concurrency` it can change.
fn concurrency_per(header: &RawChain, diagnostics: &mut Diagnostics<'_>) -> ConcurrencyPer {
    let Some(per) = &header.concurrency_per else {
        return ConcurrencyPer::Chain;
    };
    let value = match per.get_ref().as_str() {
        "chain" => ConcurrencyPer::Chain,
        "tenant" => ConcurrencyPer::Tenant,
        other => {
            diagnostics.error(
                &per.span(),
                format!("concurrency_per is \"chain\" or \"tenant\", got {other:?}"),
            );
            return ConcurrencyPer::Chain;
        }
    };
    if header.concurrency.is_none() {
        diagnostics.error(
            &per.span(),
            "concurrency_per has no effect without concurrency; set concurrency in [chain] too",
        );
    }
    value
}

fn chain_name(file: &Path, header: &RawChain, diagnostics: &mut Diagnostics<'_>) -> String {
    if let Some(name) = &header.name {
        check_name("chain", name.get_ref(), &name.span(), diagnostics);
        return name.get_ref().clone();
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !valid_name(&stem) {
        diagnostics.unlocated(format!(
            "the chain is named after the file, and {stem:?} is not a valid name: {NAME_RULE}; \
             rename the file or set name in [chain]"
        ));
    }
    stem
}

fn build_params(
    raw: Vec<Named<RawParam>>,
    diagnostics: &mut Diagnostics<'_>,
) -> IndexMap<String, ParamSpec> {
    let mut params = IndexMap::new();
    // Two names that differ only in "-" and "_" or case would share one
    // HF_PARAM_ variable.
    let mut env_names: HashMap<String, String> = HashMap::new();
    for entry in raw {
        check_name("parameter", &entry.name, &entry.name_span, diagnostics);
        if let Some(other) = env_names.insert(params::env_name(&entry.name), entry.name.clone()) {
            diagnostics.error(
                &entry.name_span,
                format!(
                    "parameters {other:?} and {:?} would both be passed as {}; rename one",
                    entry.name,
                    params::env_name(&entry.name)
                ),
            );
        }
        if let Some(param) = entry.value
            && let Some(spec) = build_param(&entry.name, param, diagnostics)
        {
            params.insert(entry.name, spec);
        }
    }
    params
}

/// `min` and `max`: numbers of the parameter's type (an `int`'s bounds are
/// integers), `min` not above `max`.
fn build_bounds(
    name: &str,
    spec: &mut ParamSpec,
    min: Option<toml::Spanned<toml::Value>>,
    max: Option<toml::Spanned<toml::Value>>,
    diagnostics: &mut Diagnostics<'_>,
) {
    for (key, bound) in [("min", &min), ("max", &max)] {
        let Some(bound) = bound else { continue };
        if !matches!(spec.kind, ParamKind::Int | ParamKind::Float) {
            diagnostics.error(
                &bound.span(),
                format!(
                    "{key} applies to int and float parameters only; {name} is {}",
                    spec.kind.as_str()
                ),
            );
            continue;
        }
        match to_json(bound.get_ref())
            .and_then(|json| params::coerce(spec.kind, &json, Strictness::File))
        {
            Ok(value) if key == "min" => spec.min = Some(value),
            Ok(value) => spec.max = Some(value),
            Err(message) => diagnostics.error(&bound.span(), format!("{key}: {message}")),
        }
    }
    if let (Some(low), Some(high), Some(at)) = (&spec.min, &spec.max, &max)
        && params::compare(low, high) == Some(std::cmp::Ordering::Greater)
    {
        diagnostics.error(
            &at.span(),
            format!("min {low} is above max {high}; no value could be given"),
        );
        spec.min = None;
        spec.max = None;
    }
}

fn build_param(name: &str, raw: RawParam, diagnostics: &mut Diagnostics<'_>) -> Option<ParamSpec> {
    let kind = match raw.kind.get_ref().as_str() {
        "string" => ParamKind::String,
        "int" => ParamKind::Int,
        "float" => ParamKind::Float,
        "bool" => ParamKind::Bool,
        "date" => ParamKind::Date,
        "datetime" => ParamKind::DateTime,
        "json" => ParamKind::Json,
        other => {
            diagnostics.error(
                &raw.kind.span(),
                format!(
                    "unknown parameter type {other:?}; use string, int, float, bool, date, \
                     datetime or json"
                ),
            );
            return None;
        }
    };
    let mut spec = ParamSpec {
        name: name.to_string(),
        kind,
        required: raw.required,
        default: None,
        allowed: None,
        pattern: None,
        min: None,
        max: None,
        description: raw.description,
        secret: raw.secret.as_ref().is_some_and(|s| *s.get_ref()),
    };
    if let Some(secret) = raw.secret.as_ref().filter(|s| *s.get_ref())
        && kind != ParamKind::String
    {
        // A structured secret would be masked as its whole text only, and
        // its fields, used one by one, would show.
        diagnostics.error(
            &secret.span(),
            format!(
                "a secret parameter is a string ({name} is {}); keep a structured credential \
                 as a string the activity parses, or as several secret parameters",
                kind.as_str()
            ),
        );
    }
    if let Some(pattern) = raw.pattern {
        if kind != ParamKind::String {
            diagnostics.error(
                &pattern.span(),
                format!(
                    "pattern applies to string parameters only; {name} is {}",
                    kind.as_str()
                ),
            );
        } else if let Err(e) = params::compile_pattern(pattern.get_ref()) {
            diagnostics.error(&pattern.span(), format!("invalid pattern: {e}"));
        } else {
            spec.pattern = Some(pattern.into_inner());
        }
    }
    build_bounds(name, &mut spec, raw.min, raw.max, diagnostics);
    // Each value is checked on its own, with the constraints declared so far.
    let checked = |spec: &ParamSpec, what: &str, value: &toml::Spanned<toml::Value>| {
        to_json(value.get_ref())
            .and_then(|json| params::check_value(spec, &json, Strictness::File))
            .map_err(|message| (value.span(), format!("{what}: {message}")))
    };
    if let Some(allowed) = raw.allowed {
        if allowed.get_ref().is_empty() {
            diagnostics.error(&allowed.span(), "enum must list at least one value");
        }
        let mut values = Vec::new();
        for value in allowed.get_ref() {
            match checked(&spec, "enum value", value) {
                Ok(value) => values.push(value),
                Err((span, message)) => diagnostics.error(&span, message),
            }
        }
        spec.allowed = Some(values);
    }
    if let Some(default) = raw.default {
        if spec.secret {
            // A value written in the chain file is readable by whoever reads
            // the file, and would be everybody's default.
            diagnostics.error(
                &default.span(),
                format!(
                    "{name} is secret, so it has no default in the chain file; give it from a \
                     tenant, a schedule or the submission"
                ),
            );
            return Some(spec);
        }
        match checked(&spec, "default", &default) {
            Ok(value) => spec.default = Some(value),
            Err((span, message)) => diagnostics.error(&span, message),
        }
    }
    Some(spec)
}
