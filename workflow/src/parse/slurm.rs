//! The Slurm keys of `[defaults]` and activities: `executor`, `cpus` and
//! the `[slurm]` table, checked and merged key by key over the defaults.

use toml::Spanned;

use super::Diagnostics;
use super::raw::RawSlurm;
use super::values::Settings;
use crate::model::Executor;

/// Apply `executor`, `cpus` and `[slurm]` from one table to `out`.
pub(super) fn apply(
    out: &mut Settings,
    executor: Option<Spanned<String>>,
    cpus: Option<Spanned<i64>>,
    slurm: Option<RawSlurm>,
    diagnostics: &mut Diagnostics<'_>,
) {
    if let Some(executor) = executor {
        match executor.get_ref().as_str() {
            "local" => out.executor = Executor::Local,
            "slurm" => out.executor = Executor::Slurm,
            other => diagnostics.error(
                &executor.span(),
                format!("executor must be \"local\" or \"slurm\"; got {other:?}"),
            ),
        }
    }
    if let Some(cpus) = cpus {
        match u32::try_from(*cpus.get_ref()) {
            Ok(n) if (1..=100_000).contains(&n) => out.cpus = Some(n),
            _ => diagnostics.error(
                &cpus.span(),
                format!(
                    "cpus must be a whole number from 1 to 100000; got {}",
                    cpus.get_ref()
                ),
            ),
        }
    }
    let Some(slurm) = slurm else {
        return;
    };
    for (key, value, slot) in [
        ("partition", slurm.partition, &mut out.slurm.partition),
        ("account", slurm.account, &mut out.slurm.account),
        ("qos", slurm.qos, &mut out.slurm.qos),
        ("constraint", slurm.constraint, &mut out.slurm.constraint),
    ] {
        if let Some(value) = value {
            if value.get_ref().is_empty() || value.get_ref().contains(['\n', '\0']) {
                diagnostics.error(
                    &value.span(),
                    format!("slurm.{key} must be a non-empty line of text"),
                );
            } else {
                *slot = Some(value.into_inner());
            }
        }
    }
    if let Some(args) = slurm.sbatch_args {
        out.slurm.sbatch_args.clear();
        for arg in args {
            if arg.get_ref().contains('\0') {
                diagnostics.error(
                    &arg.span(),
                    "slurm.sbatch_args: an argument holds a NUL byte",
                );
            } else {
                out.slurm.sbatch_args.push(arg.into_inner());
            }
        }
    }
}
