//! What socket members may hold at once: connections (overall, sized from
//! the daemon's open-file limit so that accepting can never starve the
//! activities, the store and the log of file descriptors; and per uid) and
//! subscriptions (`job.follow_logs`, `job.watch`, `events.subscribe`,
//! `store.backup`) per uid.
//! Each is a permit that gives its slot back when dropped.
//!
//! Root and the daemon's own user are trusted: no per-uid cap, and a few
//! connections beyond the overall one, so an administrator still gets in
//! when everyone else's slots are taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::settings::Settings;

/// File descriptors kept out of the connection cap for the daemon itself:
/// the store and its read connections, the socket, the journal, the
/// workflow watcher, the runtime.
const RESERVE_FILES: u64 = 128;
/// And for each activity that may run at once: its pipes, log file, pidfd
/// and cgroup directory, and the copies made while it starts.
const FILES_PER_ACTIVITY: u64 = 16;
/// Connections root and the daemon's user get beyond the overall cap.
pub const ADMIN_ROOM: usize = 16;

/// Why a connection or a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the daemon serves {cap} connections at once (max_connections, bounded by its open-file limit); \
         close idle clients or try again later"
    )]
    Full { cap: usize },
    #[error(
        "uid {uid} holds {cap} connections already (max_connections_per_user); close some of them first"
    )]
    User { uid: u32, cap: usize },
    #[error(
        "uid {uid} holds {cap} subscriptions already (max_subscriptions_per_user); \
         end some of them first"
    )]
    Subscriptions { uid: u32, cap: usize },
}

/// The counters behind the permits; one per daemon, shared by every
/// connection.
#[derive(Debug)]
pub struct Limits {
    connections: usize,
    per_user_connections: usize,
    per_user_subscriptions: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    connections: usize,
    by_user: HashMap<u32, usize>,
    subscriptions: HashMap<u32, usize>,
}

/// The soft RLIMIT_NOFILE of the daemon (what `accept` runs into).
fn open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => soft,
        Ok(_) => u64::MAX,
        Err(_) => 1024,
    }
}

/// The overall connection cap: the configured `max_connections`, but never
/// more than the open-file limit leaves after the reserve for the daemon,
/// its activities and the administrators' extra room.
pub fn connection_cap(open_files: u64, max_parallel: usize, configured: u32) -> usize {
    let reserve =
        RESERVE_FILES + FILES_PER_ACTIVITY.saturating_mul(max_parallel as u64) + ADMIN_ROOM as u64;
    let room = open_files.saturating_sub(reserve).max(open_files / 4);
    room.min(u64::from(configured)).max(1) as usize
}

impl Limits {
    /// Caps from the settings and the daemon's open-file limit now.
    pub fn new(settings: &Settings) -> Limits {
        let open_files = open_files_limit();
        let connections =
            connection_cap(open_files, settings.max_parallel, settings.max_connections);
        tracing::info!(
            open_files,
            connections,
            per_user = settings.max_connections_per_user,
            "connection caps"
        );
        Limits {
            connections,
            per_user_connections: settings.max_connections_per_user.max(1) as usize,
            per_user_subscriptions: settings.max_subscriptions_per_user.max(1) as usize,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// The overall connection cap in use (administrators get
    /// [`ADMIN_ROOM`] more).
    pub fn connection_cap(&self) -> usize {
        self.connections
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counters stay consistent even if a holder panicked.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take a connection slot for `uid`; `admin` for root and the daemon's
    /// user.
    pub fn connect(self: &Arc<Self>, uid: u32, admin: bool) -> Result<Permit, Refused> {
        let mut counts = self.counts();
        let cap = if admin {
            self.connections + ADMIN_ROOM
        } else {
            self.connections
        };
        if counts.connections >= cap {
            return Err(Refused::Full {
                cap: self.connections,
            });
        }
        let mine = counts.by_user.entry(uid).or_default();
        if !admin && *mine >= self.per_user_connections {
            return Err(Refused::User {
                uid,
                cap: self.per_user_connections,
            });
        }
        *mine += 1;
        counts.connections += 1;
        Ok(Permit {
            limits: Arc::clone(self),
            uid,
            kind: Kind::Connection,
        })
    }

    /// Take a subscription slot for `uid`.
    pub fn subscribe(self: &Arc<Self>, uid: u32, admin: bool) -> Result<Permit, Refused> {
        let mut counts = self.counts();
        let mine = counts.subscriptions.entry(uid).or_default();
        if !admin && *mine >= self.per_user_subscriptions {
            return Err(Refused::Subscriptions {
                uid,
                cap: self.per_user_subscriptions,
            });
        }
        *mine += 1;
        Ok(Permit {
            limits: Arc::clone(self),
            uid,
            kind: Kind::Subscription,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Subscription,
}

/// A held slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    uid: u32,
    kind: Kind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        let map = match self.kind {
            Kind::Connection => {
                counts.connections = counts.connections.saturating_sub(1);
                &mut counts.by_user
            }
            Kind::Subscription => &mut counts.subscriptions,
        };
        if let Some(held) = map.get_mut(&self.uid) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_activities() {
        // 1024 files, 4 activities: 1024 - 128 - 64 - 16.
        assert_eq!(connection_cap(1024, 4, 100_000), 816);
        assert_eq!(connection_cap(1024, 4, 100), 100);
        // A tiny limit still lets some clients in.
        assert_eq!(connection_cap(64, 4, 1024), 16);
        assert_eq!(connection_cap(u64::MAX, 4, 1024), 1024);
    }

    fn limits(connections: usize, per_user: usize) -> Arc<Limits> {
        Arc::new(Limits {
            connections,
            per_user_connections: per_user,
            per_user_subscriptions: per_user,
            counts: Mutex::new(Counts::default()),
        })
    }

    #[test]
    fn one_uid_cannot_take_every_slot() {
        let limits = limits(4, 2);
        let a = [limits.connect(1000, false), limits.connect(1000, false)];
        assert!(a.iter().all(Result::is_ok));
        assert!(matches!(
            limits.connect(1000, false),
            Err(Refused::User { .. })
        ));
        let b = limits.connect(1001, false).expect("another uid gets in");
        let c = limits.connect(1002, false).expect("and a third");
        assert!(matches!(
            limits.connect(1003, false),
            Err(Refused::Full { .. })
        ));
        let admin = limits
            .connect(0, true)
            .expect("root has room beyond the cap");
        drop((a, b, c, admin));
        let again = limits.connect(1000, false).expect("slots come back");
        assert_eq!(limits.counts().connections, 1);
        drop(again);
        assert_eq!(limits.counts().connections, 0);
        assert!(limits.counts().by_user.is_empty());
    }

    #[test]
    fn subscriptions_are_counted_per_uid() {
        let limits = limits(4, 1);
        let held = limits.subscribe(1000, false).expect("first");
        assert!(limits.subscribe(1000, false).is_err());
        assert!(limits.subscribe(0, true).is_ok());
        drop(held);
        assert!(limits.subscribe(1000, false).is_ok());
    }
}
