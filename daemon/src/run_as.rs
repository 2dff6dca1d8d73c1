//! Running activities as another user, and the per-activity resource caps.
//!
//! A chain (through `[defaults]`) or an activity may name a `user` and
//! `group`. Only users listed in the settings' `run_as_allowed` may be named,
//! `root` only if listed explicitly, and only a daemon running as root can
//! switch: otherwise the chain is refused when it is loaded, never run as the
//! daemon's own user by surprise. A system-mode daemon running as root runs
//! activities that name no user as `run_as_default` (`holdfast`), never as
//! root unless that is allowed and asked for.
//! (The per-activity caps are in [`crate::caps`].)

use std::ffi::CString;
use std::path::PathBuf;

use holdfast_api::LoadError;
use holdfast_workflow::{Activity, Chain};
use nix::unistd::{Gid, Group, Uid, User};

use crate::settings::{Mode, Settings};

/// Who an activity runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Why an activity's user or group could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The account is missing or unusable; trying again will not help.
    #[error("{0}")]
    Refused(String),
    /// The lookup failed because file descriptors ran out (the user
    /// database could not be opened): it says nothing about the account.
    #[error("cannot look up {what}: the daemon is out of file descriptors")]
    OutOfFiles { what: String },
}

impl From<String> for ResolveError {
    fn from(message: String) -> ResolveError {
        ResolveError::Refused(message)
    }
}

/// True when this process cannot open a file right now for lack of file
/// descriptors. glibc's lookups report an unreadable user database as "no
/// such entry", so a miss is only believed when this is false.
fn out_of_files() -> bool {
    std::fs::File::open("/dev/null")
        .is_err_and(|e| crate::executor::is_out_of_files(e.raw_os_error()))
}

/// A lookup error, or a miss that may be one, as a [`ResolveError`].
fn lookup_failed(what: String, message: String) -> ResolveError {
    if out_of_files() {
        ResolveError::OutOfFiles { what }
    } else {
        ResolveError::Refused(message)
    }
}

/// Look up `user` (and `group`, else the user's primary group) with its
/// supplementary groups.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, ResolveError> {
    let account = User::from_name(user)
        .map_err(|e| {
            lookup_failed(
                format!("user {user:?}"),
                format!("cannot look up user {user:?}: {e}"),
            )
        })?
        .ok_or_else(|| {
            lookup_failed(
                format!("user {user:?}"),
                format!("user {user:?} does not exist on this host"),
            )
        })?;
    let gid = match group {
        Some(name) => {
            Group::from_name(name)
                .map_err(|e| {
                    lookup_failed(
                        format!("group {name:?}"),
                        format!("cannot look up group {name:?}: {e}"),
                    )
                })?
                .ok_or_else(|| {
                    lookup_failed(
                        format!("group {name:?}"),
                        format!("group {name:?} does not exist on this host"),
                    )
                })?
                .gid
        }
        None => account.gid,
    };
    let cname = CString::new(user).map_err(|_| "user name contains a NUL byte".to_string())?;
    let groups = nix::unistd::getgrouplist(&cname, gid).map_err(|e| {
        lookup_failed(
            format!("the groups of {user:?}"),
            format!("cannot list the groups of {user:?}: {e}"),
        )
    })?;
    // A group database that could not be opened reads as no groups: never
    // start an activity with a partial list.
    if out_of_files() {
        return Err(ResolveError::OutOfFiles {
            what: format!("the groups of {user:?}"),
        });
    }
    Ok(Identity {
        name: user.to_string(),
        uid: account.uid.as_raw(),
        gid: gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
        home: account.dir,
    })
}

fn switching() -> bool {
    Uid::effective().is_root()
}

/// The user an activity runs as, if not the daemon's own.
pub fn user_for<'a>(activity: &'a Activity, settings: &'a Settings) -> Option<&'a str> {
    match &activity.user {
        Some(user) => Some(user),
        None if settings.mode == Mode::System && switching() => settings.run_as_default.as_deref(),
        None => None,
    }
}

/// Check, when a chain is loaded, that every activity can run as who it
/// names on this daemon. Errors name the file and the activity.
pub fn check_chain(chain: &Chain, settings: &Settings) -> Vec<LoadError> {
    let mut errors = Vec::new();
    let error = |message: String| LoadError {
        file: chain.file.display().to_string(),
        line: None,
        column: None,
        message,
    };
    for activity in &chain.activities {
        let Some(user) = user_for(activity, settings) else {
            if activity.group.is_some() {
                errors.push(error(format!(
                    "{}: group is set without user; name the user too",
                    activity.path
                )));
            }
            continue;
        };
        let named = activity.user.is_some();
        if named && !switching() {
            errors.push(error(format!(
                "{}: runs as {user:?}, but holdfastd runs as uid {} and cannot switch users; \
                 run the daemon as root or remove user",
                activity.path,
                Uid::effective()
            )));
            continue;
        }
        if named && !settings.run_as_allowed.iter().any(|u| u == user) {
            errors.push(error(format!(
                "{}: user {user:?} is not in the daemon's run_as_allowed setting",
                activity.path
            )));
            continue;
        }
        if let Err(message) = resolve(user, activity.group.as_deref()) {
            errors.push(error(format!("{}: {message}", activity.path)));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves() {
        let id = resolve("root", None).expect("root exists");
        assert_eq!(id.uid, 0);
        assert!(resolve("no-such-user-here", None).is_err());
    }
}
