//! `[handler.<kind>]` tables on their way into a chain: which kinds exist,
//! and each handler activity's `undoes` resolved to the activities it rolls
//! back.

use super::Diagnostics;
use super::processes::Draft;
use super::raw::{Named, RawProcessEntry, Span};
use super::values::Settings;
use crate::model::HandlerKind;

/// Adds every `[handler.<kind>]` to the draft, after the processes.
pub(super) fn add_handlers(
    draft: &mut Draft,
    chain: &str,
    handlers: Vec<Named<RawProcessEntry>>,
    defaults: &Settings,
    diagnostics: &mut Diagnostics<'_>,
) {
    for entry in handlers {
        let Some(kind) = HandlerKind::parse(&entry.name) else {
            diagnostics.error(
                &entry.name_span,
                format!(
                    "unknown handler {:?}; handlers are {}",
                    entry.name,
                    HandlerKind::ALL.map(HandlerKind::as_str).join(", ")
                ),
            );
            continue;
        };
        draft.add_process(chain, entry, Some(kind), defaults, diagnostics);
    }
}

/// Resolves each handler activity's `undoes` (`"process"` or
/// `"process.activity"`, of the chain's processes, not of handlers) to
/// activity indices.
pub(super) fn resolve_undoes(draft: &mut Draft, diagnostics: &mut Diagnostics<'_>) {
    for i in 0..draft.activities.len() {
        let Some(list) = draft.undoes[i].take() else {
            continue;
        };
        let mut undoes = Vec::new();
        for entry in list.get_ref() {
            match find(draft, entry.get_ref()) {
                Ok(found) => undoes.extend(found),
                Err(message) => error(
                    diagnostics,
                    &entry.span(),
                    &draft.activities[i].path,
                    &message,
                ),
            }
        }
        undoes.sort_unstable();
        undoes.dedup();
        draft.activities[i].undoes = undoes;
    }
}

fn error(diagnostics: &mut Diagnostics<'_>, span: &Span, path: &str, message: &str) {
    diagnostics.error(span, format!("activity {path}: undoes {message}"));
}

/// The activities one `undoes` entry names.
fn find(draft: &Draft, name: &str) -> Result<Vec<usize>, String> {
    let is_main = |i: &usize| draft.activities[*i].handler.is_none();
    let found: Vec<usize> = match name.split_once('.') {
        None => (0..draft.activities.len())
            .filter(|i| is_main(i) && draft.activities[*i].process == name)
            .collect(),
        Some((process, activity)) => (0..draft.activities.len())
            .filter(|i| {
                is_main(i)
                    && draft.activities[*i].process == process
                    && draft.activities[*i].name == activity
            })
            .collect(),
    };
    if found.is_empty() {
        let known: Vec<&str> = (draft.processes.iter())
            .filter(|p| p.process.handler.is_none())
            .map(|p| p.process.name.as_str())
            .collect();
        return Err(format!(
            "names {name:?}, which is no process or process.activity of the chain; processes: {}",
            known.join(", ")
        ));
    }
    Ok(found)
}
