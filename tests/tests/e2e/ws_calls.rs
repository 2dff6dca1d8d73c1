//! Calls over WebSocket. A plain call (one request of a method that
//! answers once) is made by the relay itself, not through its pipe to
//! jsonrpsee (`ws_relay::Direct`); subscriptions, batches and messages the
//! envelope rules rewrite still take the pipe. Both must answer as before
//! and as HTTP does: the connection's caller, the parameter-name check,
//! the ids as sent, on one connection mixing all of them.

use holdfast_tests::TestDaemon;
use holdfast_tests::http::{rpc_call, rpc_raw};
use holdfast_tests::ws::RawWs;
use serde_json::{Value, json};

const SLOW: &str = r#"
[process.p.activity.a]
command = ["sleep", "0.3"]
"#;

/// Read messages until the answer with `id` comes; the subscription
/// notifications read meanwhile are kept in `notes`.
fn answer(ws: &mut RawWs, id: &Value, notes: &mut Vec<Value>) -> Value {
    loop {
        let message = ws.recv_json();
        if message.get("method").is_some() {
            notes.push(message);
        } else if &message["id"] == id {
            return message;
        } else {
            panic!("an answer to another request ({id} expected): {message}");
        }
    }
}

fn call(ws: &mut RawWs, id: Value, method: &str, params: Value, notes: &mut Vec<Value>) -> Value {
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(&request.to_string());
    answer(ws, &id, notes)
}

#[test]
fn plain_calls_subscriptions_and_rewritten_ids_share_one_connection() {
    let daemon = TestDaemon::start(&[("slow.toml", SLOW)]);
    let mut ws = RawWs::connect(daemon.socket());
    let mut notes = Vec::new();

    // The connection's caller submits, as over HTTP.
    let submitted = call(
        &mut ws,
        json!(1),
        "job.submit",
        json!({"target": "slow"}),
        &mut notes,
    );
    let job_id = submitted["result"]["job_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a job id: {submitted}"));
    let over_http = rpc_call(daemon.socket(), "job.get", json!({"job_id": job_id}));
    let got = call(
        &mut ws,
        json!("get"),
        "job.get",
        json!({"job_id": job_id}),
        &mut notes,
    );
    assert_eq!(
        got["result"]["submitted_by"], over_http["result"]["submitted_by"],
        "{got}"
    );
    assert!(
        got["result"]["submitted_by"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u != "unknown"),
        "the caller is the connection's peer: {got}"
    );

    // A subscription on the same connection, through jsonrpsee's.
    let watching = call(
        &mut ws,
        json!("w"),
        "job.watch",
        json!({"job_id": job_id}),
        &mut notes,
    );
    let subscription = watching["result"].clone();
    assert!(!subscription.is_null(), "subscribed: {watching}");

    // Plain calls while it streams, answered with their own ids.
    let info = call(&mut ws, json!(7), "daemon.info", json!({}), &mut notes);
    assert!(info["result"].is_object(), "{info}");
    // A parameter the method does not take is refused, naming it, and
    // nothing is submitted; HTTP answers the same.
    let typo = json!({"target": "slow", "prority": 5});
    let refused = call(&mut ws, json!(8), "job.submit", typo.clone(), &mut notes);
    let refused_http = rpc_call(daemon.socket(), "job.submit", typo);
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(refused["error"], refused_http["error"]);
    // An unknown method and a method given the wrong kind of params.
    let unknown = call(&mut ws, json!(9), "job.sumbit", json!({}), &mut notes);
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let wrong = call(
        &mut ws,
        json!(10),
        "job.get",
        json!({"job_id": "one"}),
        &mut notes,
    );
    assert_eq!(wrong["error"]["code"], -32602, "{wrong}");
    // Ids jsonrpsee cannot hold come back as sent (the envelope rules).
    for id in [json!(-7), json!(1.5), json!("\u{1}odd")] {
        let answered = call(&mut ws, id.clone(), "daemon.info", json!({}), &mut notes);
        assert!(answered["result"].is_object(), "{answered}");
    }
    // jsonrpsee looks for the request within its first 128 bytes; past
    // them HTTP and WebSocket both answer a parse error.
    let padded = format!(
        "{}{}",
        " ".repeat(200),
        json!({"jsonrpc": "2.0", "id": 12, "method": "daemon.info"})
    );
    let padded_http = rpc_raw(daemon.socket(), &padded);
    ws.send(&padded);
    let padded_ws = answer(&mut ws, &Value::Null, &mut notes);
    assert_eq!(padded_ws["error"]["code"], -32700, "{padded_ws}");
    assert_eq!(padded_ws["error"], padded_http["error"]);
    let listed = call(&mut ws, json!(11), "job.list", json!({}), &mut notes);
    assert_eq!(
        listed["result"]["jobs"].as_array().map(Vec::len),
        Some(1),
        "only the first submission made a job: {listed}"
    );

    // The subscription carried on beside all of that until the job ended.
    let ended = |notes: &[Value]| {
        notes.iter().any(|n| {
            n["params"]["subscription"] == subscription
                && n["params"]["result"].to_string().contains("succeeded")
        })
    };
    while !ended(&notes) {
        let message = ws.recv_json();
        assert!(
            message.get("method").is_some(),
            "only notifications are owed: {message}"
        );
        notes.push(message);
    }
}

/// A stop answers the calls under way before it closes a connection:
/// 64 submissions written at once, then SIGTERM. Every job the stopped
/// daemon made was answered, and every answer names a job it made (a
/// client that got no answer would submit again). Before the relay
/// waited for the calls it makes itself, a stop answered none of them
/// while their jobs were made.
#[test]
fn a_stop_answers_every_submission_it_carried_out() {
    const SUBMISSIONS: u64 = 64;
    let mut daemon = TestDaemon::start(&[("slow.toml", SLOW)]);
    let mut ws = RawWs::connect(daemon.socket());
    // One answered first: the connection is relayed before the burst.
    let mut notes = Vec::new();
    call(&mut ws, json!(0), "daemon.info", json!({}), &mut notes);
    for n in 1..=SUBMISSIONS {
        let request = json!({"jsonrpc": "2.0", "id": n, "method": "job.submit",
                             "params": {"target": "slow"}});
        ws.send(&request.to_string());
    }
    // The stop comes once the first of them is answered, with the rest
    // under way.
    let first: Value = serde_json::from_str(&ws.recv()).expect("JSON");
    let status = daemon.stop();
    assert!(status.success(), "the daemon stopped cleanly: {status}");
    let mut answered = std::collections::BTreeSet::new();
    answered.extend(first["result"]["job_id"].as_u64());
    for message in ws.recv_until_closed() {
        let message: Value = serde_json::from_str(&message).expect("JSON");
        if let Some(job) = message["result"]["job_id"].as_u64() {
            answered.insert(job);
        }
    }
    daemon.restart();
    let listed = rpc_call(daemon.socket(), "job.list", json!({"limit": 1000}));
    let made: std::collections::BTreeSet<u64> = listed["result"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("a job list: {listed}"))
        .iter()
        .filter_map(|job| job["id"].as_u64())
        .collect();
    assert!(
        made.len() > 1,
        "the stop came with submissions under way: {made:?}"
    );
    assert_eq!(answered, made, "answered jobs against jobs made");
}
