//! Where a test or benchmark may make a cgroup of its own: a child of this
//! process's cgroup in the cgroup v2 hierarchy.

use std::path::PathBuf;

/// The directory a new child cgroup named `name` of this process's cgroup
/// would have, and the path `/proc/<pid>/cgroup` shows for it; `None`
/// without a cgroup v2 mount.
pub fn child_of_own(name: &str) -> Option<(PathBuf, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next()? == "cgroup2")
            .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let parent = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_end_matches('/');
    let relative = format!("{parent}/{name}");
    Some((mount.join(relative.trim_start_matches('/')), relative))
}
