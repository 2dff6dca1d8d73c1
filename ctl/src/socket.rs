//! Finding the daemon's socket: `--socket`, then `HOLDFAST_SOCKET` (both
//! arrive through clap), then the user daemon's socket if it exists, then the
//! system daemon's.

use std::path::{Path, PathBuf};

/// Where the system daemon listens (`systemctl start holdfast`).
pub const SYSTEM_SOCKET: &str = "/run/holdfast/holdfast.sock";

/// The socket to talk to, given `--socket`/`HOLDFAST_SOCKET` if set.
pub fn discover(explicit: Option<&Path>) -> PathBuf {
    choose(explicit, user_socket().as_deref(), |path| path.exists())
}

/// Where a user-mode `holdfastd` puts its socket: the same rule the daemon
/// uses, so the two agree even without `XDG_RUNTIME_DIR`.
fn user_socket() -> Option<PathBuf> {
    let base = directories::BaseDirs::new()?;
    let runtime = match base.runtime_dir() {
        Some(dir) => dir.join("holdfast"),
        None => base
            .state_dir()
            .unwrap_or_else(|| base.data_local_dir())
            .join("holdfast")
            .join("run"),
    };
    Some(runtime.join("holdfast.sock"))
}

fn choose(explicit: Option<&Path>, user: Option<&Path>, exists: impl Fn(&Path) -> bool) -> PathBuf {
    // An empty HOLDFAST_SOCKET means "not set", as for most variables.
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return path.to_path_buf();
    }
    match user {
        Some(user) if exists(user) => user.to_path_buf(),
        _ => PathBuf::from(SYSTEM_SOCKET),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_socket_wins() {
        let chosen = choose(
            Some(Path::new("/tmp/x.sock")),
            Some(Path::new("/run/user/1000/holdfast/holdfast.sock")),
            |_| true,
        );
        assert_eq!(chosen, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn user_socket_only_when_it_exists() {
        let user = Path::new("/run/user/1000/holdfast/holdfast.sock");
        assert_eq!(choose(None, Some(user), |_| true), user);
        assert_eq!(
            choose(None, Some(user), |_| false),
            PathBuf::from(SYSTEM_SOCKET)
        );
        assert_eq!(
            choose(Some(Path::new("")), None, |_| true),
            PathBuf::from(SYSTEM_SOCKET)
        );
    }
}
