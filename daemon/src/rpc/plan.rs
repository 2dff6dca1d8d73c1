//! `job.plan` (`hfctl submit --dry-run`): check a submission exactly as
//! `job.submit` does and show what it would run, without creating a job.

use holdfast_api::{Plan, PlannedActivity};
use holdfast_workflow::params::{MASK, env_name, value_as_env};
use holdfast_workflow::template::{JobContext, RenderContext, reads_any_param, render};
use holdfast_workflow::{BusinessDate, Chain, DateZone, HandlerKind, Program};
use jsonrpsee::core::RpcResult;
use serde_json::{Map, Value};

use super::{RpcServer, submit_error};
use crate::engine::Caller;
use crate::engine::job::{Prepared, prepare};

/// Names whose values are masked in a plan.
const SECRET_WORDS: [&str; 7] = [
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
];

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

pub(super) async fn handle(
    server: &RpcServer,
    caller: Caller,
    target: String,
    params: Option<Map<String, Value>>,
    tenant: Option<String>,
    until: Option<String>,
    at: Option<String>,
) -> RpcResult<Plan> {
    // As of `at` (read as `job.submit` reads it), else as of now.
    let date = match at {
        Some(text) => BusinessDate::parse(&text, DateZone::Local).map_err(|message| {
            submit_error(
                &target,
                crate::engine::SubmitError::Invalid(vec![holdfast_api::FieldError {
                    field: "at".into(),
                    message,
                }]),
            )
        })?,
        None => BusinessDate {
            at: chrono::Utc::now(),
            zone: DateZone::Local,
        },
    };
    let registry = server.engine.registry.borrow().clone();
    let prepared = prepare(
        &registry,
        &target,
        until.as_deref(),
        &params.unwrap_or_default(),
        None,
        tenant.as_deref(),
        &caller,
    )
    .map_err(|e| submit_error(&target, e))?;
    let mut plan = build(&target, tenant, prepared, date);
    plan.until = until;
    Ok(plan)
}

/// Render what can be rendered: an argument that needs an output that does
/// not exist yet stays as its template.
fn render_or_keep(text: &str, context: &RenderContext) -> String {
    render(text, context).unwrap_or_else(|_| text.to_string())
}

fn build(target: &str, tenant: Option<String>, prepared: Prepared, date: BusinessDate) -> Plan {
    let Prepared {
        chain,
        included,
        params,
        secret,
    } = prepared;
    // Secret values are never shown, nor rendered into anything: a value
    // whose template reads a secret is shown as its template
    // (`DB_URL=postgres://u:{{ params.pw }}@db/x`). Masking rendered text
    // instead would tell a caller whether a value of theirs holds a secret.
    let context = RenderContext {
        params: params.clone(),
        job: JobContext {
            id: 0,
            run_id: 0,
            chain: chain.name.clone(),
            target: target.to_string(),
            tenant: tenant.clone(),
            attempt: 1,
            outcome: None,
        },
        outputs: Map::new(),
        secret_dir: None,
        item: None,
        schedule: Some(date),
    };
    let waves = waves(&chain, &included);
    let mut planned: Vec<Vec<PlannedActivity>> = Vec::new();
    for wave in waves {
        let mut out = Vec::new();
        for idx in wave {
            let activity = &chain.activities[idx];
            let argv = match &activity.program {
                Program::Command(argv) => {
                    argv.iter().map(|a| render_or_keep(a, &context)).collect()
                }
                Program::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
            };
            let mut env: Vec<(String, String)> = vec![
                ("HF_JOB_ID".into(), "(assigned at submit)".into()),
                ("HF_RUN_ID".into(), "(assigned at submit)".into()),
                ("HF_ATTEMPT".into(), "1".into()),
                ("HF_CONTROL_FD".into(), "3".into()),
                ("HF_CHAIN".into(), chain.name.clone()),
                ("HF_PROCESS".into(), activity.process.clone()),
                ("HF_ACTIVITY".into(), activity.name.clone()),
                ("HF_TENANT".into(), tenant.clone().unwrap_or_default()),
                (
                    "HF_SCHEDULED_AT".into(),
                    context.schedule.map(|d| d.rfc3339()).unwrap_or_default(),
                ),
            ];
            for (name, value) in &params {
                let shown = if secret.contains(name) {
                    MASK.to_string()
                } else {
                    value_as_env(value)
                };
                env.push((env_name(name), shown));
            }
            for (name, value) in &activity.env {
                let shown = if reads_any_param(value, &secret) {
                    value.clone()
                } else {
                    render_or_keep(value, &context)
                };
                env.push((name.clone(), shown));
            }
            for (name, value) in &mut env {
                if looks_secret(name) {
                    *value = MASK.into();
                }
            }
            out.push(PlannedActivity {
                path: activity.path.clone(),
                argv,
                env,
                working_dir: activity
                    .working_dir
                    .as_deref()
                    .map(|w| render_or_keep(w, &context)),
                timeout_seconds: activity.timeout.map(|t| t.as_secs_f64()),
                retries: activity.retries,
                memory_max: activity.memory_max,
                depends_on: activity
                    .deps
                    .iter()
                    .filter(|&&d| included[d])
                    .map(|&d| chain.activities[d].path.clone())
                    .collect(),
            });
        }
        planned.push(out);
    }
    let mut shown = holdfast_workflow::params::masked_names(&params, &secret);
    for (name, value) in &mut shown {
        if looks_secret(name) {
            *value = Value::String(MASK.into());
        }
    }
    Plan {
        target: target.to_string(),
        chain: chain.name.clone(),
        version: chain.version.clone(),
        tenant,
        until: None,
        params: shown,
        waves: planned,
    }
}

/// Group the included activities by the length of their longest chain of
/// included dependencies. Dependencies always point to earlier activities
/// in the chain's order, so one pass in that order suffices.
fn waves(chain: &Chain, included: &[bool]) -> Vec<Vec<usize>> {
    let mut level = vec![0usize; chain.activities.len()];
    let mut waves: Vec<Vec<usize>> = Vec::new();
    // The job's own activities, then its handlers (which run once the graph
    // is done), then on_exit (after the others).
    let passes: [fn(Option<HandlerKind>) -> bool; 3] = [
        |h| h.is_none(),
        |h| h.is_some_and(|k| k != HandlerKind::OnExit),
        |h| h == Some(HandlerKind::OnExit),
    ];
    for pass in passes {
        let base = waves.len();
        for (idx, activity) in chain.activities.iter().enumerate() {
            if !included[idx] || !pass(activity.handler) {
                continue;
            }
            let l = activity
                .deps
                .iter()
                .filter(|&&d| included[d])
                .map(|&d| level[d] + 1)
                .max()
                .unwrap_or(0)
                .max(base);
            level[idx] = l;
            if waves.len() <= l {
                waves.resize_with(l + 1, Vec::new);
            }
            waves[l].push(idx);
        }
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised() {
        assert!(looks_secret("PGPASSWORD"));
        assert!(looks_secret("api_token"));
        assert!(!looks_secret("PGHOST"));
    }
}
