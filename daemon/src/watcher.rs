//! Watches the workflows, tenants and connections directories and asks the engine to
//! reload when a file there is created, changed, renamed or removed.
//!
//! The directory is watched, not the files, so editors that save through a
//! temporary file and a rename are seen. Access events (the daemon's own
//! reads open and close the files) are ignored, or every reload would
//! trigger another; so are names that are not workflow files (`*~`,
//! `.*.swp`, `*.dpkg-*`, ...).
//!
//! Event-driven end to end: notify's thread blocks on inotify, and a burst
//! of changes is gathered on the runtime by a timer that exists only while
//! a burst lasts. An idle daemon has no watcher wake-ups at all (the
//! debouncer crate used before ticked every 37.5 ms forever).

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_workflow::parse::is_workflow_file_name;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::EngineHandle;

/// How long a burst of file events is gathered before one reload: the
/// reload comes once the files have been quiet this long...
const DEBOUNCE: Duration = Duration::from_millis(150);
/// ...or once the burst has lasted this long, so a file written without a
/// pause cannot put a reload off forever.
const MAX_GATHER: Duration = Duration::from_secs(2);

/// Keeps the watch alive; dropping it stops watching.
pub struct Watcher {
    _watcher: RecommendedWatcher,
}

/// True when an event should cause a reload.
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
    // One slot: a full channel already holds a pending change, enough.
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |result: notify::Result<notify::Event>| match result {
        Ok(event) => {
            if relevant(&event.kind, &event.paths) {
                let _ = tx.try_send(());
            }
        }
        Err(error) => tracing::warn!(error = %error, "workflow directory watch error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
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
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
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
            let began = Instant::now();
            loop {
                let quiet_until = (Instant::now() + DEBOUNCE).min(began + MAX_GATHER);
                match tokio::time::timeout_at(quiet_until, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // A failed read is logged by the engine; the next change
            // tries again.
            let _ = engine.reload().await;
        }
    });
    Some(Watcher { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind, RenameMode};

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
