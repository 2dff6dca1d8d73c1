//! `rpc.discover`: an OpenRPC 1.2 document of the API, built from the
//! registry at call time so each loaded chain's parameters appear as a JSON
//! Schema (for generated clients and forms).

use holdfast_workflow::{Chain, ParamKind};
use serde_json::{Map, Value, json};

use super::RpcServer;

/// (name, summary, params as (name, required, schema), result schema).
type MethodSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, bool, &'static str)],
    &'static str,
);

/// The methods, their named parameters and result schemas. Schemas are
/// JSON text, `$ref`s point into `components.schemas`.
const METHODS: &[MethodSpec] = &[
    (
        "stats.get",
        "Runs, success rate, retries, duration and queue-wait percentiles, peak memory and CPU per chain and per activity.",
        &[
            (
                "target",
                false,
                r#"{"type":"string","description":"CHAIN, CHAIN.PROCESS or CHAIN.PROCESS.ACTIVITY"}"#,
            ),
            (
                "since",
                false,
                r#"{"type":"string","description":"a duration back from now (7d, 12h) or an RFC 3339 instant; 7d by default"}"#,
            ),
            ("tenant", false, r#"{"type":"string"}"#),
        ],
        r#"{"type":"object","description":"since, chains and activities with their figures"}"#,
    ),
    (
        "daemon.info",
        "Version, protocol number, pid, uptime, mode, paths, counts and how attempts are confined.",
        &[],
        r##"{"$ref":"#/components/schemas/DaemonInfo"}"##,
    ),
    (
        "job.submit",
        "Queue one run of a target; answers once the job is durably committed.",
        &[
            (
                "target",
                true,
                r#"{"type":"string","description":"chain, chain.process or chain.process.activity"}"#,
            ),
            (
                "params",
                false,
                r#"{"type":"object","description":"parameters by name; see x-chain-params for each chain's schema"}"#,
            ),
            ("tenant", false, r#"{"type":"string"}"#),
            (
                "priority",
                false,
                r#"{"type":"integer","description":"higher runs first"}"#,
            ),
            (
                "simulate",
                false,
                r#"{"type":"boolean","description":"replace every activity by its [simulate] stand-in"}"#,
            ),
            (
                "request_id",
                false,
                r#"{"type":"string","minLength":1,"maxLength":128,"description":"client idempotency key: the same key from the same uid answers with the first job"}"#,
            ),
            (
                "until",
                false,
                r#"{"type":"string","description":"a process of the chain target: run it and every process it depends on, nothing else"}"#,
            ),
            (
                "at",
                false,
                r#"{"type":"string","description":"the instant the job runs as of (schedule.at): YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] in the daemon's zone, or RFC 3339; the submission's instant without it"}"#,
            ),
        ],
        r##"{"$ref":"#/components/schemas/SubmitResult"}"##,
    ),
    (
        "job.plan",
        "Check a submission and return what it would run, creating no job.",
        &[
            ("target", true, r#"{"type":"string"}"#),
            ("params", false, r#"{"type":"object"}"#),
            ("tenant", false, r#"{"type":"string"}"#),
            ("until", false, r#"{"type":"string"}"#),
            (
                "at",
                false,
                r#"{"type":"string","description":"render as of this instant (as job.submit reads it); now without it"}"#,
            ),
        ],
        r#"{"type":"object","description":"target, chain, version, tenant, params and waves of planned activities"}"#,
    ),
    (
        "job.get",
        "One job with its activities and attempts.",
        &[("job_id", true, r#"{"type":"integer","minimum":1}"#)],
        r##"{"$ref":"#/components/schemas/Job"}"##,
    ),
    (
        "job.items",
        "A fan-out's items in index order, paged, with counts by state.",
        &[
            ("job_id", true, r#"{"type":"integer","minimum":1}"#),
            (
                "activity",
                true,
                r#"{"type":"string","description":"process.activity or chain.process.activity"}"#,
            ),
            ("offset", false, r#"{"type":"integer","minimum":0}"#),
            (
                "limit",
                false,
                r#"{"type":"integer","minimum":1,"maximum":1000}"#,
            ),
        ],
        r#"{"type":"object","properties":{"activity":{"type":"string"},"counts":{"type":"object"},"items":{"type":"array"},"next_offset":{"type":["integer","null"]}}}"#,
    ),
    (
        "job.list",
        "Recent jobs, newest first, filtered and paged.",
        &[
            (
                "state",
                false,
                r#"{"type":"string","enum":["queued","running","succeeded","failed","cancelled"]}"#,
            ),
            ("chain", false, r#"{"type":"string"}"#),
            (
                "limit",
                false,
                r#"{"type":"integer","minimum":1,"maximum":1000}"#,
            ),
            ("tenant", false, r#"{"type":"string"}"#),
            (
                "since",
                false,
                r#"{"type":"string","description":"a duration back from now (7d), a date (2026-12-01) or an RFC 3339 instant"}"#,
            ),
            (
                "before",
                false,
                r#"{"type":"integer","description":"next_before of the previous page"}"#,
            ),
        ],
        r#"{"type":"object","properties":{"jobs":{"type":"array"},"next_before":{"type":["integer","null"]}}}"#,
    ),
    (
        "job.cancel",
        "Cancel queued or running jobs.",
        &[(
            "job_ids",
            true,
            r#"{"type":"array","items":{"type":"integer"}}"#,
        )],
        r#"{"type":"array","items":{"type":"object","properties":{"job_id":{"type":"integer"},"state":{"type":["string","null"]},"error":{"type":["string","null"]}}}}"#,
    ),
    (
        "job.retry",
        "Reprocess a finished job, keeping what succeeded unless from_start.",
        &[
            ("job_id", true, r#"{"type":"integer"}"#),
            ("from_start", false, r#"{"type":"boolean"}"#),
            ("from", false, r#"{"type":"string"}"#),
        ],
        r##"{"$ref":"#/components/schemas/SubmitResult"}"##,
    ),
    (
        "job.logs",
        "Read an attempt's log from an offset.",
        &[
            ("job_id", true, r#"{"type":"integer"}"#),
            (
                "activity",
                false,
                r#"{"type":"string","description":"process.activity or chain.process.activity"}"#,
            ),
            ("attempt", false, r#"{"type":"integer"}"#),
            ("offset", false, r#"{"type":"integer"}"#),
            ("max_bytes", false, r#"{"type":"integer"}"#),
        ],
        r##"{"$ref":"#/components/schemas/LogChunk"}"##,
    ),
    (
        "job.follow_logs",
        "Subscription (WebSocket): an attempt's log as it is written; notifications job.log; ends with a close notification.",
        &[
            ("job_id", true, r#"{"type":"integer"}"#),
            ("activity", false, r#"{"type":"string"}"#),
            ("attempt", false, r#"{"type":"integer"}"#),
            ("offset", false, r#"{"type":"integer"}"#),
        ],
        r#"{"type":"string","description":"subscription id"}"#,
    ),
    (
        "job.watch",
        "Subscription (WebSocket): the job after its changes (notifications job.changed), ending with its terminal state.",
        &[("job_id", true, r#"{"type":"integer"}"#)],
        r#"{"type":"string","description":"subscription id"}"#,
    ),
    (
        "store.backup",
        "Subscription (WebSocket), operators only: a consistent copy of the database in order (notifications store.backup_chunk, base64), the last one marked complete; the caller writes the file.",
        &[],
        r#"{"type":"string","description":"subscription id"}"#,
    ),
    (
        "events.subscribe",
        "Subscription (WebSocket): events of jobs, activities and schedules (notifications events.event, see docs/json-contract.md), those after since first (replayed from the database), then live, without gap or duplicate; without since, from now on.",
        &[
            (
                "since",
                false,
                r#"{"type":"integer","description":"the last event id seen"}"#,
            ),
            ("chain", false, r#"{"type":"string"}"#),
            ("tenant", false, r#"{"type":"string"}"#),
            (
                "kinds",
                false,
                r#"{"type":"array","items":{"type":"string"}}"#,
            ),
            (
                "states",
                false,
                r#"{"type":"array","items":{"type":"string"}}"#,
            ),
            (
                "follow",
                false,
                r#"{"type":"boolean","description":"false: close once the events recorded at the start were sent"}"#,
            ),
        ],
        r#"{"type":"string","description":"subscription id"}"#,
    ),
    (
        "notification.list",
        "Notification deliveries, newest first (failed: only those failed or being retried).",
        &[
            ("failed", false, r#"{"type":"boolean"}"#),
            ("limit", false, r#"{"type":"integer"}"#),
        ],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
    (
        "notification.retry",
        "Deliver a notification again now (operators only).",
        &[("id", true, r#"{"type":"integer"}"#)],
        r#"{"type":"object"}"#,
    ),
    (
        "workflow.list",
        "Every chain, loaded or broken, with load errors.",
        &[],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
    (
        "workflow.get",
        "One chain's parameters, processes and activities.",
        &[("name", true, r#"{"type":"string"}"#)],
        r#"{"type":"object"}"#,
    ),
    (
        "tenant.list",
        "Every tenant, loaded or broken.",
        &[],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
    (
        "schedule.list",
        "Every schedule with its next and last fire.",
        &[],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
    (
        "schedule.pause",
        "Stop a schedule from firing until resumed.",
        &[(
            "name",
            true,
            r#"{"type":"string","description":"chain.schedule"}"#,
        )],
        r#"{"type":"object"}"#,
    ),
    (
        "schedule.resume",
        "Let a paused schedule fire again; fires missed while paused are not run.",
        &[(
            "name",
            true,
            r#"{"type":"string","description":"chain.schedule"}"#,
        )],
        r#"{"type":"object"}"#,
    ),
    (
        "schedule.trigger",
        "Fire a schedule now, as of at when given.",
        &[
            (
                "name",
                true,
                r#"{"type":"string","description":"chain.schedule"}"#,
            ),
            (
                "at",
                false,
                r#"{"type":"string","description":"the instant the fire runs as of, read in the schedule's zone; now without it"}"#,
            ),
        ],
        r#"{"type":"object"}"#,
    ),
    (
        "schedule.backfill",
        "Submit one fire per instant of the schedule's rule in [from, to], oldest first, each as of its instant (at most 1000); dry_run lists them.",
        &[
            (
                "name",
                true,
                r#"{"type":"string","description":"chain.schedule"}"#,
            ),
            (
                "from",
                true,
                r#"{"type":"string","description":"first instant of the range, read in the schedule's zone"}"#,
            ),
            (
                "to",
                true,
                r#"{"type":"string","description":"last instant of the range; a date includes that whole day"}"#,
            ),
            ("dry_run", false, r#"{"type":"boolean"}"#),
        ],
        r#"{"type":"object","description":"schedule, fires, jobs, queued, dry_run"}"#,
    ),
    (
        "config.reload",
        "Re-read workflow and tenant files now.",
        &[],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
    (
        "audit.list",
        "The audit trail, newest first.",
        &[
            ("limit", false, r#"{"type":"integer"}"#),
            ("before", false, r#"{"type":"integer"}"#),
        ],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
    (
        "rpc.discover",
        "This document.",
        &[],
        r#"{"type":"object"}"#,
    ),
    (
        "connection.list",
        "Every connection profile, loaded or broken, with the chains using it; fields only for operators, secret values never.",
        &[],
        r#"{"type":"array","items":{"type":"object"}}"#,
    ),
];

/// The named parameters `method` takes, or None for a method this document
/// does not describe. The named-parameter check (`named_params`) reads this
/// same table, so what is described and what is accepted cannot drift.
pub(super) fn param_names(method: &str) -> Option<Vec<&'static str>> {
    METHODS
        .iter()
        .find(|(name, ..)| *name == method)
        .map(|(_, _, params, _)| params.iter().map(|(name, ..)| *name).collect())
}

const COMPONENTS: &str = r#"{
  "DaemonInfo": {"type": "object", "required": ["version", "protocol", "pid", "mode"], "properties": {
    "version": {"type": "string"}, "protocol": {"type": "integer"}, "pid": {"type": "integer"},
    "started_at": {"type": "string", "format": "date-time"}, "uptime_seconds": {"type": "integer"},
    "mode": {"type": "string", "enum": ["system", "user"]}, "max_parallel": {"type": "integer"},
    "paths": {"type": "object"}, "counts": {"type": "object"}, "confinement": {"type": "string"}, "slurm": {"type": "string"}}},
  "SubmitResult": {"type": "object", "required": ["job_id", "state"], "properties": {
    "job_id": {"type": "integer"}, "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"], "description": "queued for a new job; a repeated request_id answers with the first job's state now"}}},
  "Job": {"type": "object", "required": ["id", "target", "chain", "state", "activities"], "properties": {
    "id": {"type": "integer"}, "target": {"type": "string"}, "chain": {"type": "string"},
    "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
    "alerts": {"type": "integer"}, "last_alert": {"type": ["string", "null"]}, "params": {"type": "object"}, "tenant": {"type": ["string", "null"]},
    "submitted_by": {"type": "string"}, "version": {"type": "string"},
    "created_at": {"type": "string", "format": "date-time"},
    "started_at": {"type": ["string", "null"], "format": "date-time"},
    "finished_at": {"type": ["string", "null"], "format": "date-time"},
    "progress": {"type": "number"}, "outputs": {"type": "object"},
    "run_id": {"type": "integer", "description": "the first job of its retry chain"},
    "until": {"type": "string", "description": "the process given with until"},
    "outcome": {"type": "string", "enum": ["succeeded", "failed", "cancelled"]},
    "activities": {"type": "array", "items": {"type": "object", "properties": {
      "path": {"type": "string"},
      "handler": {"type": "string", "enum": ["on_failure", "on_success", "on_cancel", "on_exit"]},
      "undone": {"type": "boolean"},
      "state": {"type": "string", "enum": ["pending", "running", "retry_wait", "succeeded", "failed", "skipped", "cancelled"]},
      "progress": {"type": ["number", "null"]},
      "attempts": {"type": "array", "items": {"type": "object", "properties": {
        "number": {"type": "integer"},
        "state": {"type": "string", "enum": ["running", "succeeded", "failed", "signaled", "timeout", "cancelled", "interrupted", "spawn_error", "oom"]},
        "exit_code": {"type": ["integer", "null"]}, "signal": {"type": ["integer", "null"]},
        "error_id": {"type": ["string", "null"]},
        "error_tail": {"type": "string"}, "error_message": {"type": "string"}}}}}}}}},
  "LogChunk": {"type": "object", "properties": {
    "activity": {"type": "string"}, "attempt": {"type": "integer"}, "offset": {"type": "integer"},
    "next_offset": {"type": "integer"}, "data": {"type": "string"}, "complete": {"type": "boolean"},
    "dropped": {"type": "integer"}}}
}"#;

/// The JSON Schema of one chain's parameters.
pub fn params_schema(chain: &Chain) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for spec in chain.params.values() {
        let mut schema = match spec.kind {
            ParamKind::String => json!({"type": "string"}),
            ParamKind::Int => json!({"type": "integer"}),
            ParamKind::Float => json!({"type": "number"}),
            ParamKind::Bool => json!({"type": "boolean"}),
            ParamKind::Date => json!({"type": "string", "format": "date"}),
            ParamKind::DateTime => json!({"type": "string", "format": "date-time"}),
            ParamKind::Json => json!({}),
        };
        if let Value::Object(map) = &mut schema {
            if let Some(d) = &spec.description {
                map.insert("description".into(), json!(d));
            }
            if let Some(d) = &spec.default {
                map.insert("default".into(), d.clone());
            }
            if let Some(values) = &spec.allowed {
                map.insert("enum".into(), json!(values));
            }
            if let Some(p) = &spec.pattern {
                map.insert("pattern".into(), json!(format!("^(?:{p})$")));
            }
            if let Some(min) = &spec.min {
                map.insert("minimum".into(), min.clone());
            }
            if let Some(max) = &spec.max {
                map.insert("maximum".into(), max.clone());
            }
        }
        if spec.required && spec.default.is_none() {
            required.push(json!(spec.name));
        }
        properties.insert(spec.name.clone(), schema);
    }
    json!({
        "type": "object",
        "title": format!("{} parameters", chain.name),
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub(super) fn handle(server: &RpcServer) -> Value {
    let registry = server.engine.registry.borrow().clone();
    let mut chain_params = Map::new();
    let mut schemas = match parse(COMPONENTS) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for entry in registry.entries.values() {
        if let Some(chain) = &entry.chain {
            let name = format!("params.{}", chain.name);
            schemas.insert(name.clone(), params_schema(chain));
            chain_params.insert(
                chain.name.clone(),
                json!({"$ref": format!("#/components/schemas/{name}")}),
            );
        }
    }
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|(name, summary, params, result)| {
            let mut method = json!({
                "name": name,
                "summary": summary,
                "paramStructure": "by-name",
                "params": params.iter().map(|(p, required, schema)| json!({
                    "name": p,
                    "required": required,
                    "schema": parse(schema),
                })).collect::<Vec<_>>(),
                "result": {"name": "result", "schema": parse(result)},
            });
            if *name == "job.submit" || *name == "job.plan" {
                method["x-chain-params"] = Value::Object(chain_params.clone());
            }
            method
        })
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "HoldFast",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("HoldFast daemon JSON-RPC API, protocol {}", holdfast_api::PROTOCOL_VERSION),
        },
        "methods": methods,
        "components": {
            "schemas": schemas,
            "errors": {
                "NOT_FOUND": {"code": -31001, "message": "not found"},
                "INVALID_PARAMETERS": {"code": -31002, "message": "invalid parameters; data lists each field"},
                "PERMISSION_DENIED": {"code": -31003, "message": "permission denied"},
                "INVALID_STATE": {"code": -31004, "message": "invalid state"},
                "UNAVAILABLE": {"code": -31005, "message": "unavailable"},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_schemas_parse() {
        assert!(parse(COMPONENTS).is_object());
        for (name, _, params, result) in METHODS {
            assert!(parse(result).is_object(), "{name} result");
            for (p, _, schema) in *params {
                assert!(parse(schema).is_object(), "{name}.{p}");
            }
        }
    }
}
