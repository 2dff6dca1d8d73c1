//! Who may do what, decided from the caller's peer credentials (never from
//! anything the client sends).
//!
//! - Root and the daemon's own user may do everything.
//! - Members of a settings `operator_groups` group may also cancel and
//!   reprocess anyone's jobs, operate schedules and reload the configuration.
//! - Everyone who can open the socket (its mode and group decide that) may
//!   read, submit (within a chain's `allow` and a tenant's `groups`), and
//!   cancel or reprocess their own jobs, at a priority no higher than the
//!   chain's `max_priority` (0 unless the chain says otherwise).

pub mod groups;
pub mod user_names;

use std::time::Duration;

use crate::engine::Caller;
use crate::settings::Settings;

/// How long an answer of the user or group database (a name, a group) is
/// used before it is looked up again, as nscd and SSSD keep them
/// ([`user_names`], [`groups`]).
const DIRECTORY_TTL: Duration = Duration::from_secs(60);
/// How long "no such user" or "no such group" is believed: one added a
/// moment ago counts soon.
const DIRECTORY_MISSING_TTL: Duration = Duration::from_secs(5);

/// True for callers that bypass every restriction: root and the daemon's
/// own user.
pub fn is_admin(caller: &Caller) -> bool {
    caller.uid == 0 || caller.uid == nix::unistd::geteuid().as_raw()
}

/// True when the caller belongs to the Unix group `group`: its process's
/// primary or supplementary group (from the peer credentials), or a member
/// listed in the group database (as [`groups`] keeps it).
pub fn in_group(caller: &Caller, group: &str) -> bool {
    groups::GROUPS.get(group).is_some_and(|found| {
        let gid = found.group.gid;
        gid == caller.gid
            || caller.groups.contains(&gid)
            || (found.members_current && found.group.members.contains(&caller.user))
    })
}

/// Admins and members of an operator group.
pub fn is_operator(caller: &Caller, settings: &Settings) -> bool {
    is_admin(caller) || settings.operator_groups.iter().any(|g| in_group(caller, g))
}

/// May `caller` submit for a tenant restricted to `groups`?
pub fn may_submit_for(caller: &Caller, groups: &[String]) -> bool {
    groups.is_empty() || is_admin(caller) || groups.iter().any(|g| in_group(caller, g))
}

/// May `caller` submit a chain whose `allow` list is `allow`?
pub fn may_submit_chain(caller: &Caller, allow: &[String]) -> bool {
    allow.is_empty()
        || is_admin(caller)
        || allow.iter().any(|entry| match entry.split_once(':') {
            Some(("user", name)) => name == caller.user,
            Some(("group", name)) => in_group(caller, name),
            _ => false,
        })
}

/// The highest priority `caller` may give a job of a chain whose
/// `max_priority` is `chain_max`: no bound (None) for operators, root and
/// the daemon's user (schedules submit as the daemon); the chain's bound,
/// 0 when it sets none, for everyone else, so a member cannot jump the
/// queue.
pub fn max_priority(caller: &Caller, settings: &Settings, chain_max: Option<i32>) -> Option<i32> {
    if is_operator(caller, settings) {
        None
    } else {
        Some(chain_max.unwrap_or(0))
    }
}

/// May `caller` cancel or reprocess a job submitted by `owner_uid`?
pub fn may_manage_job(caller: &Caller, owner_uid: Option<u32>, settings: &Settings) -> bool {
    owner_uid == Some(caller.uid) || is_operator(caller, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, user: &str) -> Caller {
        Caller {
            uid,
            gid: 65534,
            groups: Vec::new(),
            pid: None,
            user: user.into(),
        }
    }

    #[test]
    fn chain_allow_lists() {
        let alice = caller(4242, "alice");
        assert!(may_submit_chain(&alice, &[]));
        assert!(may_submit_chain(&alice, &["user:alice".into()]));
        assert!(!may_submit_chain(&alice, &["user:bob".into()]));
        assert!(!may_submit_chain(
            &alice,
            &["group:no-such-group-here".into()]
        ));
        assert!(may_submit_chain(&caller(0, "root"), &["user:bob".into()]));
    }
}
