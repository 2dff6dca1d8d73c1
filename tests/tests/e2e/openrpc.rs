//! The `rpc.discover` document against the real daemon: it is valid
//! OpenRPC (the official meta-schema from `@open-rpc/meta-schema`), every
//! method it lists is called on a test chain (calls over HTTP;
//! subscriptions and unsubscribe calls over a WebSocket read by hand) and
//! each real answer, and each notification with its item (close
//! notifications included), matches the schema the document declares for
//! it; and `@open-rpc/generator` makes a TypeScript client from it.
//!
//! The checks need python3 with `jsonschema`, node, and the npm packages
//! that `scripts/openrpc-tools` installs under `target/openrpc-tools`
//! (or `HOLDFAST_OPENRPC_TOOLS`). Without them the test says why and is
//! skipped, unless HOLDFAST_OPENRPC_TEST=required (CI) makes that a
//! failure.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::http::rpc_call;
use holdfast_tests::ws::RawWs;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Value, json};

const CHAIN: &str = r#"
[params.day]
type = "date"
[params.n]
type = "int"
default = 1

[schedule.nightly]
cron = "0 3 * * *"
params = { day = "2026-11-23" }

[process.p.activity.a]
command = ["echo", "{{ params.day }}"]

[process.load]
after = ["p"]

[process.load.activity.chunk]
foreach = { count = 3, chunk_size = 1 }
shell = "echo item $HF_ITEM_INDEX"
"#;

const SLOW: &str = r#"
[process.p.activity.wait]
command = ["sleep", "60"]
"#;

/// A rule whose every delivery fails, so `notification.retry` has one.
const SETTINGS: &str = r#"
[notify.broken]
on = ["job.succeeded"]
exec = ["/bin/false"]
max_attempts = 1
"#;

/// Where the npm packages are: `HOLDFAST_OPENRPC_TOOLS`, else
/// `target/openrpc-tools` of the workspace.
fn tools_dir() -> PathBuf {
    std::env::var_os("HOLDFAST_OPENRPC_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/openrpc-tools"))
}

/// Why the tools cannot run, if they cannot.
fn missing_tools(tools: &Path) -> Option<String> {
    let python = Command::new("python3")
        .args(["-c", "import jsonschema, referencing"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        return Some("python3 with jsonschema 4.18 or later".into());
    }
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("node".into());
    }
    for package in ["@open-rpc/meta-schema", "@open-rpc/generator"] {
        if !tools.join("node_modules").join(package).is_dir() {
            return Some(format!(
                "{package} under {} (run scripts/openrpc-tools)",
                tools.display()
            ));
        }
    }
    None
}

/// The answer's `result`, or a failure naming the call.
fn result_of(method: &str, answer: Value) -> Value {
    match answer.get("result") {
        Some(result) => result.clone(),
        None => panic!("{method} was refused: {answer}"),
    }
}

/// A WebSocket read by hand (`holdfast_tests::ws::RawWs`), so every
/// message the daemon sends is seen as it is.
struct RawSocket {
    ws: RawWs,
}

impl RawSocket {
    fn open(socket: &Path) -> RawSocket {
        RawSocket {
            ws: RawWs::connect(socket),
        }
    }

    fn send(&mut self, text: &str) {
        self.ws.send(text);
    }

    /// The next text message (pings and pongs are skipped).
    fn receive(&mut self) -> Value {
        self.ws.recv_json()
    }

    /// Call `method` and return its answer (notifications that come first
    /// are not expected: there is no subscription yet on this connection,
    /// or they belong to one whose notifications the caller has read).
    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&request.to_string());
        loop {
            let message = self.receive();
            if message["id"] == id {
                return message;
            }
        }
    }

    /// Every notification of subscription `id` up to and including its
    /// close notification (`params.error`).
    fn notifications_until_closed(&mut self, id: &Value) -> Vec<Value> {
        let mut sent = Vec::new();
        loop {
            let message = self.receive();
            assert_eq!(&message["params"]["subscription"], id, "{message}");
            let closed = message["params"].get("error").is_some();
            sent.push(message);
            if closed {
                return sent;
            }
        }
    }
}

#[test]
fn the_document_is_valid_openrpc_and_every_answer_matches_its_schema() {
    let tools = tools_dir();
    let required = std::env::var("HOLDFAST_OPENRPC_TEST").is_ok_and(|v| v == "required");
    if let Some(missing) = missing_tools(&tools) {
        assert!(
            !required,
            "HOLDFAST_OPENRPC_TEST=required, but {missing} is missing"
        );
        eprintln!("SKIPPED: the OpenRPC checks need {missing}");
        return;
    }

    let daemon = TestDaemon::start_with(SETTINGS, &[("api.toml", CHAIN), ("slow.toml", SLOW)]);
    let socket = daemon.socket();
    let answers: RefCell<Vec<(String, Value)>> = RefCell::new(Vec::new());
    let call = |method: &str, params: Value| -> Value {
        let result = result_of(method, rpc_call(socket, method, params));
        answers
            .borrow_mut()
            .push((method.to_string(), result.clone()));
        result
    };

    let document = call("rpc.discover", json!({}));
    call("daemon.info", json!({}));
    let submitted = call(
        "job.submit",
        json!({"target": "api", "params": {"day": "2026-11-23"}, "request_id": "openrpc-1"}),
    );
    let job_id = submitted["job_id"].as_u64().expect("a job id");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    call("job.get", json!({"job_id": job_id}));
    call("job.list", json!({}));
    call(
        "job.list",
        json!({"state": "succeeded", "chain": "api", "limit": 5}),
    );
    call(
        "job.items",
        json!({"job_id": job_id, "activity": "load.chunk"}),
    );
    call("job.logs", json!({"job_id": job_id, "activity": "p.a"}));
    call(
        "job.plan",
        json!({"target": "api", "params": {"day": "2026-11-24"}}),
    );
    let retried = call("job.retry", json!({"job_id": job_id, "from_start": true}));
    daemon.wait_done(retried["job_id"].as_u64().expect("a job id"));
    let slow = call("job.submit", json!({"target": "slow"}));
    let slow_id = slow["job_id"].as_u64().expect("a job id");
    call("workflow.list", json!({}));
    call("workflow.get", json!({"name": "api"}));
    call("tenant.list", json!({}));
    call("connection.list", json!({}));
    call("schedule.list", json!({}));
    call("schedule.pause", json!({"name": "api.nightly"}));
    call("schedule.resume", json!({"name": "api.nightly"}));
    call("schedule.trigger", json!({"name": "api.nightly"}));
    call(
        "schedule.backfill",
        json!({"name": "api.nightly", "from": "2026-11-01", "to": "2026-11-03", "dry_run": true}),
    );
    call("audit.list", json!({"limit": 20}));
    call("stats.get", json!({}));
    call("stats.get", json!({"target": "api"}));
    call("config.reload", json!({}));
    let (failed, _) = eventually(Duration::from_secs(20), "a failed delivery", || {
        let list = rpc_call(socket, "notification.list", json!({"failed": true}));
        match list["result"][0]["id"].as_u64() {
            Some(id) => Ok(id),
            None => Err(format!("{list}")),
        }
    });
    call("notification.list", json!({}));
    call("notification.retry", json!({"id": failed}));

    // Subscriptions, over a WebSocket read by hand: the subscribe answer
    // and every notification as sent, close notifications included.
    let mut answers = answers.take();
    let mut notifications: Vec<(String, Value)> = Vec::new();
    let subs = [
        ("job.watch", json!({"job_id": job_id})),
        (
            "job.follow_logs",
            json!({"job_id": job_id, "activity": "p.a"}),
        ),
        ("events.subscribe", json!({"since": 0, "follow": false})),
        ("store.backup", json!({})),
    ];
    for (method, params) in subs {
        let mut ws = RawSocket::open(socket);
        let id = result_of(method, ws.call(1, method, params));
        assert!(
            id.is_u64(),
            "{method}: the subscription id is an integer: {id}"
        );
        answers.push((method.to_string(), id.clone()));
        let sent = ws.notifications_until_closed(&id);
        assert!(
            sent.len() >= 2,
            "{method} sent an item and a close: {sent:?}"
        );
        notifications.extend(sent.into_iter().map(|n| (method.to_string(), n)));
    }
    // A live watch ended by its unsubscribe method (true), which then
    // answers false for it; the other unsubscribe methods for ids not open.
    let mut ws = RawSocket::open(socket);
    let id = result_of(
        "job.watch",
        ws.call(1, "job.watch", json!({"job_id": slow_id})),
    );
    // jsonrpsee sends the subscribe answer before it registers the
    // subscription, so an unsubscribe sent at once may find nothing: the
    // first notification comes after the registration.
    let first = ws.receive();
    assert_eq!(first["method"], "job.changed", "{first}");
    notifications.push(("job.watch".to_string(), first));
    for (n, unsubscribe, expect) in [
        (2, "job.unwatch", true),
        (3, "job.unwatch", false),
        (4, "job.unfollow_logs", false),
        (5, "store.backup_cancel", false),
        (6, "events.unsubscribe", false),
    ] {
        let answered = result_of(unsubscribe, ws.call(n, unsubscribe, json!([id])));
        assert_eq!(answered, json!(expect), "{unsubscribe}");
        answers.push((unsubscribe.to_string(), answered));
    }
    let cancelled = result_of(
        "job.cancel",
        rpc_call(socket, "job.cancel", json!({"job_ids": [slow_id, 999_999]})),
    );
    answers.push(("job.cancel".into(), cancelled));

    // Every method of the document was called.
    let called: std::collections::BTreeSet<&str> =
        answers.iter().map(|(m, _)| m.as_str()).collect();
    let not_called: Vec<&str> = document["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .filter(|m| !called.contains(m))
        .collect();
    assert!(not_called.is_empty(), "methods not called: {not_called:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let case = json!({
        "document": document,
        "answers": answers.iter().map(|(m, r)| json!({"method": m, "result": r})).collect::<Vec<_>>(),
        "notifications": notifications.iter().map(|(m, n)| json!({
            "method": m,
            "notification": n["method"],
            "params": n["params"],
        })).collect::<Vec<_>>(),
    });
    let case_path = dir.path().join("case.json");
    std::fs::write(&case_path, case.to_string()).expect("write the case");

    // The official meta-schema, as the npm package ships it, and the JSON
    // Schema meta-schema it refers to.
    let meta = Command::new("node")
        .arg("-e")
        .arg(
            "const dir = process.argv[1]; \
             const jsonschema = require.resolve('@json-schema-tools/meta-schema/schema.json', {paths: [dir]}); \
             process.stdout.write(JSON.stringify({openrpc: require(dir).openrpcDocument, jsonschema: require(jsonschema)}))",
        )
        .arg(tools.join("node_modules/@open-rpc/meta-schema"))
        .output()
        .expect("node runs");
    assert!(
        meta.status.success(),
        "{}",
        String::from_utf8_lossy(&meta.stderr)
    );
    let meta_path = dir.path().join("meta-schema.json");
    std::fs::write(&meta_path, &meta.stdout).expect("write the meta-schema");

    let checked = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("openrpc/validate.py"))
        .arg(&meta_path)
        .arg(&case_path)
        .output()
        .expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success(), "validation failed:\n{said}");
    assert!(said.contains("checked"), "{said}");
    eprintln!("{}", said.trim());

    // A TypeScript client generated from the document.
    let doc_path = dir.path().join("openrpc.json");
    std::fs::write(&doc_path, document.to_string()).expect("write the document");
    let out = dir.path().join("generated");
    let generated = Command::new(tools.join("node_modules/.bin/open-rpc-generator"))
        .current_dir(dir.path())
        .args([
            "generate",
            "-t",
            "client",
            "-l",
            "typescript",
            "-n",
            "holdfast",
            "-d",
        ])
        .arg(&doc_path)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("open-rpc-generator runs");
    assert!(
        generated.status.success(),
        "the generator failed:\n{}{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    let index = out.join("client/typescript/src/index.ts");
    let source =
        std::fs::read_to_string(&index).unwrap_or_else(|e| panic!("no {}: {e}", index.display()));
    for method in ["job.submit", "job.get", "job.list", "job.cancel"] {
        assert!(
            source.contains(method),
            "{method} is not in the generated client"
        );
    }
}
