//! Load-time checks of templates: each must parse, and each variable it
//! reads must exist when the activity runs (a declared parameter, a job
//! field, or an output of an activity that runs before it).

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use super::Diagnostics;
use super::raw::Span;
use crate::model::ParamSpec;
use crate::template::{referenced_variables, secret_file_calls, unavailable_names};

const JOB_FIELDS: [&str; 6] = ["id", "run_id", "chain", "target", "tenant", "attempt"];
/// What a handler's templates see besides [`JOB_FIELDS`].
const HANDLER_JOB_FIELDS: [&str; 3] = ["state", "failed", "errors"];

/// What a template may refer to in this chain.
pub(super) struct Scope<'a> {
    pub params: &'a IndexMap<String, ParamSpec>,
    /// `(process, activity)` to its index in `Chain::activities`.
    pub activities: HashMap<(&'a str, &'a str), usize>,
}

/// Whose template is checked: an activity (with what runs before it), or
/// `[defaults]`, which applies to every activity and so has nothing that is
/// surely upstream.
pub(super) enum Owner<'a> {
    Activity {
        /// A handler's activity, which also sees the job's outcome.
        handler: bool,
        /// A fan-out's activity, which sees its `item`.
        item: bool,
        path: &'a str,
        process: &'a str,
        upstream: &'a BTreeSet<usize>,
    },
    Defaults,
}

impl Owner<'_> {
    fn describe(&self) -> String {
        match self {
            Owner::Activity { path, .. } => format!("activity {path}"),
            Owner::Defaults => "[defaults]".to_string(),
        }
    }
}

impl Scope<'_> {
    /// Checks one template (`field` says which, like `command[2]`) and adds
    /// the activities whose outputs it reads to `output_refs`.
    pub fn check(
        &self,
        owner: &Owner<'_>,
        field: &str,
        template: &str,
        span: &Span,
        output_refs: &mut BTreeSet<usize>,
        diagnostics: &mut Diagnostics<'_>,
    ) {
        let references = match referenced_variables(template) {
            Ok(references) => references,
            Err(message) => {
                diagnostics.error(
                    span,
                    format!(
                        "{}: {field} is not a valid template: {message}",
                        owner.describe()
                    ),
                );
                return;
            }
        };
        match secret_file_calls(template) {
            Err(message) => {
                diagnostics.error(span, format!("{}: {field}: {message}", owner.describe()))
            }
            Ok(names) => {
                for name in names {
                    let problem = match self.params.get(&name) {
                        Some(spec) if spec.secret => continue,
                        Some(_) => {
                            "reads a parameter that is not secret; declare it \
                                    secret = true, or use its value directly"
                        }
                        None => "names no declared parameter",
                    };
                    diagnostics.error(
                        span,
                        format!(
                            "{}: {field}: secret_file({name:?}) {problem}",
                            owner.describe()
                        ),
                    );
                }
            }
        }
        for problem in unavailable_names(template) {
            diagnostics.error(
                span,
                format!("{}: {field} uses {problem}", owner.describe()),
            );
        }
        // `env` values reach only the activity's environment; everything
        // else a template renders (argv elements, the working directory)
        // is visible in /proc to every local user.
        let visible = !field.starts_with("env.");
        // `debug()` renders the whole context, secrets included, without
        // naming a variable.
        if visible
            && template.contains("debug(")
            && let Some(spec) = self.params.values().find(|spec| spec.secret)
        {
            diagnostics.error(
                span,
                format!(
                    "{}: {field} calls debug(), which shows every parameter, and {:?} is secret",
                    owner.describe(),
                    spec.name
                ),
            );
        }
        for reference in &references {
            if visible && let Some(problem) = self.secret_in(reference) {
                diagnostics.error(
                    span,
                    format!(
                        "{}: {field} would show {problem} to every local user (in /proc and \
                         ps); secrets reach an activity only through its environment: read \
                         $HF_PARAM_<NAME>, or set env.NAME = \"{{{{ params.<name> }}}}\" and \
                         use that variable",
                        owner.describe()
                    ),
                );
            }
            if let Err(problem) = self.check_reference(owner, reference, output_refs) {
                diagnostics.error(
                    span,
                    format!("{}: {field} references {problem}", owner.describe()),
                );
            }
        }
    }

    /// The secret parameter a reference would render, if any: `params.x`
    /// of a secret `x`, or `params` itself while any parameter is secret.
    fn secret_in(&self, reference: &str) -> Option<String> {
        let mut segments = reference.split('.');
        if segments.next() != Some("params") {
            return None;
        }
        match segments.next() {
            Some(name) => self
                .params
                .get(name)
                .filter(|spec| spec.secret)
                .map(|_| format!("the secret parameter {name:?}")),
            None => self
                .params
                .values()
                .find(|spec| spec.secret)
                .map(|spec| format!("every parameter, and {:?} is secret", spec.name)),
        }
    }

    fn check_reference(
        &self,
        owner: &Owner<'_>,
        reference: &str,
        output_refs: &mut BTreeSet<usize>,
    ) -> Result<(), String> {
        let segments: Vec<&str> = reference.split('.').collect();
        match segments.as_slice() {
            ["params"] | ["job"] | ["schedule"] => Ok(()),
            ["item", ..] if matches!(owner, Owner::Activity { item: true, .. }) => Ok(()),
            ["item", ..] => Err(
                "item, which only an activity with foreach (a fan-out) sees; add foreach".into(),
            ),
            ["schedule", field, ..] if crate::template::SCHEDULE_FIELDS.contains(field) => Ok(()),
            ["schedule", field, ..] => Err(format!(
                "unknown schedule field {field:?}; available: {}",
                crate::template::SCHEDULE_FIELDS.join(", ")
            )),
            ["params", name, ..] => {
                if self.params.contains_key(*name) {
                    return Ok(());
                }
                let mut message = if self.params.is_empty() {
                    format!("unknown parameter {name:?}; the chain declares no parameters")
                } else {
                    let declared: Vec<&str> = self.params.keys().map(String::as_str).collect();
                    format!(
                        "unknown parameter {name:?}; declared: {}",
                        declared.join(", ")
                    )
                };
                // `params.dry-run` parses as `params.dry - run`: point at
                // the subscript form.
                if let Some(close) = self
                    .params
                    .keys()
                    .find(|declared| declared.starts_with(&format!("{name}-")))
                {
                    message.push_str(&format!("; a name with \"-\" is written params[{close:?}]"));
                }
                Err(message)
            }
            ["job", field, ..] if JOB_FIELDS.contains(field) => Ok(()),
            ["job", field, ..]
                if HANDLER_JOB_FIELDS.contains(field)
                    && matches!(owner, Owner::Activity { handler: true, .. }) =>
            {
                Ok(())
            }
            ["job", field, ..] if HANDLER_JOB_FIELDS.contains(field) => Err(format!(
                "job.{field}, which only handlers ([handler.<kind>]) see: the job has no outcome before they run"
            )),
            ["job", field, ..] => Err(format!(
                "unknown job field {field:?}; available: {}",
                JOB_FIELDS.join(", ")
            )),
            ["outputs", process, activity, ..] => {
                let Some(&index) = self.activities.get(&(*process, *activity)) else {
                    return Err(format!(
                        "outputs of {process}.{activity}, but the chain has no such activity"
                    ));
                };
                match owner {
                    Owner::Defaults => Err(format!(
                        "outputs of {process}.{activity}, but [defaults] apply to every \
                         activity; set this on the activities that run after it"
                    )),
                    Owner::Activity {
                        process: own,
                        upstream,
                        ..
                    } if !upstream.contains(&index) => {
                        let fix = if own == process {
                            "only earlier activities of a serial process run before it"
                        } else {
                            "list its process in this process's after"
                        };
                        Err(format!(
                            "outputs of {process}.{activity}, which does not run before it; {fix}"
                        ))
                    }
                    Owner::Activity { .. } => {
                        output_refs.insert(index);
                        Ok(())
                    }
                }
            }
            ["outputs", ..] => Err(format!(
                "{reference} without naming an activity; write \
                 outputs.<process>.<activity>.<key>"
            )),
            _ => Err(format!(
                "unknown variable {reference:?}; templates can use params.<name>, \
                 job.<field> and outputs.<process>.<activity>.<key>"
            )),
        }
    }
}
