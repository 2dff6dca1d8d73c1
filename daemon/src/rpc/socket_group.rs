//! Sharing the socket file with `socket_group`, without letting a hung
//! user database (LDAP or SSSD not answering at boot) hold back the start.
//!
//! The group's name is asked on a thread of its own, waited for at most
//! `user_database_wait`. Until the answer comes the file is 0600: only the
//! daemon's user can connect, never whatever group the file happened to
//! get. An answer that comes late still gives the file its group, then its
//! mode, from that thread; a late answer without the group (a database
//! that failed rather than answered, as a hang often ends) is asked again
//! every `run_as_recheck` until the group is named.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::unistd::Group;

/// Make the socket at `path` owner-only, then give it to `group` and open
/// it to `mode` once the user database has named the group: here if it
/// answers within `wait`, later from the look-up's thread otherwise
/// (asking again every `recheck` while it does not name it).
pub fn share(
    path: &Path,
    mode: u32,
    group: &str,
    wait: Duration,
    recheck: Duration,
) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    // Set once the start goes on without the answer; read by the look-up
    // under the same lock, so exactly one of the two applies it.
    let gave_up = Arc::new(Mutex::new(false));
    let (answer, answered) = mpsc::sync_channel(1);
    let late = Late {
        path: path.to_path_buf(),
        group: group.to_string(),
        mode,
    };
    let asked = {
        let gave_up = Arc::clone(&gave_up);
        std::thread::Builder::new()
            .name("socket-group".into())
            .spawn(move || {
                let found = Group::from_name(&late.group);
                let gave_up = gave_up.lock().unwrap_or_else(PoisonError::into_inner);
                if !*gave_up {
                    let _ = answer.send(found);
                    return;
                }
                drop(gave_up);
                let mut found = found;
                while !matches!(found, Ok(Some(_))) {
                    tracing::debug!(socket = %late.path.display(), "socket group {} not named yet; asking again in {}", late.group, humantime::format_duration(recheck));
                    std::thread::sleep(recheck);
                    found = Group::from_name(&late.group);
                }
                late.apply(found, true);
            })
    };
    if let Err(e) = asked {
        tracing::warn!(socket = %path.display(), error = %e, "cannot start a thread to look up socket group {group}; only the daemon's user can connect");
        return Ok(());
    }
    let here = Late {
        path: path.to_path_buf(),
        group: group.to_string(),
        mode,
    };
    match answered.recv_timeout(wait) {
        Ok(found) => here.apply(found, false),
        Err(RecvTimeoutError::Disconnected) => {
            tracing::warn!(socket = %path.display(), "the look-up of socket group {group} failed; only the daemon's user can connect");
        }
        Err(RecvTimeoutError::Timeout) => {
            let mut gave_up = gave_up.lock().unwrap_or_else(PoisonError::into_inner);
            match answered.try_recv() {
                // It answered as the wait ran out.
                Ok(found) => {
                    drop(gave_up);
                    here.apply(found, false);
                }
                Err(_) => {
                    *gave_up = true;
                    tracing::warn!(
                        socket = %path.display(),
                        waited = %humantime::format_duration(wait),
                        "the user database did not name socket group {group} in time; only the daemon's user can connect until it does"
                    );
                }
            }
        }
    }
    Ok(())
}

/// What to do with the answer: the socket, its group and its mode.
struct Late {
    path: PathBuf,
    group: String,
    mode: u32,
}

impl Late {
    /// The group first, then the mode: the file is never open to another
    /// group, not even for a moment. A group that cannot be given leaves
    /// the file 0600.
    fn apply(&self, found: nix::Result<Option<Group>>, late: bool) {
        let (path, group) = (&self.path, &self.group);
        let given = match found {
            Ok(Some(g)) => nix::unistd::chown(path, None, Some(g.gid))
                .map_err(|e| format!("cannot give the socket to group {group}: {e}")),
            Ok(None) => Err(format!("socket group {group} does not exist")),
            Err(e) => Err(format!("socket group {group} could not be looked up: {e}")),
        };
        let opened = given.and_then(|()| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.mode))
                .map_err(|e| format!("cannot set the socket's mode: {e}"))
        });
        match opened {
            Err(why) => {
                tracing::warn!(socket = %path.display(), "{why}; only the daemon's user can connect");
            }
            Ok(()) if late => {
                tracing::info!(socket = %path.display(), "the user database named socket group {group}: the socket is shared with it now");
            }
            Ok(()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    /// The daemon's own primary group, named as the database names it.
    fn own_group() -> Group {
        Group::from_gid(nix::unistd::getegid())
            .ok()
            .flatten()
            .expect("the test's group has a name")
    }

    #[test]
    fn a_named_group_gets_the_socket_then_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, b"").expect("file");
        let group = own_group();
        share(&path, 0o660, &group.name, WAIT, WAIT).expect("shared");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.gid(), group.gid.as_raw());
        assert_eq!(meta.mode() & 0o777, 0o660);
    }

    #[test]
    fn an_unknown_group_leaves_the_socket_to_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, b"").expect("file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("mode");
        share(&path, 0o660, "hf-no-such-group-4711", WAIT, WAIT).expect("kept");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
}
