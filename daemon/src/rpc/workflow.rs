//! `workflow.list` and `workflow.get`: the registry as loaded.

use holdfast_api::{
    ActivityInfo, ErrorCode, ParamInfo, ProcessInfo, WorkflowDetail, WorkflowSummary,
};
use holdfast_workflow::{Foreach, Program};
use jsonrpsee::core::RpcResult;

use super::RpcServer;
use crate::run_as;

pub(super) fn list(server: &RpcServer) -> RpcResult<Vec<WorkflowSummary>> {
    let registry = server.engine.registry.borrow().clone();
    Ok(registry
        .entries
        .values()
        .map(|entry| WorkflowSummary {
            name: entry.name.clone(),
            file: entry.file.display().to_string(),
            status: if entry.errors.is_empty() {
                "loaded".into()
            } else {
                "broken".into()
            },
            version: entry.chain.as_ref().map(|c| c.version.clone()),
            description: entry.chain.as_ref().and_then(|c| c.description.clone()),
            error: entry.errors.first().cloned(),
            errors: entry.errors.clone(),
        })
        .collect())
}

/// `workflow.get`. Whether an activity runs as root is what the user
/// database answered when the chain was loaded: a describe never waits on
/// it.
pub(super) fn get(server: &RpcServer, name: &str) -> RpcResult<WorkflowDetail> {
    let registry = server.engine.registry.borrow().clone();
    let settings = &server.settings;
    let entry = registry.entries.get(name);
    let Some(chain) = entry.and_then(|e| e.chain.clone()) else {
        return Err(ErrorCode::NotFound.error(match entry {
            Some(_) => format!("chain {name:?} failed to load; see `hfctl workflows`"),
            None => format!("no chain named {name:?}"),
        }));
    };
    let runs_as_root = entry.map(|e| e.runs_as_root.clone()).unwrap_or_default();
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let controllers = crate::cgroup::host().cgroups().map(|c| c.controllers());
    Ok(WorkflowDetail {
        name: chain.name.clone(),
        file: chain.file.display().to_string(),
        version: chain.version.clone(),
        description: chain.description.clone(),
        max_parallel: chain.max_parallel,
        concurrency: chain.concurrency,
        concurrency_per: chain.concurrency_per.as_str().to_string(),
        timeout_seconds: chain.timeout.map(secs),
        params: chain
            .params
            .values()
            .map(|p| ParamInfo {
                name: p.name.clone(),
                kind: p.kind.as_str().into(),
                required: p.required,
                default: p.default.clone(),
                allowed: p.allowed.clone(),
                min: p.min.clone(),
                max: p.max.clone(),
                description: p.description.clone(),
                secret: p.secret,
            })
            .collect(),
        tenants: registry.tenants_for(&chain.name),
        max_priority: chain.max_priority,
        notify: entry
            .map(|e| e.notify.iter().map(crate::notify::rules::info).collect())
            .unwrap_or_default(),
        processes: chain
            .processes
            .iter()
            .map(|process| ProcessInfo {
                name: process.name.clone(),
                mode: process.mode.as_str().into(),
                after: process.after.clone(),
                activities: process
                    .activities
                    .iter()
                    .map(|&i| {
                        let a = &chain.activities[i];
                        let (command, shell) = match &a.program {
                            Program::Command(argv) => (argv.clone(), false),
                            Program::Shell(script) => {
                                (vec!["/bin/sh".into(), "-c".into(), script.clone()], true)
                            }
                        };
                        ActivityInfo {
                            name: a.name.clone(),
                            path: a.path.clone(),
                            command,
                            shell,
                            timeout_seconds: a.timeout.map(secs),
                            retries: a.retries,
                            retry_delay_seconds: secs(a.retry_delay),
                            retry_backoff: a.retry_backoff,
                            max_retry_delay_seconds: a.max_retry_delay.map(secs),
                            on_failure: a.on_failure.as_str().into(),
                            working_dir: a.working_dir.clone(),
                            user: run_as::user_for(a, settings).map(str::to_string),
                            group: a.group.clone(),
                            limits: crate::caps::plan(
                                a,
                                controllers,
                                runs_as_root.get(i).copied().unwrap_or(false),
                            )
                            .1
                            .into_iter()
                            .map(|m| holdfast_api::LimitInfo {
                                name: m.name.to_string(),
                                value: m.value,
                                mechanism: m.how,
                            })
                            .collect(),
                            connections: a.connections.clone(),
                            foreach: a.foreach.as_ref().map(|f| match f {
                                Foreach::List(template) => template.clone(),
                                Foreach::Chunks { count, chunk_size } => {
                                    format!("{{ count = {count:?}, chunk_size = {chunk_size} }}")
                                }
                                Foreach::Tenants => "tenants".to_string(),
                            }),
                            max_parallel: a.max_parallel,
                            executor: crate::executor::slurm::describe(a, settings),
                        }
                    })
                    .collect(),
            })
            .collect(),
    })
}
