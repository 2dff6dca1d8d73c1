//! Secret files: `{{ secret_file("name") }}` in an activity's templates
//! renders the path of a file holding that secret parameter's value, for
//! programs that read a password from a file rather than the environment.
//!
//! The files of one attempt live in `secrets/<job>-<index>-<attempt>/`
//! beside the daemon's socket (a runtime directory: `/run/holdfast` in
//! system mode, so the files are on tmpfs, never on disk): the `secrets`
//! directory is 0711 (no listing), the attempt's directory 0700 and each
//! file 0600, both owned by the activity's user. The directory is removed
//! when the attempt ends, and every leftover (a crash) when the engine
//! starts.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::executor::AttemptKey;
use crate::run_as::Identity;

/// The secret files of one attempt, to be written once its user is known
/// (by the executor, with the attempt's [`Identity`]). Debug shows the
/// names only.
#[derive(Clone)]
pub struct Pending {
    pub dir: PathBuf,
    /// `(name, value)`.
    pub files: Vec<(String, String)>,
}

impl Pending {
    /// [`write`] these files, owned by `identity` when given.
    pub fn write(&self, identity: Option<&Identity>) -> Result<(), String> {
        write(&self.dir, &self.files, identity)
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("dir", &self.dir)
            .field(
                "files",
                &self.files.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where the secret files of every attempt are.
pub fn root(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("secrets")
}

/// One attempt's directory.
pub fn attempt_dir(socket: &Path, key: AttemptKey) -> PathBuf {
    root(socket).join(key.name())
}

/// Write `files` (`(name, value)`) into `dir`, owned by `identity` when the
/// activity runs as another user. Any failure removes what was written.
fn write(
    dir: &Path,
    files: &[(String, String)],
    identity: Option<&Identity>,
) -> Result<(), String> {
    let result = write_all(dir, files, identity);
    if result.is_err() {
        remove(dir);
    }
    result.map_err(|e| format!("cannot write the secret files in {}: {e}", dir.display()))
}

fn write_all(
    dir: &Path,
    files: &[(String, String)],
    identity: Option<&Identity>,
) -> std::io::Result<()> {
    if let Some(root) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))?;
    }
    // A directory left by an attempt with the same key belongs to a dead
    // process: start afresh.
    remove(dir);
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    let owner = identity.map(|id| {
        (
            Some(nix::unistd::Uid::from_raw(id.uid)),
            Some(nix::unistd::Gid::from_raw(id.gid)),
        )
    });
    for (name, value) in files {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        file.write_all(value.as_bytes())?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(&file, uid, gid).map_err(std::io::Error::from)?;
        }
    }
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(dir, uid, gid).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Remove one attempt's files; nothing to do when there are none.
pub fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an attempt's secret files");
    }
}

/// Remove the files of every attempt (at start: no attempt runs yet).
pub fn clear(socket: &Path) {
    let root = root(socket);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        remove(&entry.path());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_private_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("hf.sock");
        let key = AttemptKey {
            job_id: 4,
            idx: 1,
            number: 2,
            item: None,
        };
        let attempt = attempt_dir(&socket, key);
        assert!(attempt.ends_with("secrets/4-1-2"));
        write(&attempt, &[("pw".into(), "hunter2".into())], None).unwrap();
        let file = attempt.join("pw");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "hunter2");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&attempt).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(root(&socket)).unwrap().mode() & 0o777,
            0o711
        );
        // Written again (a retry of the same key after a crash): fresh.
        write(&attempt, &[("pw".into(), "other".into())], None).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "other");
        clear(&socket);
        assert!(!attempt.exists());
        remove(&attempt);
    }
}
