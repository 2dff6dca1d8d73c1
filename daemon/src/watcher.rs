//! Watches the workflows, tenants and connections directories and asks the engine to
//! reload when a file there is created, changed, renamed or removed.
//!
//! The directory is watched, not the files, so editors that save through a
//! temporary file and a rename are seen. Access events (the daemon's own
//! reads open and close the files) are ignored, or every reload would
//! trigger another; so are names that are not workflow files (`*~`,
//! `.*.swp`, `*.dpkg-*`, ...).

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_workflow::parse::is_workflow_file_name;
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::engine::EngineHandle;

/// How long a burst of file events is gathered before one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the watch alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

/// True when a debounced event should cause a reload.
fn relevant(kind: &EventKind, paths: &[PathBuf]) -> bool {
    if matches!(kind, EventKind::Access(_)) {
        return false;
    }
    paths.iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_workflow_file_name)
    })
}

/// Start watching `dir`. A directory that cannot be watched is logged and
/// left to `hfctl reload` and SIGHUP.
pub fn start(dirs: &[&Path], engine: EngineHandle) -> Option<Watcher> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(|e| relevant(&e.kind, &e.paths)) {
                // A full channel already holds a pending reload: enough.
                let _ = tx.try_send(());
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::warn!(error = %error, "workflow directory watch error");
            }
        }
    };
    let mut debouncer = match new_debouncer(DEBOUNCE, None, handler) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the workflow watcher; use `hfctl reload` or SIGHUP");
            return None;
        }
    };
    for dir in dirs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the directory; not watching it");
            continue;
        }
        match debouncer.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "watching {} for changes", dir.display())
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the directory; use `hfctl reload` or SIGHUP")
            }
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            engine.reload().await;
        }
    });
    Some(Watcher {
        _debouncer: debouncer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

    #[test]
    fn filters_kinds_and_names() {
        let toml = vec![PathBuf::from("/w/etl.toml")];
        let swap = vec![PathBuf::from("/w/.etl.toml.swp")];
        let backup = vec![PathBuf::from("/w/etl.toml~")];
        assert!(relevant(&EventKind::Create(CreateKind::File), &toml));
        assert!(relevant(
            &EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &toml
        ));
        assert!(!relevant(&EventKind::Access(AccessKind::Any), &toml));
        assert!(!relevant(&EventKind::Create(CreateKind::File), &swap));
        assert!(!relevant(&EventKind::Create(CreateKind::File), &backup));
    }
}
