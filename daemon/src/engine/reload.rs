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
//!
//! A chain refused for what the user database answered (no such user:
//! LDAP or SSSD was down while the daemon started, or the account is made
//! later) is read again every `run_as_recheck` until none is left, so it
//! loads once the database confirms its users without anyone touching its
//! file.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Command, Engine, schedules};
use crate::registry::Registry;

/// Why a reload did not put a registry in place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("the daemon is stopping")]
    Stopping,
    #[error("the engine has not started yet; the workflows are read when it does")]
    NotStarted,
    #[error("reading the workflow files failed ({0}); the chains loaded before stay")]
    ReadFailed(String),
}

type Reply = oneshot::Sender<Result<(), ReloadError>>;

/// The reloads under way and asked for.
#[derive(Default)]
pub(super) struct Reloads {
    /// A registry is being read now; these asked before it started.
    loading: Option<Vec<Reply>>,
    /// Asked while one was being read: answered by the next.
    next: Vec<Reply>,
    /// The timer of the next re-check of refused users, while one is due.
    recheck: Option<tokio::task::AbortHandle>,
}

impl Engine {
    /// `hfctl reload`, SIGHUP or the watcher: read the files again, unless
    /// a read is already under way, in which case one more follows it.
    pub(super) fn reload_asked(&mut self, reply: Reply) {
        match &mut self.reloads.loading {
            Some(_) => {
                tracing::info!(
                    "a reload is under way: the workflows are read again once it is in place"
                );
                self.reloads.next.push(reply);
            }
            None => self.start_reload(vec![reply]),
        }
    }

    fn start_reload(&mut self, waiting: Vec<Reply>) {
        self.reloads.loading = Some(waiting);
        let previous = self.registry.borrow().clone();
        let settings = self.settings.clone();
        let tx = self.commands_tx.clone();
        tokio::spawn(async move {
            let read = crate::run_as::look_up_in_turn(crate::run_as::LookUpFor::Other, move || {
                crate::registry::load(&settings, Some(&previous))
            })
            .await;
            let registry = match read {
                Ok(registry) => Ok(Box::new(registry)),
                Err(error) => {
                    tracing::error!(%error, "reading the workflows failed; the loaded ones stay");
                    Err(error.to_string())
                }
            };
            let _ = tx.send(Command::Reloaded { registry }).await;
        });
    }

    /// A registry read by [`Engine::start_reload`], or why reading it
    /// failed: put it in place, answer who asked, and start the next read
    /// if more asked meanwhile.
    pub(super) fn reloaded(&mut self, registry: Result<Box<Registry>, String>) {
        let waiting = self.reloads.loading.take().unwrap_or_default();
        let answer = match registry {
            Ok(registry) => {
                // Nobody waits for a re-check of refused users: it is
                // logged only for the chains it loads.
                self.put_in_place(*registry, waiting.is_empty());
                Ok(())
            }
            Err(error) => Err(ReloadError::ReadFailed(error)),
        };
        for reply in waiting {
            let _ = reply.send(answer.clone());
        }
        if !self.reloads.next.is_empty() {
            let next = std::mem::take(&mut self.reloads.next);
            self.start_reload(next);
        }
        self.arm_users_recheck();
    }

    /// Have the files read again in `run_as_recheck` while a chain is
    /// refused for what the user database answered (and no re-check is
    /// due already).
    pub(super) fn arm_users_recheck(&mut self) {
        let every = self.settings.run_as_recheck;
        if every.is_zero()
            || self.shutting_down.is_some()
            || self.reloads.recheck.is_some()
            || !self.registry.borrow().has_unconfirmed()
        {
            return;
        }
        let tx = self.commands_tx.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(every).await;
            let _ = tx.send(Command::RecheckUsers).await;
        });
        self.reloads.recheck = Some(timer.abort_handle());
    }

    /// The re-check is due: read the files again, unless a read is under
    /// way (it re-arms the re-check when it lands).
    pub(super) fn recheck_users(&mut self) {
        self.reloads.recheck = None;
        if self.reloads.loading.is_none()
            && self.shutting_down.is_none()
            && self.registry.borrow().has_unconfirmed()
        {
            self.start_reload(Vec::new());
        }
    }

    /// The daemon stops: no more re-checks.
    pub(super) fn stop_users_recheck(&mut self) {
        if let Some(timer) = self.reloads.recheck.take() {
            timer.abort();
        }
    }

    fn put_in_place(&mut self, mut registry: Registry, recheck: bool) {
        registry.events_before = self.outbox.last_id();
        if recheck {
            let previous = self.registry.borrow().clone();
            let unconfirmed: std::collections::HashSet<_> = previous
                .entries
                .values()
                .filter(|e| e.unconfirmed)
                .map(|e| &e.file)
                .collect();
            for entry in registry.entries.values() {
                if entry.errors.is_empty() && unconfirmed.contains(&entry.file) {
                    tracing::info!(HF_CHAIN = %entry.name, file = %entry.file.display(), "chain loaded: the user database now confirms who it runs as");
                }
            }
            tracing::debug!(
                chains = registry.loaded_count(),
                broken = registry.broken_count(),
                "workflows read again to re-check refused users"
            );
        } else {
            tracing::info!(
                chains = registry.loaded_count(),
                broken = registry.broken_count(),
                "workflows reloaded"
            );
        }
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
