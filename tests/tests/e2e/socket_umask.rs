//! The socket of a daemon started by hand under a loose umask: its mode and
//! its directory's are what the daemon sets, never what the umask allows.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use holdfast_tests::TestDaemon;

use crate::integrity::ByHand;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{} exists: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Proves that a system-mode daemon started by hand under `umask 000`
/// creates its socket's missing directories 0755 (reachable, not writable
/// by others) and leaves the socket 0660, its configured mode. The socket is
/// bound under umask 0077 and only then chmodded, so it is never looser
/// than configured; before the fix the umask was tightened after the bind,
/// so the directories came out 0777 (anyone could replace the socket) and
/// the socket was 0777 until its chmod.
#[test]
fn the_socket_and_its_directory_ignore_a_loose_umask() {
    // A group that exists everywhere, so the socket gets 0660.
    let daemon = TestDaemon::prepare(Some("socket_group = \"root\"\n"), &[]);
    let run = daemon.dir().join("run");
    let socket = run.join("sub").join("holdfast.sock");
    let _running = ByHand::start_as(&daemon, "000", &socket);
    let meta = fs::symlink_metadata(&socket).expect("the socket exists");
    assert!(
        meta.file_type().is_socket(),
        "{} is a socket",
        socket.display()
    );
    assert_eq!(mode(&socket), 0o660, "the socket has its configured mode");
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        0,
        "the socket belongs to its socket_group"
    );
    for dir in [&run, &run.join("sub")] {
        assert_eq!(
            mode(dir),
            0o755,
            "{} was made with the socket directory's own mode",
            dir.display()
        );
    }
    let lock = daemon.state_dir().join("holdfast.lock");
    assert_eq!(mode(&lock), 0o600, "the lock file is made under umask 0077");
}
