//! JSON-RPC 2.0 to the letter on the daemon socket, over HTTP and over
//! WebSocket: ids that are valid JSON-RPC numbers but not unsigned 64-bit
//! integers are answered with their id, invalid ids and bodies get -32600,
//! and notifications are carried out without an answer.

use std::path::Path;
use std::time::Duration;

use holdfast_api::PROTOCOL_VERSION;
use holdfast_tests::http::{post, rpc_call, rpc_raw};
use holdfast_tests::ws::RawWs;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Value, json};

const TINY: &str = r#"
[chain]
description = "does nothing"

[process.p.activity.a]
command = ["true"]
"#;

/// How many jobs the daemon knows.
fn job_count(socket: &Path) -> usize {
    let answer = rpc_call(socket, "job.list", json!({}));
    answer["result"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("job.list answers jobs: {answer}"))
        .len()
}

/// The raw ids of the messages a client must be answered with their id as
/// written.
const ODD_IDS: [&str; 3] = ["-7", "1.5", "18446744073709551616"];

fn request_with_id(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"daemon.info"}}"#)
}

/// Over HTTP: odd numeric ids are answered with the id as written (they
/// were dropped: the body was `null` and nothing ran); invalid ids, bodies
/// that are not a request and `params` of the wrong type get -32600;
/// notifications (alone and in a batch) run and get 204 with no body; a
/// batch mixing them answers exactly its requests.
#[test]
fn http_follows_the_jsonrpc_envelope_rules() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let socket = daemon.socket();

    for id in ODD_IDS {
        let answer = post(socket, request_with_id(id).as_bytes());
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        assert_eq!(answer.status, 200, "{text}");
        assert!(text.contains(&format!(r#""id":{id}"#)), "id {id}: {text}");
        assert_eq!(
            answer.json()["result"]["protocol"],
            PROTOCOL_VERSION,
            "{text}"
        );
    }

    for id in ["true", "{}", "[]"] {
        let answer = rpc_raw(socket, &request_with_id(id));
        assert_eq!(answer["error"]["code"], -32600, "id {id}: {answer}");
        assert_eq!(answer["id"], Value::Null, "id {id}: {answer}");
    }
    for body in ["1", r#""x""#, "null"] {
        let answer = rpc_raw(socket, body);
        assert_eq!(answer["error"]["code"], -32600, "body {body}: {answer}");
        assert_eq!(answer["id"], Value::Null, "body {body}: {answer}");
    }
    let answer = rpc_raw(
        socket,
        r#"{"jsonrpc":"2.0","id":4,"method":"job.get","params":5}"#,
    );
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(answer["id"], 4, "{answer}");
    let answer = rpc_raw(
        socket,
        r#"{"jsonrpc":"2.0","id":5,"method":"job.get","params":null}"#,
    );
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"].to_string().contains("job_id"),
        "params null names the missing field: {answer}"
    );

    assert_eq!(job_count(socket), 0);
    let submit = r#"{"jsonrpc":"2.0","method":"job.submit","params":{"target":"tiny"}}"#;
    let answer = post(socket, submit.as_bytes());
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(answer.body.is_empty(), "{answer:?}");
    assert_eq!(job_count(socket), 1, "the notification was carried out");

    let answer = post(socket, format!("[{submit},{submit}]").as_bytes());
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(answer.body.is_empty(), "{answer:?}");
    assert_eq!(job_count(socket), 3, "both notifications were carried out");

    let mixed = format!(
        r#"[{submit},{},{},{{"jsonrpc":"2.0","id":true,"method":"daemon.info"}}]"#,
        request_with_id("-7"),
        request_with_id("9")
    );
    let answer = rpc_raw(socket, &mixed);
    let answers = answer
        .as_array()
        .unwrap_or_else(|| panic!("a batch is answered with an array: {answer}"));
    assert_eq!(answers.len(), 3, "no answer to the notification: {answer}");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    for id in [json!(-7), json!(9), Value::Null] {
        assert!(ids.contains(&&id), "id {id} answered: {answer}");
    }
    assert_eq!(job_count(socket), 4, "the batch's notification ran");
}

/// A message that must be answered next, to show that nothing was sent
/// for what came before it.
const PROBE: &str = r#"{"jsonrpc":"2.0","id":"probe","method":"daemon.info"}"#;

/// Over WebSocket, the same rules message by message: before, a message
/// with an odd id was taken for a notification, neither run nor answered,
/// and the client waited forever; notifications were not run.
#[test]
fn websocket_follows_the_jsonrpc_envelope_rules() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let socket = daemon.socket();
    let mut ws = RawWs::connect(socket);

    for id in ODD_IDS {
        ws.send(&request_with_id(id));
        let text = ws.recv();
        assert!(text.contains(&format!(r#""id":{id}"#)), "id {id}: {text}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(answer["result"]["protocol"], PROTOCOL_VERSION, "{text}");
    }
    for id in ["true", "{}", "[]"] {
        let answer = ws.call_raw(&request_with_id(id));
        assert_eq!(answer["error"]["code"], -32600, "id {id}: {answer}");
        assert_eq!(answer["id"], Value::Null, "id {id}: {answer}");
    }
    for body in ["1", r#""x""#, "null"] {
        let answer = ws.call_raw(body);
        assert_eq!(answer["error"]["code"], -32600, "body {body}: {answer}");
        assert_eq!(answer["id"], Value::Null, "body {body}: {answer}");
    }
    let answer = ws.call_raw(r#"{"jsonrpc":"2.0","id":4,"method":"job.get","params":5}"#);
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(answer["id"], 4, "{answer}");
    let answer = ws.call_raw(r#"{"jsonrpc":"2.0","id":5,"method":"job.get","params":null}"#);
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(answer["id"], 5, "{answer}");
    assert!(
        answer["error"].to_string().contains("job_id"),
        "params null names the missing field: {answer}"
    );

    // A message over max_request_bytes (1 MiB): refused, and the
    // connection serves on.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1.5,"method":"daemon.info","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let answer = ws.call_raw(&big);
    assert_eq!(answer["error"]["code"], -32007, "{answer}");
    assert_eq!(ws.call_raw(PROBE)["id"], "probe");

    let submit = r#"{"jsonrpc":"2.0","method":"job.submit","params":{"target":"tiny"}}"#;
    ws.send(submit);
    eventually(
        Duration::from_secs(10),
        "the notification runs",
        || match job_count(socket) {
            1 => Ok(()),
            n => Err(format!("{n} jobs")),
        },
    );
    let answer = ws.call_raw(PROBE);
    assert_eq!(
        answer["id"], "probe",
        "no answer to the notification: {answer}"
    );

    ws.send(&format!("[{submit},{submit}]"));
    eventually(
        Duration::from_secs(10),
        "both notifications run",
        || match job_count(socket) {
            3 => Ok(()),
            n => Err(format!("{n} jobs")),
        },
    );
    let answer = ws.call_raw(PROBE);
    assert_eq!(
        answer["id"], "probe",
        "no answer to a batch of notifications: {answer}"
    );

    let mixed = format!(
        r#"[{submit},{},{},{{"jsonrpc":"2.0","id":true,"method":"daemon.info"}}]"#,
        request_with_id("-7"),
        request_with_id("9")
    );
    let answer = ws.call_raw(&mixed);
    let answers = answer
        .as_array()
        .unwrap_or_else(|| panic!("a batch is answered with an array: {answer}"));
    assert_eq!(answers.len(), 3, "no answer to the notification: {answer}");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    for id in [json!(-7), json!(9), Value::Null] {
        assert!(ids.contains(&&id), "id {id} answered: {answer}");
    }
    assert_eq!(job_count(socket), 4, "the batch's notification ran");
}
