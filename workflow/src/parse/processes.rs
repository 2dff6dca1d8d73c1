//! Processes and activities on their way into a [`Chain`](crate::model::Chain):
//! programs, inherited settings, `after` and its cycles, each activity's
//! dependencies, and the template checks that need all of them.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use super::raw::{Named, RawProcessEntry, RawProgram, RawSimulate, Span};
use super::references::{Owner, Scope};
use super::values::Settings;
use super::{Diagnostics, check_name, graph};
use crate::model::{Activity, Foreach, HandlerKind, Mode, ParamSpec, Process, Program, Simulate};
use crate::template::secret_file_calls;

/// Check a `simulate` table.
fn simulate(raw: RawSimulate, diagnostics: &mut Diagnostics<'_>) -> Option<Simulate> {
    let mut out = Simulate::default();
    let mut ok = true;
    if let Some(code) = raw.exit_code {
        match i32::try_from(*code.get_ref()) {
            Ok(c) if (0..=255).contains(&c) => out.exit_code = c,
            _ => {
                diagnostics.error(&code.span(), "simulate.exit_code must be from 0 to 255");
                ok = false;
            }
        }
    }
    if let Some(text) = &raw.duration {
        match super::values::duration("simulate.duration", text, true, diagnostics) {
            Some(d) => out.duration = d,
            None => ok = false,
        }
    }
    if let Some(table) = raw.outputs {
        match super::values::to_json(&toml::Value::Table(table)) {
            Ok(serde_json::Value::Object(map)) => out.outputs = map,
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// A template written in an activity, with where.
pub(super) struct Site {
    field: String,
    text: String,
    span: Span,
}

pub(super) struct ProcessDraft {
    pub process: Process,
    span: Span,
    /// `after` as written, with where.
    after: Vec<(String, Span)>,
    after_span: Option<Span>,
}

/// Processes and activities on their way to a [`Chain`].
#[derive(Default)]
pub(super) struct Draft {
    pub processes: Vec<ProcessDraft>,
    pub activities: Vec<Activity>,
    /// Per activity, the templates it writes itself (not inherited).
    sites: Vec<Vec<Site>>,
    /// Per activity, its `undoes` as written (handlers only), resolved by
    /// [`super::handlers::resolve_undoes`].
    pub undoes: Vec<Option<toml::Spanned<Vec<toml::Spanned<String>>>>>,
}

impl Draft {
    pub fn add_process(
        &mut self,
        chain: &str,
        entry: Named<RawProcessEntry>,
        handler: Option<HandlerKind>,
        defaults: &Settings,
        diagnostics: &mut Diagnostics<'_>,
    ) {
        // A handler's name is its kind, checked by `handlers::add_handlers`.
        if handler.is_none() {
            check_name("process", &entry.name, &entry.name_span, diagnostics);
            if HandlerKind::parse(&entry.name).is_some() {
                diagnostics.error(
                    &entry.name_span,
                    format!(
                        "process name {:?} is kept for [handler.{}]; rename the process",
                        entry.name, entry.name
                    ),
                );
            }
        }
        let section = if handler.is_some() {
            "handler"
        } else {
            "process"
        };
        let readable = entry.value.as_ref().is_some_and(|e| e.activities.is_some());
        let RawProcessEntry {
            process,
            activities,
        } = entry.value.unwrap_or(RawProcessEntry {
            process: None,
            activities: None,
        });
        let mut mode = Mode::Serial;
        let mut after = Vec::new();
        let mut after_span = None;
        if let Some(raw) = process {
            if let Some(m) = raw.mode {
                match m.get_ref().as_str() {
                    "serial" => mode = Mode::Serial,
                    "parallel" => mode = Mode::Parallel,
                    other => diagnostics.error(
                        &m.span(),
                        format!("mode must be \"serial\" or \"parallel\"; got {other:?}"),
                    ),
                }
            }
            if let Some(list) = raw.after.filter(|list| {
                if handler.is_some() {
                    diagnostics.error(
                        &list.span(),
                        "a handler runs once the whole job is done, so it takes no after; remove it",
                    );
                }
                handler.is_none()
            }) {
                after_span = Some(list.span());
                after = list
                    .into_inner()
                    .into_iter()
                    .map(|n| (n.get_ref().clone(), n.span()))
                    .collect();
            }
        }
        let activities = activities.unwrap_or_default();
        // When the activities could not be read, that error is the one to
        // fix; "no activities" would only repeat it.
        if activities.is_empty() && readable {
            diagnostics.error(
                &entry.span,
                format!(
                    "{section} {:?} has no activities; add a [{section}.{}.activity.<name>] table",
                    entry.name, entry.name
                ),
            );
        }
        let process_index = self.processes.len();
        let mut indices = Vec::new();
        for activity in activities {
            check_name("activity", &activity.name, &activity.name_span, diagnostics);
            let Some(mut raw) = activity.value else {
                continue;
            };
            let simulate = raw
                .simulate
                .take()
                .and_then(|s| simulate(s.into_inner(), diagnostics));
            let undoes = raw.undoes.take();
            let mut sites = Vec::new();
            let foreach = raw
                .foreach
                .take()
                .and_then(|f| foreach(f, handler.is_some(), &mut sites, diagnostics));
            let max_parallel = raw.max_parallel.take().and_then(|m| {
                let span = m.span();
                match (*m.get_ref(), &foreach) {
                    (_, None) => {
                        diagnostics.error(
                            &span,
                            "max_parallel on an activity bounds the items of its foreach; \
                             add foreach, or set max_parallel in [chain]",
                        );
                        None
                    }
                    (n, Some(_)) if n >= 1 => Some(n as usize),
                    (n, Some(_)) => {
                        diagnostics
                            .error(&span, format!("max_parallel must be at least 1; got {n}"));
                        None
                    }
                }
            });
            if let (Some(list), None) = (&undoes, handler) {
                diagnostics.error(
                    &list.span(),
                    "undoes belongs to handler activities ([handler.<kind>.activity.<name>]); remove it",
                );
            }
            self.undoes.push(undoes.filter(|_| handler.is_some()));
            let (program, settings) = raw.into_parts();
            let settings = defaults.overridden(settings, false, diagnostics);
            let program = build_program(&activity.span, program, &mut sites, diagnostics);
            for (name, value) in &settings.env {
                if !value.from_defaults {
                    sites.push(Site {
                        field: format!("env.{name}"),
                        text: value.text.clone(),
                        span: value.span.clone(),
                    });
                }
            }
            if let Some(dir) = settings.working_dir.as_ref().filter(|d| !d.from_defaults) {
                sites.push(Site {
                    field: "working_dir".to_string(),
                    text: dir.text.clone(),
                    span: dir.span.clone(),
                });
            }
            indices.push(self.activities.len());
            self.sites.push(sites);
            self.activities.push(Activity {
                path: format!("{chain}.{}.{}", entry.name, activity.name),
                process: entry.name.clone(),
                name: activity.name,
                process_index,
                program,
                env: settings
                    .env
                    .into_iter()
                    .map(|(name, value)| (name, value.text))
                    .collect(),
                working_dir: settings.working_dir.map(|d| d.text),
                timeout: settings.timeout,
                retries: settings.retries,
                retry_delay: settings.retry_delay,
                retry_backoff: settings.retry_backoff,
                max_retry_delay: settings.max_retry_delay,
                on_failure: settings.on_failure,
                memory_max: settings.memory_max,
                user: settings.user,
                group: settings.group,
                nofile: settings.nofile,
                tasks_max: settings.tasks_max,
                cpu_weight: settings.cpu_weight,
                cpu_quota: settings.cpu_quota,
                connections: settings.connections,
                executor: settings.executor,
                cpus: settings.cpus,
                slurm: settings.slurm,
                deps: Vec::new(),
                output_refs: Vec::new(),
                secret_files: Vec::new(),
                simulate,
                handler,
                undoes: Vec::new(),
                foreach,
                max_parallel,
            });
        }
        self.processes.push(ProcessDraft {
            process: Process {
                name: entry.name,
                mode,
                after: after.iter().map(|(name, _)| name.clone()).collect(),
                activities: indices,
                handler,
            },
            span: entry.span,
            after,
            after_span,
        });
    }

    /// Resolves `after`, reports its cycles and fills `Activity::deps`.
    pub fn link(&mut self, diagnostics: &mut Diagnostics<'_>) {
        let index: HashMap<&str, usize> = self
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.process.handler.is_none())
            .map(|(i, p)| (p.process.name.as_str(), i))
            .collect();
        let mut edges: Vec<Vec<usize>> = Vec::new();
        for draft in &self.processes {
            let mut waits_for = Vec::new();
            for (name, span) in &draft.after {
                match index.get(name.as_str()) {
                    Some(_) if *name == draft.process.name => {
                        diagnostics.error(span, format!("process {name:?} cannot run after itself"))
                    }
                    Some(&i) => {
                        if !waits_for.contains(&i) {
                            waits_for.push(i);
                        }
                    }
                    None => diagnostics.error(
                        span,
                        format!(
                            "after names unknown process {name:?}; processes: {}",
                            self.processes
                                .iter()
                                .filter(|p| p.process.handler.is_none())
                                .map(|p| p.process.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
            edges.push(waits_for);
        }
        for cycle in graph::cycles(&edges) {
            let first = &self.processes[cycle[0]];
            let names: Vec<&str> = cycle
                .iter()
                .chain(cycle.first())
                .map(|&i| self.processes[i].process.name.as_str())
                .collect();
            diagnostics.error(
                first.after_span.as_ref().unwrap_or(&first.span),
                format!(
                    "after forms a cycle: {} (each process runs after the next)",
                    names.join(" -> ")
                ),
            );
        }
        for (p, draft) in self.processes.iter().enumerate() {
            let upstream: Vec<usize> = edges[p]
                .iter()
                .flat_map(|&q| self.processes[q].process.activities.iter().copied())
                .collect();
            for (position, &a) in draft.process.activities.iter().enumerate() {
                let mut deps = upstream.clone();
                if draft.process.mode == Mode::Serial && position > 0 {
                    deps.push(draft.process.activities[position - 1]);
                }
                deps.sort_unstable();
                deps.dedup();
                self.activities[a].deps = deps;
            }
        }
    }

    /// Checks every template against what exists when it renders, and
    /// fills `Activity::output_refs`.
    pub fn check_templates(
        &mut self,
        params: &IndexMap<String, ParamSpec>,
        defaults: &Settings,
        diagnostics: &mut Diagnostics<'_>,
    ) {
        let deps: Vec<Vec<usize>> = self.activities.iter().map(|a| a.deps.clone()).collect();
        let mut upstream = graph::upstream(&deps);
        // A handler runs once the graph is done: every activity's outputs
        // so far are there to read.
        let main: Vec<usize> = (self.activities.iter().enumerate())
            .filter(|(_, a)| a.handler.is_none())
            .map(|(i, _)| i)
            .collect();
        for (i, activity) in self.activities.iter().enumerate() {
            if activity.handler.is_some() {
                upstream[i].extend(main.iter().copied());
            }
        }
        let scope = Scope {
            params,
            activities: self
                .activities
                .iter()
                .enumerate()
                .map(|(i, a)| ((a.process.as_str(), a.name.as_str()), i))
                .collect(),
        };
        let mut none = BTreeSet::new();
        for (name, value) in &defaults.env {
            let field = format!("env.{name}");
            scope.check(
                &Owner::Defaults,
                &field,
                &value.text,
                &value.span,
                &mut none,
                diagnostics,
            );
        }
        if let Some(dir) = &defaults.working_dir {
            scope.check(
                &Owner::Defaults,
                "working_dir",
                &dir.text,
                &dir.span,
                &mut none,
                diagnostics,
            );
        }
        let mut refs = Vec::with_capacity(self.activities.len());
        let mut files = Vec::with_capacity(self.activities.len());
        for (i, activity) in self.activities.iter().enumerate() {
            let mut secret_files = BTreeSet::new();
            for site in &self.sites[i] {
                // Errors in the calls are reported by `Scope::check`.
                secret_files.extend(secret_file_calls(&site.text).unwrap_or_default());
            }
            files.push(secret_files.into_iter().collect::<Vec<_>>());
            let owner = Owner::Activity {
                handler: activity.handler.is_some(),
                item: activity.foreach.is_some(),
                path: &activity.path,
                process: &activity.process,
                upstream: &upstream[i],
            };
            let mut output_refs = BTreeSet::new();
            for site in &self.sites[i] {
                scope.check(
                    &owner,
                    &site.field,
                    &site.text,
                    &site.span,
                    &mut output_refs,
                    diagnostics,
                );
            }
            refs.push(output_refs);
        }
        for ((activity, output_refs), secret_files) in
            self.activities.iter_mut().zip(refs).zip(files)
        {
            activity.output_refs = output_refs.into_iter().collect();
            activity.secret_files = secret_files;
        }
    }
}

/// `foreach`: a template rendering a JSON array, or `{ count, chunk_size }`.
/// Its templates are checked with the activity's others (`sites`).
fn foreach(
    raw: toml::Spanned<toml::Value>,
    handler: bool,
    sites: &mut Vec<Site>,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<Foreach> {
    let span = raw.span();
    if handler {
        diagnostics.error(&span, "a handler activity cannot fan out; remove foreach");
        return None;
    }
    match raw.into_inner() {
        toml::Value::String(text) => {
            if text == "tenants" {
                return Some(Foreach::Tenants);
            }
            sites.push(Site {
                field: "foreach".to_string(),
                text: text.clone(),
                span,
            });
            Some(Foreach::List(text))
        }
        toml::Value::Table(mut table) => {
            let count = match table.remove("count") {
                Some(toml::Value::String(text)) => text,
                Some(toml::Value::Integer(n)) if n >= 0 => n.to_string(),
                _ => {
                    diagnostics.error(
                        &span,
                        "foreach.count must be a number of records or a template giving one",
                    );
                    return None;
                }
            };
            let chunk_size = match table.remove("chunk_size") {
                Some(toml::Value::Integer(n)) if n >= 1 => n as u64,
                _ => {
                    diagnostics.error(
                        &span,
                        "foreach.chunk_size must be a whole number, at least 1",
                    );
                    return None;
                }
            };
            if let Some(key) = table.keys().next() {
                diagnostics.error(
                    &span,
                    format!("foreach has no key {key:?}; it takes count and chunk_size"),
                );
                return None;
            }
            sites.push(Site {
                field: "foreach.count".to_string(),
                text: count.clone(),
                span,
            });
            Some(Foreach::Chunks { count, chunk_size })
        }
        _ => {
            diagnostics.error(
                &span,
                "foreach takes a template of a JSON array (\"{{ outputs.p.a.list }}\") \
                 or { count = ..., chunk_size = N }",
            );
            None
        }
    }
}

/// `command` (an argv of templates) or `shell` (a script, never a template).
fn build_program(
    activity_span: &Span,
    raw: RawProgram,
    sites: &mut Vec<Site>,
    diagnostics: &mut Diagnostics<'_>,
) -> Program {
    match (raw.command, raw.shell) {
        (Some(command), None) => {
            let argv = command.get_ref();
            match argv.first() {
                None => diagnostics.error(
                    &command.span(),
                    "command is empty; give the program and its arguments, like [\"/usr/bin/env\", \"true\"]",
                ),
                Some(program) if program.get_ref().is_empty() => {
                    diagnostics.error(&program.span(), "the program name (command[0]) is empty");
                }
                Some(_) => {}
            }
            for (i, arg) in argv.iter().enumerate() {
                sites.push(Site {
                    field: format!("command[{i}]"),
                    text: arg.get_ref().clone(),
                    span: arg.span(),
                });
            }
            Program::Command(argv.iter().map(|a| a.get_ref().clone()).collect())
        }
        (None, Some(shell)) => {
            let script = shell.get_ref();
            if script.trim().is_empty() {
                diagnostics.error(&shell.span(), "shell script is empty");
            }
            if script.contains("{{") || script.contains("{%") {
                // Splicing values into shell text would let a parameter
                // inject shell code.
                diagnostics.error(
                    &shell.span(),
                    "shell scripts are not templates, so values are never spliced into them: \
                     read parameters from $HF_PARAM_<NAME>, or set a templated value in env \
                     and use that variable",
                );
            }
            Program::Shell(script.clone())
        }
        (Some(command), Some(_)) => {
            diagnostics.error(
                &command.span(),
                "give either command (an argv) or shell (a script), not both",
            );
            Program::Command(Vec::new())
        }
        (None, None) => {
            diagnostics.error(
                activity_span,
                "the activity has nothing to run; add command (an argv) or shell (a script)",
            );
            Program::Command(Vec::new())
        }
    }
}
