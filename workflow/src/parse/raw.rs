//! The shapes of a workflow file as TOML gives them, with source spans, and
//! the reading of a document into them. Each named table is read on its
//! own, so a file with several mistyped keys gets all of them reported.

use std::ops::Range;

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Diagnostics;

/// Byte offsets into the source.
pub(super) type Span = Range<usize>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChain {
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    pub max_parallel: Option<Spanned<i64>>,
    pub concurrency: Option<Spanned<i64>>,
    /// `"chain"` (the default) or `"tenant"`: what `concurrency` counts.
    pub concurrency_per: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    /// Who may submit this chain: `group:NAME` or `user:NAME` entries.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Also forward the activities' output lines to the journal.
    #[serde(default)]
    pub journal: bool,
    /// The highest `priority` a submitter outside the operators may ask for.
    pub max_priority: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    #[serde(default)]
    pub required: bool,
    pub default: Option<Spanned<toml::Value>>,
    #[serde(rename = "enum")]
    pub allowed: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub pattern: Option<Spanned<String>>,
    /// For `int` and `float`: bounds, inclusive.
    pub min: Option<Spanned<toml::Value>>,
    pub max: Option<Spanned<toml::Value>>,
    pub description: Option<String>,
    /// `secret = true`: never shown, never in argv (see `ParamSpec::secret`).
    #[serde(default)]
    pub secret: Option<Spanned<bool>>,
}

/// `[defaults]`, and the same keys when an activity overrides them.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_delay: Option<Spanned<String>>,
    pub retry_backoff: Option<Spanned<f64>>,
    pub max_retry_delay: Option<Spanned<String>>,
    pub on_failure: Option<Spanned<String>>,
    pub env: Option<IndexMap<Spanned<String>, Spanned<String>>>,
    pub working_dir: Option<Spanned<String>>,
    pub memory_max: Option<Spanned<toml::Value>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub nofile: Option<Spanned<i64>>,
    pub tasks_max: Option<Spanned<i64>>,
    pub cpu_weight: Option<Spanned<i64>>,
    pub cpu_quota: Option<Spanned<String>>,
    pub connections: Option<Vec<Spanned<String>>>,
    pub executor: Option<Spanned<String>>,
    pub cpus: Option<Spanned<i64>>,
    pub slurm: Option<RawSlurm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub cron: Spanned<String>,
    pub timezone: Option<Spanned<String>>,
    pub params: Option<IndexMap<Spanned<String>, Spanned<toml::Value>>>,
    #[serde(default)]
    pub tenants: Vec<Spanned<String>>,
    pub catch_up: Option<Spanned<String>>,
    pub max_catch_up: Option<Spanned<i64>>,
    pub overlap: Option<Spanned<String>>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pub mode: Option<Spanned<String>>,
    pub after: Option<Spanned<Vec<Spanned<String>>>>,
    /// For people reading the file; the model has no use for it.
    #[serde(rename = "description")]
    pub _description: Option<IgnoredAny>,
    /// Activities are taken out of the table before it is read (see
    /// [`read_process`]); the field is declared so that an unknown key's
    /// message lists `activity` among the expected ones.
    #[serde(rename = "activity")]
    pub _activity: Option<IgnoredAny>,
}

/// An activity: its program plus overrides of `[defaults]`. Serde cannot
/// flatten [`RawSettings`] in here and still refuse unknown keys, so the
/// keys are repeated and split by [`RawActivity::into_parts`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActivity {
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub shell: Option<Spanned<String>>,
    #[serde(rename = "description")]
    pub _description: Option<IgnoredAny>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_delay: Option<Spanned<String>>,
    pub retry_backoff: Option<Spanned<f64>>,
    pub max_retry_delay: Option<Spanned<String>>,
    pub on_failure: Option<Spanned<String>>,
    pub env: Option<IndexMap<Spanned<String>, Spanned<String>>>,
    pub working_dir: Option<Spanned<String>>,
    pub memory_max: Option<Spanned<toml::Value>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub nofile: Option<Spanned<i64>>,
    pub tasks_max: Option<Spanned<i64>>,
    pub cpu_weight: Option<Spanned<i64>>,
    pub cpu_quota: Option<Spanned<String>>,
    pub connections: Option<Vec<Spanned<String>>>,
    pub executor: Option<Spanned<String>>,
    pub cpus: Option<Spanned<i64>>,
    pub slurm: Option<RawSlurm>,
    pub simulate: Option<Spanned<RawSimulate>>,
    /// A handler activity's `undoes`: activities or processes it rolls back.
    pub undoes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Fan-out: run once per item of this list (a template), or of
    /// `{ count, chunk_size }`.
    pub foreach: Option<Spanned<toml::Value>>,
    /// Fan-out: items of this activity running at once.
    pub max_parallel: Option<Spanned<i64>>,
}

/// `[defaults.slurm]` or `[process.<p>.activity.<a>.slurm]`: options for
/// `sbatch` when the executor is Slurm.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlurm {
    pub partition: Option<Spanned<String>>,
    pub account: Option<Spanned<String>>,
    pub qos: Option<Spanned<String>>,
    pub constraint: Option<Spanned<String>>,
    pub sbatch_args: Option<Vec<Spanned<String>>>,
}

/// `[process.<p>.activity.<a>.simulate]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSimulate {
    pub exit_code: Option<Spanned<i64>>,
    pub duration: Option<Spanned<String>>,
    pub outputs: Option<toml::Table>,
}

/// An activity's program keys.
pub(super) struct RawProgram {
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub shell: Option<Spanned<String>>,
}

impl RawActivity {
    pub fn into_parts(self) -> (RawProgram, RawSettings) {
        (
            RawProgram {
                command: self.command,
                shell: self.shell,
            },
            RawSettings {
                timeout: self.timeout,
                retries: self.retries,
                retry_delay: self.retry_delay,
                retry_backoff: self.retry_backoff,
                max_retry_delay: self.max_retry_delay,
                on_failure: self.on_failure,
                env: self.env,
                working_dir: self.working_dir,
                memory_max: self.memory_max,
                user: self.user,
                group: self.group,
                nofile: self.nofile,
                tasks_max: self.tasks_max,
                cpu_weight: self.cpu_weight,
                cpu_quota: self.cpu_quota,
                connections: self.connections,
                executor: self.executor,
                cpus: self.cpus,
                slurm: self.slurm,
            },
        )
    }
}

/// A named table (`[process.<name>]`, ...). `value` is None when the table
/// itself had a shape error, which is already reported; the name is kept so
/// that counts and references to it stay right.
pub(super) struct Named<T> {
    pub name: String,
    pub name_span: Span,
    /// The table's header, where errors about the whole table point.
    pub span: Span,
    pub value: Option<T>,
}

pub(super) struct RawProcessEntry {
    pub process: Option<RawProcess>,
    /// None when `activity` (or the process itself) is not a table, which
    /// is already reported.
    pub activities: Option<Vec<Named<RawActivity>>>,
}

#[derive(Default)]
pub(super) struct RawFile {
    pub chain: Option<RawChain>,
    pub params: Vec<Named<RawParam>>,
    pub defaults: Option<RawSettings>,
    pub schedules: Vec<Named<RawSchedule>>,
    pub processes: Vec<Named<RawProcessEntry>>,
    /// `[handler.<kind>]`, read like processes.
    pub handlers: Vec<Named<RawProcessEntry>>,
    /// `[notify.<name>]`: notification rules for this chain.
    pub notify: Vec<Named<super::notify::RawNotify>>,
}

/// Reads the document's top-level tables, reporting shape errors (unknown
/// keys, wrong types, missing keys) as it goes.
pub(super) fn read_file(root: DeTable<'_>, diagnostics: &mut Diagnostics<'_>) -> RawFile {
    let mut file = RawFile::default();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "chain" => file.chain = read(value, diagnostics),
            "params" => {
                file.params =
                    read_named(value, "params", diagnostics, read_table).unwrap_or_default()
            }
            "defaults" => file.defaults = read(value, diagnostics),
            "schedule" => {
                file.schedules =
                    read_named(value, "schedule", diagnostics, read_table).unwrap_or_default();
            }
            "process" => {
                file.processes = read_named(value, "process", diagnostics, |name, value, d| {
                    Some(read_process("process", name, value, d))
                })
                .unwrap_or_default();
            }
            "handler" => {
                file.handlers = read_named(value, "handler", diagnostics, |name, value, d| {
                    Some(read_process("handler", name, value, d))
                })
                .unwrap_or_default();
            }
            "notify" => {
                file.notify =
                    read_named(value, "notify", diagnostics, read_table).unwrap_or_default();
            }
            other => diagnostics.shape_error(
                &key.span(),
                format!(
                    "unknown key {other:?} at the top level; expected [chain], [params.<name>], \
                     [defaults], [schedule.<name>], [process.<name>], [handler.<kind>] or \
                     [notify.<name>]"
                ),
            ),
        }
    }
    file
}

fn read_process(
    section: &str,
    name: &str,
    value: Spanned<DeValue<'_>>,
    diagnostics: &mut Diagnostics<'_>,
) -> RawProcessEntry {
    let span = value.span();
    let DeValue::Table(mut table) = value.into_inner() else {
        diagnostics.shape_error(
            &span,
            format!("{section}.{name} must be a table, like [{section}.<name>]"),
        );
        return RawProcessEntry {
            process: None,
            activities: None,
        };
    };
    let activities = match table.remove("activity") {
        Some(activities) => read_named(
            activities,
            &format!("{section}.{name}.activity"),
            diagnostics,
            read_table,
        ),
        None => Some(Vec::new()),
    };
    let process = read(Spanned::new(span, DeValue::Table(table)), diagnostics);
    RawProcessEntry {
        process,
        activities,
    }
}

/// Reads every `<section>.<name>` table with `read_one`, which is given the
/// name too. None when `value` is not a table at all.
fn read_named<T>(
    value: Spanned<DeValue<'_>>,
    section: &str,
    diagnostics: &mut Diagnostics<'_>,
    mut read_one: impl FnMut(&str, Spanned<DeValue<'_>>, &mut Diagnostics<'_>) -> Option<T>,
) -> Option<Vec<Named<T>>> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        diagnostics.shape_error(
            &span,
            format!("{section} must hold named tables, like [{section}.<name>]"),
        );
        return None;
    };
    let entries = table
        .into_iter()
        .map(|(key, value)| {
            let span = value.span();
            let name = key.get_ref().to_string();
            Named {
                value: read_one(&name, value, diagnostics),
                name,
                name_span: key.span(),
                span,
            }
        })
        .collect();
    Some(entries)
}

/// [`read`] for a named table, whose name it does not need.
fn read_table<T: for<'de> Deserialize<'de>>(
    _name: &str,
    value: Spanned<DeValue<'_>>,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<T> {
    read(value, diagnostics)
}

fn read<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<T> {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let at = e.span().unwrap_or(span);
            diagnostics.shape_error(&at, plain_message(e.message()));
            None
        }
    }
}

/// Serde speaks of Rust types; say it in TOML's words.
pub(super) fn plain_message(message: &str) -> String {
    let mut text = message
        .replacen("unknown field", "unknown key", 1)
        .replacen("missing field", "missing key", 1)
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(at) = text.find("expected struct ") {
        text.truncate(at);
        text.push_str("expected a table");
    }
    text
}
