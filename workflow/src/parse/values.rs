//! Scalar values of a workflow file: durations, memory sizes, counts, the
//! `[defaults]` keys an activity inherits, and TOML values as JSON.

use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use toml::Spanned;

use super::Diagnostics;
use super::raw::{RawSettings, Span};
use crate::model::OnFailure;

/// A template-bearing string with where it was written.
#[derive(Debug, Clone)]
pub(super) struct Located {
    pub text: String,
    pub span: Span,
    /// Written in `[defaults]` rather than in the activity itself.
    pub from_defaults: bool,
}

/// The keys `[defaults]` gives every activity, after overrides.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_backoff: f64,
    pub max_retry_delay: Option<Duration>,
    pub on_failure: OnFailure,
    pub env: IndexMap<String, Located>,
    pub working_dir: Option<Located>,
    pub memory_max: Option<u64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub nofile: Option<u64>,
    pub tasks_max: Option<u64>,
    pub cpu_weight: Option<u32>,
    pub cpu_quota: Option<u32>,
    /// Connection names; an activity's own list replaces `[defaults]`'.
    pub connections: Vec<String>,
    pub executor: crate::model::Executor,
    pub cpus: Option<u32>,
    pub slurm: crate::model::SlurmOptions,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: None,
            retries: 0,
            // A retry right after a failure mostly fails the same way; a
            // short pause is the safer default.
            retry_delay: Duration::from_secs(1),
            retry_backoff: 1.0,
            max_retry_delay: None,
            on_failure: OnFailure::Fail,
            env: IndexMap::new(),
            working_dir: None,
            memory_max: None,
            user: None,
            group: None,
            nofile: None,
            tasks_max: None,
            cpu_weight: None,
            cpu_quota: None,
            connections: Vec::new(),
            executor: crate::model::Executor::Local,
            cpus: None,
            slurm: crate::model::SlurmOptions::default(),
        }
    }
}

impl Settings {
    /// `self` with the keys `raw` sets replaced; `env` is merged key by key.
    /// Invalid values are reported and leave the inherited value in place.
    pub fn overridden(
        &self,
        raw: RawSettings,
        from_defaults: bool,
        diagnostics: &mut Diagnostics<'_>,
    ) -> Settings {
        let mut out = self.clone();
        if let Some(timeout) = &raw.timeout {
            out.timeout = duration("timeout", timeout, false, diagnostics).or(out.timeout);
        }
        if let Some(retries) = &raw.retries {
            match u32::try_from(*retries.get_ref()) {
                Ok(retries) => out.retries = retries,
                Err(_) => diagnostics.error(
                    &retries.span(),
                    format!(
                        "retries must be a whole number from 0 to {}; got {}",
                        u32::MAX,
                        retries.get_ref()
                    ),
                ),
            }
        }
        if let Some(delay) = &raw.retry_delay {
            out.retry_delay =
                duration("retry_delay", delay, true, diagnostics).unwrap_or(out.retry_delay);
        }
        if let Some(backoff) = &raw.retry_backoff {
            let value = *backoff.get_ref();
            if value.is_finite() && value >= 1.0 {
                out.retry_backoff = value;
            } else {
                diagnostics.error(
                    &backoff.span(),
                    format!("retry_backoff must be a number of at least 1.0; got {value}"),
                );
            }
        }
        if let Some(max) = &raw.max_retry_delay {
            out.max_retry_delay =
                duration("max_retry_delay", max, true, diagnostics).or(out.max_retry_delay);
        }
        if let Some(on_failure) = &raw.on_failure {
            match on_failure.get_ref().as_str() {
                "fail" => out.on_failure = OnFailure::Fail,
                "continue" => out.on_failure = OnFailure::Continue,
                other => diagnostics.error(
                    &on_failure.span(),
                    format!("on_failure must be \"fail\" or \"continue\"; got {other:?}"),
                ),
            }
        }
        for (name, value) in raw.env.into_iter().flatten() {
            if let Err(message) = check_env_name(name.get_ref()) {
                diagnostics.error(&name.span(), message);
                continue;
            }
            out.env.insert(
                name.into_inner(),
                Located {
                    span: value.span(),
                    text: value.into_inner(),
                    from_defaults,
                },
            );
        }
        if let Some(dir) = raw.working_dir {
            if dir.get_ref().is_empty() {
                diagnostics.error(&dir.span(), "working_dir is empty");
            } else {
                out.working_dir = Some(Located {
                    span: dir.span(),
                    text: dir.into_inner(),
                    from_defaults,
                });
            }
        }
        if let Some(size) = &raw.memory_max {
            match memory_size(size.get_ref()) {
                Ok(bytes) => out.memory_max = Some(bytes),
                Err(message) => diagnostics.error(&size.span(), message),
            }
        }
        for (key, value, slot) in [
            ("user", &raw.user, &mut out.user),
            ("group", &raw.group, &mut out.group),
        ] {
            if let Some(name) = value {
                if unix_name(name.get_ref()) {
                    *slot = Some(name.get_ref().clone());
                } else {
                    diagnostics.error(
                        &name.span(),
                        format!("{key} {:?} is not a valid Unix name", name.get_ref()),
                    );
                }
            }
        }
        for (key, value, slot, max) in [
            ("nofile", &raw.nofile, &mut out.nofile, 1u64 << 20),
            ("tasks_max", &raw.tasks_max, &mut out.tasks_max, 1u64 << 22),
        ] {
            if let Some(n) = value {
                match u64::try_from(*n.get_ref()) {
                    Ok(v) if (1..=max).contains(&v) => *slot = Some(v),
                    _ => diagnostics.error(
                        &n.span(),
                        format!(
                            "{key} must be a whole number from 1 to {max}; got {}",
                            n.get_ref()
                        ),
                    ),
                }
            }
        }
        if let Some(weight) = &raw.cpu_weight {
            match u32::try_from(*weight.get_ref()) {
                Ok(w) if (1..=10_000).contains(&w) => out.cpu_weight = Some(w),
                _ => diagnostics.error(
                    &weight.span(),
                    format!(
                        "cpu_weight must be from 1 to 10000 (100 is normal); got {}",
                        weight.get_ref()
                    ),
                ),
            }
        }
        if let Some(names) = raw.connections {
            out.connections.clear();
            for name in names {
                if super::valid_name(name.get_ref()) {
                    out.connections.push(name.into_inner());
                } else {
                    diagnostics.error(
                        &name.span(),
                        format!(
                            "invalid connection name {:?}: {}",
                            name.get_ref(),
                            super::NAME_RULE
                        ),
                    );
                }
            }
        }
        super::slurm::apply(&mut out, raw.executor, raw.cpus, raw.slurm, diagnostics);
        if let Some(quota) = &raw.cpu_quota {
            match cpu_quota(quota.get_ref()) {
                Some(percent) => out.cpu_quota = Some(percent),
                None => diagnostics.error(
                    &quota.span(),
                    format!(
                        "cpu_quota must be a percentage of one CPU from 1% to 100000%, \
                         like \"50%\" or \"200%\"; got {:?}",
                        quota.get_ref()
                    ),
                ),
            }
        }
        out
    }
}

/// `cpu_quota`: `"50%"` (half a CPU) .. `"400%"` (four CPUs), as systemd's
/// `CPUQuota=` reads it.
fn cpu_quota(text: &str) -> Option<u32> {
    let digits = text.trim().strip_suffix('%')?.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u32>()
        .ok()
        .filter(|p| (1..=100_000).contains(p))
}

/// A user or group name as useradd accepts it.
fn unix_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

/// A duration like `"30s"`, `"5m"`, `"2h"` or `"1h 30m"`.
pub(super) fn duration(
    key: &str,
    value: &Spanned<String>,
    allow_zero: bool,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<Duration> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) if d.is_zero() && !allow_zero => {
            diagnostics.error(&value.span(), format!("{key} must be longer than 0s"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            diagnostics.error(
                &value.span(),
                format!(
                    "{key}: invalid duration {:?} ({e}); write it like \"30s\", \"5m\", \"2h\" or \"1h 30m\"",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// A count that must be at least 1 (`max_parallel`, `concurrency`).
pub(super) fn positive(
    key: &str,
    value: &Spanned<i64>,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<usize> {
    match usize::try_from(*value.get_ref()) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            diagnostics.error(
                &value.span(),
                format!("{key} must be at least 1; got {}", value.get_ref()),
            );
            None
        }
    }
}

/// `memory_max`: a number of bytes, or a number with K, M, G or T (powers
/// of 1024, as systemd reads them).
pub(super) fn memory_size(value: &toml::Value) -> Result<u64, String> {
    let bytes = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(text) => crate::parse_size(text).ok(),
        _ => None,
    };
    match bytes {
        Some(0) => Err("memory_max must be more than 0 bytes".to_string()),
        Some(bytes) => Ok(bytes),
        None => Err(format!(
            "memory_max: invalid size {value}; write bytes, or a number with K, M, G or T \
             (powers of 1024) like \"512M\" or \"2GiB\""
        )),
    }
}

/// Environment names an activity may set. `HF_` is the daemon's own
/// namespace: letting a file override `HF_JOB_ID` would only mislead the
/// program it runs.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        Err(format!(
            "env name {name:?} is not a valid variable name: use letters, digits and \"_\", \
             not starting with a digit"
        ))
    } else if name.starts_with("HF_") {
        Err(format!(
            "env name {name:?} is reserved: the daemon sets the HF_ variables itself"
        ))
    } else {
        Ok(())
    }
}

/// A TOML value as JSON. TOML dates and times become their text, which is
/// what the `date` and `datetime` parameter types hold.
pub(crate) fn to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(n) => Value::from(*n),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be used: only finite numbers are allowed"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(dt) => Value::String(dt.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        let size = |v: toml::Value| memory_size(&v);
        assert_eq!(size("512M".into()), Ok(512 << 20));
        assert_eq!(size("2G".into()), Ok(2 << 30));
        assert_eq!(size("100K".into()), Ok(100 << 10));
        assert_eq!(size("1T".into()), Ok(1 << 40));
        assert_eq!(size("4096".into()), Ok(4096));
        assert_eq!(size(toml::Value::Integer(1_000_000)), Ok(1_000_000));
        for bad in ["", "M", "5X", "1.5G", "-1M", "99999999999999999999T"] {
            assert!(size(bad.into()).is_err(), "{bad}");
        }
        assert_eq!(
            size(toml::Value::Integer(0)),
            Err("memory_max must be more than 0 bytes".to_string())
        );
        assert_eq!(
            size("5X".into()),
            Err("memory_max: invalid size \"5X\"; write bytes, or a number with K, M, G or T (powers of 1024) like \"512M\" or \"2GiB\"".to_string())
        );
    }

    #[test]
    fn env_names() {
        assert!(check_env_name("PGHOST").is_ok());
        assert!(check_env_name("_x1").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("").is_err());
        assert_eq!(
            check_env_name("HF_JOB_ID"),
            Err(
                "env name \"HF_JOB_ID\" is reserved: the daemon sets the HF_ variables itself"
                    .to_string()
            )
        );
    }
}
