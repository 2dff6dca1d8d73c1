//! A process's start time in clock ticks since boot (field 22 of
//! `/proc/PID/stat`): with the pid, it recognises the same process after a
//! restart even if the pid was reused.
//!
//! Reading `/proc/PID/stat` costs a procfs look-up and the kernel's
//! formatting of the whole line: about a twentieth of the daemon's CPU per
//! short activity. A child the daemon starts needs no read: the kernel
//! takes its start time from CLOCK_BOOTTIME inside `clone`, so if the same
//! clock read just before the `clone` and just after it falls in the same
//! tick, that tick is the child's start time ([`Window`]). Only a start that
//! straddles a tick (10 ms) reads the file.

use nix::libc;

/// Clock ticks per second (`USER_HZ`, 100 on Linux): the unit of
/// `/proc/PID/stat`'s start time.
#[allow(unsafe_code)]
fn ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz)
        .ok()
        .filter(|&hz| hz > 0 && 1_000_000_000 % hz == 0)
}

/// CLOCK_BOOTTIME now, in clock ticks, rounded down as the kernel rounds a
/// process's start time (`nsec_to_clock_t`).
#[allow(unsafe_code)]
fn boot_ticks() -> Option<u64> {
    let hz = ticks_per_second()?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which outlives
    // the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    Some(secs * hz + nanos / (1_000_000_000 / hz))
}

/// The tick before a `clone`; [`Window::start_time`] after it gives the
/// child's start time when both readings agree.
pub struct Window(Option<u64>);

impl Window {
    /// Read the clock just before the `clone`.
    pub fn open() -> Window {
        Window(boot_ticks())
    }

    /// The child's start time, if the clock, read now (after the `clone`
    /// returned), is still in the tick read before it.
    pub fn start_time(self) -> Option<u64> {
        self.0.filter(|&before| boot_ticks() == Some(before))
    }
}

/// The start time of process `pid`, from `/proc/PID/stat`.
pub fn of_pid(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume
    // after the last ')'. Field 3 (state) is the first one after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window names the same tick as `/proc` for children started
    /// between its two readings, and says nothing rather than guess.
    #[test]
    fn a_window_agrees_with_proc() {
        let mut named = 0;
        // A window straddles a 10 ms tick only when a start is slow, as on
        // a loaded machine: try until 50 have named one.
        for _ in 0..2_000 {
            let window = Window::open();
            let mut child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .expect("sleep starts");
            let start_time = window.start_time();
            let from_proc = of_pid(child.id());
            child.kill().expect("kill");
            child.wait().expect("reaped");
            assert!(from_proc.is_some(), "/proc names a live child's start");
            if let Some(ticks) = start_time {
                assert_eq!(Some(ticks), from_proc);
                named += 1;
                if named == 50 {
                    return;
                }
            }
        }
        panic!("only {named} of 2,000 windows named a tick");
    }
}
