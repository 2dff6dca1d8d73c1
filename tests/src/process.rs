//! Looking at processes through `/proc`, to check that what the daemon
//! killed is really gone.

use std::fs;
use std::time::{Duration, Instant};

/// State letter and process group of a process, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or
    // parentheses, so the fields are counted from the last ')'.
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// VmHWM (peak resident memory) of a process, in KiB; 0 when unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// True while `pid` exists and is not a zombie waiting to be reaped.
pub fn is_alive(pid: i32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Live (not zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((state, pgrp)) if pgrp == pgid && state != 'Z' && state != 'X'))
        .collect()
}

/// Wait up to `within` for `pid` to die (a SIGKILLed process needs a moment
/// to finish exiting); false if it is still alive then.
pub fn gone_within(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait up to `within` for every member of process group `pgid` to die;
/// returns the survivors.
pub fn group_gone_within(pgid: i32, within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let members = group_members(pgid);
        if members.is_empty() || Instant::now() > deadline {
            return members;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live (not zombie) processes whose environment sets `key`, with its value,
/// from one pass over `/proc` (processes of other users are skipped).
pub fn environment_values(key: &str) -> Vec<(i32, String)> {
    let prefix = format!("{key}=").into_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
            let value = environ
                .split(|&b| b == 0)
                .find_map(|var| var.strip_prefix(prefix.as_slice()))?;
            Some((pid, String::from_utf8_lossy(value).into_owned()))
        })
        .filter(|&(pid, _)| is_alive(pid))
        .collect()
}

/// Live (not zombie) processes whose environment holds `key=value`, read
/// from `/proc/<pid>/environ` (processes of other users are not readable
/// and are skipped).
pub fn with_environment(key: &str, value: &str) -> Vec<i32> {
    let wanted = format!("{key}={value}").into_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|&b| b == 0).any(|var| var == wanted))
        })
        .filter(|&pid| is_alive(pid))
        .collect()
}
