//! An attempt's resource use: read from its cgroup just before the cgroup
//! is removed, or from the leader's `wait4` rusage without one. Which
//! source gives which figure is documented in docs/monitoring.md.

use std::time::Duration;

use holdfast_api::ResourceUse;
use nix::libc;

/// What `wait4` said about the leader: its own use plus that of the
/// descendants it waited for (a process that was not waited for, or that
/// was killed with the group, is not counted).
#[derive(Debug, Clone, Copy)]
pub struct Rusage {
    pub user_cpu_us: u64,
    pub system_cpu_us: u64,
    /// The largest resident set of the leader or of one waited-for
    /// descendant (not their sum), in bytes.
    pub max_rss_bytes: u64,
    pub blocks_in: u64,
    pub blocks_out: u64,
}

impl Rusage {
    pub fn from_libc(ru: &libc::rusage) -> Rusage {
        let us =
            |tv: libc::timeval| (tv.tv_sec.max(0) as u64) * 1_000_000 + tv.tv_usec.max(0) as u64;
        Rusage {
            user_cpu_us: us(ru.ru_utime),
            system_cpu_us: us(ru.ru_stime),
            // Linux gives ru_maxrss in KiB.
            max_rss_bytes: (ru.ru_maxrss.max(0) as u64) * 1024,
            blocks_in: ru.ru_inblock.max(0) as u64,
            blocks_out: ru.ru_oublock.max(0) as u64,
        }
    }
}

/// Resource use from rusage alone. Block counts are in 512-byte units.
pub fn from_rusage(ru: &Rusage, wall: Duration) -> ResourceUse {
    ResourceUse {
        source: "rusage".into(),
        wall_ms: wall.as_millis() as u64,
        user_cpu_us: ru.user_cpu_us,
        system_cpu_us: ru.system_cpu_us,
        peak_memory_bytes: Some(ru.max_rss_bytes),
        io_read_bytes: Some(ru.blocks_in * 512),
        io_write_bytes: Some(ru.blocks_out * 512),
    }
}

/// Resource use from the attempt's cgroup: every process that ran in it,
/// waited for or not. A file the kernel does not offer (`memory.peak`
/// before Linux 5.19, `io.stat` without the io controller) falls back to
/// rusage for that figure, or leaves it out.
pub fn from_cgroup(
    cgroup: &crate::cgroup::AttemptCgroup,
    rusage: Option<&Rusage>,
    wall: Duration,
) -> Option<ResourceUse> {
    let (user, system) = cgroup.read("cpu.stat").as_deref().and_then(cpu_stat)?;
    let peak = cgroup
        .read("memory.peak")
        .and_then(|text| text.trim().parse::<u64>().ok())
        .or(rusage.map(|ru| ru.max_rss_bytes));
    let io = cgroup.read("io.stat").map(|text| io_stat(&text));
    Some(ResourceUse {
        source: "cgroup".into(),
        wall_ms: wall.as_millis() as u64,
        user_cpu_us: user,
        system_cpu_us: system,
        peak_memory_bytes: peak,
        io_read_bytes: io.map(|(read, _)| read),
        io_write_bytes: io.map(|(_, written)| written),
    })
}

/// `user_usec` and `system_usec` from a `cpu.stat` file.
fn cpu_stat(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<u64>().ok())?
        })
    };
    Some((field("user_usec")?, field("system_usec")?))
}

/// `rbytes` and `wbytes` summed over every device of an `io.stat` file
/// (`MAJ:MIN rbytes=N wbytes=N rios=N ...` per line).
fn io_stat(text: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for field in text.split_whitespace() {
        if let Some(n) = field.strip_prefix("rbytes=") {
            read = read.saturating_add(n.parse().unwrap_or(0));
        } else if let Some(n) = field.strip_prefix("wbytes=") {
            written = written.saturating_add(n.parse().unwrap_or(0));
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_stat() {
        let text = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(cpu_stat(text), Some((1000, 500)));
        assert_eq!(cpu_stat("usage_usec 1\n"), None);
    }

    #[test]
    fn sums_io_stat_over_devices() {
        let text = "8:0 rbytes=4096 wbytes=100 rios=1 wios=1 dbytes=0 dios=0\n\
                    259:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(io_stat(text), (4106, 120));
        assert_eq!(io_stat(""), (0, 0));
    }
}
