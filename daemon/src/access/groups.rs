//! The group database as access decisions see it: each group named in an
//! `operator_groups`, `allow` or tenant `groups` entry, kept for
//! [`GROUP_TTL`] once looked up.
//!
//! Access decisions are synchronous and made on a runtime worker or the
//! engine task, where a look-up that goes to LDAP or SSSD and hangs would
//! stall every connection, or the engine. So a decision only reads what
//! is kept here, and the look-ups are made off them: [`refresh`] runs on
//! each request, before the request is handled, and looks up again on the
//! blocking pool every group whose entry is due. Only the first decision
//! ever to name a group (after a start, or a reload that added it) looks
//! it up in place. A look-up that fails (a directory server down) keeps
//! the entry known before.
//!
//! The price is the cache's, as with nscd or SSSD: a member added to or
//! removed from a group's member list counts as such up to a minute
//! later here. Membership that comes from the caller's own credentials
//! (its primary and supplementary groups, SO_PEERCRED and SO_PEERGROUPS)
//! does not go through this cache and is always current.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a found group is used before it is looked up again.
const GROUP_TTL: Duration = Duration::from_secs(60);
/// How long "no such group" is believed: a group added a moment ago
/// counts soon.
const MISSING_TTL: Duration = Duration::from_secs(5);
/// Groups kept at most; past it the cache starts again empty. Only names
/// in the configuration are ever asked for, so this is far above need.
const GROUPS_KEPT: usize = 1024;

/// One group of the database.
#[derive(Debug)]
pub struct Group {
    pub gid: u32,
    /// The user names its database entry lists as members.
    pub members: Vec<String>,
}

/// What is known of one group name.
#[derive(Clone)]
struct Known {
    /// None: the database has no such group.
    group: Option<Arc<Group>>,
    /// When it was looked up, or when a look-up of it last started.
    at: Instant,
}

impl Known {
    fn due(&self, now: Instant) -> bool {
        let ttl = if self.group.is_some() {
            GROUP_TTL
        } else {
            MISSING_TTL
        };
        now.duration_since(self.at) >= ttl
    }
}

static KNOWN: LazyLock<Mutex<HashMap<String, Known>>> = LazyLock::new(Mutex::default);

fn known() -> MutexGuard<'static, HashMap<String, Known>> {
    // Nothing panics while holding the lock; a poisoned map is still a
    // map of complete entries.
    KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn keep(map: &mut HashMap<String, Known>, name: String, group: Option<Group>, at: Instant) {
    if map.len() >= GROUPS_KEPT && !map.contains_key(&name) {
        map.clear();
    }
    map.insert(
        name,
        Known {
            group: group.map(Arc::new),
            at,
        },
    );
}

fn look_up(name: &str) -> Result<Option<Group>, nix::Error> {
    Ok(nix::unistd::Group::from_name(name)?.map(|g| Group {
        gid: g.gid.as_raw(),
        members: g.mem,
    }))
}

/// The group named `name`, as kept here. Looked up in place only when the
/// name was never asked for; a failed look-up then counts as no group
/// (and is not kept, so the next request tries again).
///
/// A due entry is still answered from; its look-up is started in the
/// background, for the calls of a WebSocket connection, which do not
/// pass through [`refresh`] after the connection's first request.
pub fn get(name: &str) -> Option<Arc<Group>> {
    let kept = known()
        .get(name)
        .map(|known| (known.group.clone(), known.due(Instant::now())));
    if let Some((group, due)) = kept {
        if due && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh());
        }
        return group;
    }
    let now = Instant::now();
    let group = look_up(name).ok()?;
    let mut map = known();
    keep(&mut map, name.to_string(), group, now);
    map.get(name).and_then(|known| known.group.clone())
}

/// Look up again, on the blocking pool, every kept group that is due.
/// Called on each request before it is handled, so its decisions see the
/// database as it was at most [`GROUP_TTL`] ago (plus a look-up's time). An entry being looked up
/// by another request is not looked up twice: that request goes on with
/// the entry as it is.
pub async fn refresh() {
    let now = Instant::now();
    let due: Vec<String> = {
        let mut map = known();
        map.iter_mut()
            .filter(|(_, known)| known.due(now))
            .map(|(name, known)| {
                known.at = now;
                name.clone()
            })
            .collect()
    };
    if due.is_empty() {
        return;
    }
    let Ok(found) = tokio::task::spawn_blocking(move || {
        due.into_iter()
            .map(|name| {
                let group = look_up(&name);
                (name, group)
            })
            .collect::<Vec<_>>()
    })
    .await
    else {
        return;
    };
    let mut map = known();
    for (name, group) in found {
        if let Ok(group) = group {
            keep(&mut map, name, group, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_are_looked_up_kept_and_refreshed() {
        // Group 0 exists on every Linux host; its name varies little, but
        // read it rather than assume it.
        let Ok(Some(root)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(0)) else {
            return;
        };
        let found = get(&root.name).expect("group 0 is found by name");
        assert_eq!(found.gid, 0);
        assert!(get("no-such-group-here-at-all").is_none());
        // Due entries are looked up again and stay found.
        {
            let mut map = known();
            let entry = map.get_mut(&root.name).expect("kept");
            let Some(past) = entry.at.checked_sub(GROUP_TTL) else {
                return;
            };
            entry.at = past;
        }
        refresh().await;
        let again = known().get(&root.name).cloned().expect("still kept");
        assert!(!again.due(Instant::now()), "looked up again");
        assert_eq!(again.group.expect("still a group").gid, 0);
    }
}
