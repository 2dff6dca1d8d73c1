//! Who may do what, decided from the caller's peer credentials (never from
//! anything the client sends).
//!
//! Today: root and the daemon's own user may do everything; a tenant with
//! `groups` may be submitted for only by members of those groups.

use crate::engine::Caller;

/// True for callers that bypass every restriction: root and the daemon's
/// own user.
pub fn is_admin(caller: &Caller) -> bool {
    caller.uid == 0 || caller.uid == nix::unistd::geteuid().as_raw()
}

/// True when the caller belongs to the Unix group `group` (as primary group
/// or listed member).
pub fn in_group(caller: &Caller, group: &str) -> bool {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => g.gid.as_raw() == caller.gid || g.mem.contains(&caller.user),
        _ => false,
    }
}

/// May `caller` submit for a tenant restricted to `groups`?
pub fn may_submit_for(caller: &Caller, groups: &[String]) -> bool {
    groups.is_empty() || is_admin(caller) || groups.iter().any(|g| in_group(caller, g))
}
