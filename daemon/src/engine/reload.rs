//! Reloads of the workflow, tenant and connection files: read and checked
//! on the blocking pool, one at a time, and put in place on the engine's
//! turn.
//!
//! Reading the files can wait on the disk (an NFS-mounted directory), and
//! checking each chain's `user` and `group` asks the user database, which
//! can hang (LDAP or SSSD down). Neither happens on the engine's task: a
//! reload asked for while one is under way waits for the next one, which
//! starts from the registry the first put in place, so a broken file keeps
//! its last good version whatever the order of the asks. Every ask is
//! answered once a registry read after it is in place.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Command, Engine, schedules};
use crate::registry::Registry;

/// The reloads under way and asked for.
#[derive(Default)]
pub(super) struct Reloads {
    /// A registry is being read now; these asked before it started.
    loading: Option<Vec<oneshot::Sender<()>>>,
    /// Asked while one was being read: answered by the next.
    next: Vec<oneshot::Sender<()>>,
}

impl Engine {
    /// `hfctl reload`, SIGHUP or the watcher: read the files again, unless
    /// a read is already under way, in which case one more follows it.
    pub(super) fn reload_asked(&mut self, reply: oneshot::Sender<()>) {
        match &mut self.reloads.loading {
            Some(_) => self.reloads.next.push(reply),
            None => self.start_reload(vec![reply]),
        }
    }

    fn start_reload(&mut self, waiting: Vec<oneshot::Sender<()>>) {
        self.reloads.loading = Some(waiting);
        let previous = self.registry.borrow().clone();
        let settings = self.settings.clone();
        let tx = self.commands_tx.clone();
        tokio::spawn(async move {
            let read = crate::run_as::look_up_in_turn(move || {
                crate::registry::load(&settings, Some(&previous))
            })
            .await;
            let registry = match read {
                Ok(registry) => Some(Box::new(registry)),
                Err(error) => {
                    tracing::error!(%error, "reading the workflows failed; the loaded ones stay");
                    None
                }
            };
            let _ = tx.send(Command::Reloaded { registry }).await;
        });
    }

    /// A registry read by [`Engine::start_reload`] (None if reading it
    /// failed): put it in place, answer who asked, and start the next read
    /// if more asked meanwhile.
    pub(super) fn reloaded(&mut self, registry: Option<Box<Registry>>) {
        let waiting = self.reloads.loading.take().unwrap_or_default();
        if let Some(registry) = registry {
            self.put_in_place(*registry);
        }
        for reply in waiting {
            let _ = reply.send(());
        }
        if !self.reloads.next.is_empty() {
            let next = std::mem::take(&mut self.reloads.next);
            self.start_reload(next);
        }
    }

    fn put_in_place(&mut self, mut registry: Registry) {
        registry.events_before = self.outbox.last_id();
        tracing::info!(
            chains = registry.loaded_count(),
            broken = registry.broken_count(),
            "workflows reloaded"
        );
        self.outbox
            .want(crate::notify::rules_of(&self.settings.notify, &registry).iter());
        self.registry.send_replace(Arc::new(registry));
        self.record_definitions();
        // A schedule that comes back (its file moved away and back) picks
        // up its stored state, pause included.
        let stored = schedules::load_states(&self.store)
            .map_err(|error| tracing::warn!(%error, "cannot read schedule states"))
            .ok();
        self.sync_schedules(stored);
    }
}
