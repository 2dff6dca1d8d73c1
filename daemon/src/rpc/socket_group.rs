//! Sharing the socket file with `socket_group`, without letting a hung
//! user database (LDAP or SSSD not answering at boot) hold back the start.
//!
//! The group's name is asked on a thread of its own, waited for at most
//! `user_database_wait`. Until the answer comes the file is 0600: only the
//! daemon's user can connect, never whatever group the file happened to
//! get. An answer that comes late still gives the file its group, then its
//! mode, from that thread. An answer without the group, in time or late
//! (a database that failed, as a hang often ends, or one that says "no
//! such group" because SSSD or LDAP is not reachable yet at boot), is
//! asked again every `run_as_recheck` until the group is named.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::unistd::Group;

/// Make the socket at `path` owner-only, then give it to `group` and open
/// it to `mode` once the user database has named the group: here if it
/// answers within `wait`, later from the look-up's thread otherwise; an
/// answer without the group is asked again every `recheck`, from that
/// thread, until one names it.
pub fn share(
    path: &Path,
    mode: u32,
    group: &str,
    wait: Duration,
    recheck: Duration,
) -> std::io::Result<()> {
    // The socket just bound, held by a descriptor: an answer applies to
    // it alone, not to whatever the path names by then (a socket bound
    // there by another daemon after this one stopped, a symlink put in its
    // place).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let socket = Socket::open(path)?;
    // Set once the start goes on without the answer; read by the look-up
    // under the same lock, so exactly one of the two applies it.
    let gave_up = Arc::new(Mutex::new(false));
    let (answer, answered) = mpsc::sync_channel(1);
    let late = Late {
        path: path.to_path_buf(),
        socket: socket.try_clone()?,
        group: group.to_string(),
        mode,
    };
    let asked = {
        let gave_up = Arc::clone(&gave_up);
        std::thread::Builder::new()
            .name("socket-group".into())
            .spawn(move || {
                let found = Group::from_name(&late.group);
                let named = matches!(found, Ok(Some(_)));
                let gave_up = gave_up.lock().unwrap_or_else(PoisonError::into_inner);
                let found = if *gave_up {
                    found
                } else {
                    // The start applies this answer; without the group,
                    // the next is asked for here after `recheck`.
                    let _ = answer.send(found);
                    if named || recheck.is_zero() {
                        return;
                    }
                    Ok(None)
                };
                drop(gave_up);
                ask_until_named(&late, found, recheck);
            })
    };
    if let Err(e) = asked {
        tracing::warn!(socket = %path.display(), error = %e, "cannot start a thread to look up socket group {group}; only the daemon's user can connect");
        return Ok(());
    }
    let here = Late {
        path: path.to_path_buf(),
        socket,
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

/// Apply `found` if it names the group; otherwise ask again every
/// `recheck` (never with `"0s"`) until the database names it, and apply
/// that. A database that answers "no such group" at boot (SSSD or LDAP
/// not reachable yet, NSS falling through to the files) is asked again
/// like one that failed.
fn ask_until_named(late: &Late, mut found: nix::Result<Option<Group>>, recheck: Duration) {
    let mut asked = 1u64;
    while !matches!(found, Ok(Some(_))) {
        if recheck.is_zero() {
            // run_as_recheck = "0s": nothing is asked again.
            late.apply(found, true);
            return;
        }
        if asked == 1 {
            tracing::warn!(socket = %late.path.display(), "the user database did not name socket group {}; asking again every {}", late.group, humantime::format_duration(recheck));
        }
        std::thread::sleep(recheck);
        found = Group::from_name(&late.group);
        asked += 1;
    }
    late.apply(found, true);
}

/// What to do with the answer: the socket (its path, for the log, and
/// the file itself), its group and its mode.
struct Late {
    path: PathBuf,
    socket: Socket,
    group: String,
    mode: u32,
}

/// The bound socket file, by an `O_PATH` descriptor taken right after the
/// bind (without following a symlink): changes go to that file whatever
/// its path names later.
struct Socket {
    fd: std::os::fd::OwnedFd,
    /// The path it was bound at: chmod goes through it where `/proc` is
    /// missing, once it names the same file.
    path: PathBuf,
}

impl Socket {
    fn open(path: &Path) -> std::io::Result<Socket> {
        use nix::fcntl::{OFlag, open};
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let stat = nix::sys::stat::fstat(&fd)?;
        if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
            return Err(std::io::Error::other(format!(
                "{} is not the socket just bound",
                path.display()
            )));
        }
        Ok(Socket {
            fd,
            path: path.to_path_buf(),
        })
    }

    fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(Socket {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// chmod has no `AT_EMPTY_PATH` before Linux 6.6: the descriptor's own
    /// link in /proc names the same file. Without /proc (a chroot), the
    /// path, if it still names the file held: no other file can have its
    /// device and inode while the descriptor keeps it.
    fn chmod(&self, mode: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let permissions = std::fs::Permissions::from_mode(mode);
        let by_proc = format!("/proc/thread-self/fd/{}", self.fd.as_raw_fd());
        match std::fs::set_permissions(&by_proc, permissions.clone()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let held = nix::sys::stat::fstat(&self.fd)?;
                let named = std::fs::symlink_metadata(&self.path)?;
                if (named.dev(), named.ino()) != (held.st_dev, held.st_ino) {
                    return Err(std::io::Error::other(
                        "the path no longer names the socket bound",
                    ));
                }
                std::fs::set_permissions(&self.path, permissions)
            }
            done => done,
        }
    }

    fn chgrp(&self, gid: nix::unistd::Gid) -> nix::Result<()> {
        nix::unistd::fchownat(
            &self.fd,
            "",
            None,
            Some(gid),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
    }
}

impl Late {
    /// The group first, then the mode: the file is never open to another
    /// group, not even for a moment. A group that cannot be given leaves
    /// the file 0600.
    fn apply(&self, found: nix::Result<Option<Group>>, late: bool) {
        let (path, group) = (&self.path, &self.group);
        let opened = match found {
            Ok(Some(g)) => self.give(g.gid),
            Ok(None) => Err(format!("socket group {group} does not exist")),
            Err(e) => Err(format!("socket group {group} could not be looked up: {e}")),
        };
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

    /// Give the bound socket to `gid`, then open it to the mode.
    fn give(&self, gid: nix::unistd::Gid) -> Result<(), String> {
        let group = &self.group;
        self.socket
            .chgrp(gid)
            .map_err(|e| format!("cannot give the socket to group {group}: {e}"))?;
        self.socket
            .chmod(self.mode)
            .map_err(|e| format!("cannot set the socket's mode: {e}"))
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

    /// A socket bound at a fresh path in a temporary directory.
    fn bound() -> (tempfile::TempDir, PathBuf, std::os::unix::net::UnixListener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bound");
        (dir, path, listener)
    }

    #[test]
    fn a_named_group_gets_the_socket_then_the_mode() {
        let (_dir, path, _listener) = bound();
        let group = own_group();
        share(&path, 0o660, &group.name, WAIT, WAIT).expect("shared");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.gid(), group.gid.as_raw());
        assert_eq!(meta.mode() & 0o777, 0o660);
    }

    #[test]
    fn an_unknown_group_leaves_the_socket_to_its_owner() {
        let (_dir, path, _listener) = bound();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("mode");
        share(&path, 0o660, "hf-no-such-group-4711", WAIT, WAIT).expect("kept");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    /// An answer applies to the socket that was bound, not to what its
    /// path names later: another socket bound there, or a symlink.
    #[test]
    fn a_late_answer_leaves_alone_what_replaced_the_socket() {
        let (dir, path, listener) = bound();
        let late = Late {
            path: path.clone(),
            socket: Socket::open(&path).expect("the socket"),
            group: own_group().name,
            mode: 0o666,
        };
        drop(listener);
        std::fs::remove_file(&path).expect("removed");
        let _other = std::os::unix::net::UnixListener::bind(&path).expect("another bound");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("mode");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        late.give(own_group().gid)
            .expect("the removed socket is changed");
        assert_eq!(mode(&path), 0o600, "the other socket is untouched");

        let target = dir.path().join("secret");
        std::fs::write(&target, b"").expect("file");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("mode");
        std::fs::remove_file(&path).expect("removed");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        late.give(own_group().gid)
            .expect("the removed socket is changed");
        assert_eq!(mode(&target), 0o600, "the symlink's target is untouched");
        assert!(
            Socket::open(&path).is_err(),
            "a symlink is not taken for the socket"
        );
    }
}
