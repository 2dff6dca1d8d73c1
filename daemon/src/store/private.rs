//! Keeping the state directory private: job parameters, outputs and attempt
//! logs are only for the daemon (and, through it, for whoever may read
//! them). Directories the daemon creates are 0700 and its files 0600
//! whatever umask it was started with; modes found looser are reported.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode bits that let anyone but the owner in.
const OPEN_TO_OTHERS: u32 = 0o077;

/// From now on, every file and directory the daemon (and what it starts)
/// creates is private to its user unless made otherwise on purpose; the
/// packaged unit sets the same (`UMask=0077`), a daemon started by hand did
/// not.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Create `dir` (and missing parents) with mode 0700. An existing directory
/// keeps its mode (see [`warn_if_open`]).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// One warning for each of `paths` that exists with a mode letting its
/// group or others in: the daemon does not change a mode an operator set,
/// but says what it exposes.
pub fn warn_if_open(paths: &[&Path]) {
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & OPEN_TO_OTHERS != 0 {
            let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                "{} is mode {mode:04o}, so other local users may read job parameters and logs through it; make it {wanted:04o} (chmod {wanted:o} {})",
                path.display(),
                path.display()
            );
        }
    }
}
