//! Whether an attempt's arguments and environment fit what Linux lets one
//! program start with, checked before the start so a value too large
//! becomes a clear `spawn_error` instead of "Argument list too long".
//!
//! Linux limits each string (`MAX_ARG_STRLEN`, 128 KiB with its NUL) and
//! all of them together with their pointers: a quarter of the stack's soft
//! limit, at most 6 MiB and at least 128 KiB (`bprm_stack_limits` in
//! `fs/exec.c`). The child inherits the daemon's stack limit.

use std::ffi::CString;

use holdfast_workflow::params::MAX_ENVIRONMENT_STRING;
use nix::libc;

/// The most all strings and their pointers may take with a stack soft
/// limit of `stack` bytes (`None`: unlimited).
fn total_limit(stack: Option<u64>) -> usize {
    const CAP: usize = 6 << 20;
    let quarter = stack.map_or(CAP, |s| usize::try_from(s / 4).unwrap_or(CAP));
    quarter.clamp(MAX_ENVIRONMENT_STRING, CAP)
}

/// The daemon's soft stack limit; `None` for unlimited or unknown.
#[allow(unsafe_code)]
fn stack_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, which outlives the
    // call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Check `argv` and `env` (`KEY=VALUE`) against the limits; the error says
/// which value is too large and what to do.
pub fn check(argv: &[String], env: &[CString]) -> Result<(), String> {
    check_within(argv, env, total_limit(stack_limit()))
}

fn check_within(argv: &[String], env: &[CString], limit: usize) -> Result<(), String> {
    for (n, arg) in argv.iter().enumerate() {
        let bytes = arg.len() + 1;
        if bytes > MAX_ENVIRONMENT_STRING {
            return Err(format!(
                "argument {n} of the command takes {bytes} bytes, more than the 128 KiB Linux \
                 allows for one; pass large values in a file, not in the command"
            ));
        }
    }
    for variable in env {
        let bytes = variable.as_bytes_with_nul().len();
        if bytes > MAX_ENVIRONMENT_STRING {
            let text = variable.to_string_lossy();
            let name = text.split_once('=').map_or(text.as_ref(), |(name, _)| name);
            return Err(format!(
                "environment variable {name} takes {bytes} bytes, more than the 128 KiB Linux \
                 allows for one; pass large values in a file, not in the environment"
            ));
        }
    }
    let strings: usize = argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + env
            .iter()
            .map(|e| e.as_bytes_with_nul().len())
            .sum::<usize>();
    let pointers = (argv.len().max(1) + env.len()) * size_of::<usize>();
    let total = strings + pointers;
    if total > limit {
        return Err(format!(
            "the command and its environment take {total} bytes, more than the {limit} bytes \
             Linux allows a program to start with (ARG_MAX); pass large values in files"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, usize)]) -> Vec<CString> {
        pairs
            .iter()
            .filter_map(|(name, bytes)| CString::new(format!("{name}={}", "v".repeat(*bytes))).ok())
            .collect()
    }

    #[test]
    fn the_limit_follows_the_stack() {
        assert_eq!(total_limit(Some(8 << 20)), 2 << 20);
        assert_eq!(total_limit(None), 6 << 20);
        assert_eq!(total_limit(Some(64 << 20)), 6 << 20);
        assert_eq!(total_limit(Some(4096)), MAX_ENVIRONMENT_STRING);
    }

    #[test]
    fn one_string_too_large_is_named() {
        let argv = vec!["true".to_string()];
        assert_eq!(
            check_within(&argv, &env(&[("HF_CHECKPOINT", 100 << 10)]), 2 << 20),
            Ok(())
        );
        let error = check_within(&argv, &env(&[("HF_CHECKPOINT", 200 << 10)]), 2 << 20)
            .expect_err("200 KiB is too large for one variable");
        assert!(error.contains("HF_CHECKPOINT"), "{error}");
        let long_argv = vec!["echo".to_string(), "a".repeat(200 << 10)];
        let error = check_within(&long_argv, &[], 2 << 20)
            .expect_err("200 KiB is too large for one argument");
        assert!(error.contains("argument 1"), "{error}");
    }

    #[test]
    fn all_together_too_large_is_refused() {
        let argv = vec!["true".to_string()];
        let many: Vec<(String, usize)> = (0..20).map(|n| (format!("V{n}"), 120 << 10)).collect();
        let pairs: Vec<(&str, usize)> = many.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        let error = check_within(&argv, &env(&pairs), 2 << 20)
            .expect_err("20 variables of 120 KiB exceed 2 MiB");
        assert!(error.contains("ARG_MAX"), "{error}");
        assert_eq!(check_within(&argv, &env(&pairs[..10]), 2 << 20), Ok(()));
    }
}
