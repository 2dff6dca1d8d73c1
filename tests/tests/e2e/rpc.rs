//! The JSON-RPC surface: malformed requests get standard errors, misbehaving
//! clients do not stop the daemon from serving others, and application errors
//! carry their codes.

use std::io::Write;
use std::os::unix::net::UnixStream;

use holdfast_api::PROTOCOL_VERSION;
use holdfast_api::rpc::HoldfastClient;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::{post, rpc_call, rpc_raw};
use serde_json::{Value, json};

use crate::support::shown;

const TINY: &str = r#"
[chain]
description = "does nothing"

[process.p.activity.a]
command = ["true"]
"#;

fn assert_serving(daemon: &TestDaemon) {
    let answer = rpc_call(daemon.socket(), "daemon.info", json!({}));
    assert_eq!(
        answer["result"]["protocol"], PROTOCOL_VERSION,
        "daemon.info answers: {answer}"
    );
}

#[tokio::test]
async fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);

    // A client that connects and says nothing, and one that stops mid-request,
    // both held open for the whole test.
    let silent = UnixStream::connect(daemon.socket()).expect("a silent client can connect");
    let mut halfway = UnixStream::connect(daemon.socket()).expect("a slow client can connect");
    halfway
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\"")
        .expect("half a request can be sent");

    let parse_error = rpc_raw(daemon.socket(), r#"{"jsonrpc":"2.0","id":1,"method":"#);
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");

    let unknown = rpc_call(daemon.socket(), "job.explode", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    assert_eq!(unknown["id"], 1, "{unknown}");

    let wrong = rpc_call(daemon.socket(), "job.get", json!({"job_id": "seven"}));
    assert_eq!(wrong["error"]["code"], -32602, "{wrong}");

    let missing = rpc_call(daemon.socket(), "job.get", json!({}));
    assert_eq!(
        missing["error"]["code"], -32602,
        "a missing required param: {missing}"
    );

    let not_an_object = rpc_raw(daemon.socket(), r#"{"jsonrpc":"2.0","id":1}"#);
    assert_eq!(not_an_object["error"]["code"], -32600, "{not_an_object}");

    let batch = rpc_raw(
        daemon.socket(),
        r#"[{"jsonrpc":"2.0","id":1,"method":"daemon.info"},
            {"jsonrpc":"2.0","id":2,"method":"workflow.list"}]"#,
    );
    let answers = batch
        .as_array()
        .unwrap_or_else(|| panic!("a batch is answered with an array: {batch}"));
    assert_eq!(answers.len(), 2, "{batch}");
    let by_id = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer with id {id}: {batch}"))
    };
    assert_eq!(by_id(1)["result"]["protocol"], PROTOCOL_VERSION, "{batch}");
    let chains: Vec<&str> = by_id(2)["result"]
        .as_array()
        .unwrap_or_else(|| panic!("workflow.list answers a list: {batch}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(chains, ["tiny"], "{batch}");

    // A body that is not even UTF-8 JSON.
    let garbage = post(daemon.socket(), b"\xff\xfe\x00garbage");
    assert!(
        garbage.status < 500,
        "garbage gets a client error, not a crash: {garbage:?}"
    );

    // With both misbehaving clients still connected, others are served, over
    // HTTP, over WebSocket and through hfctl.
    assert_serving(&daemon);
    let client = daemon.client().await;
    let info = client
        .daemon_info()
        .await
        .expect("daemon.info over WebSocket");
    assert_eq!(info.protocol, PROTOCOL_VERSION);
    assert_eq!(info.counts.chains, 1, "{info:?}");
    let hfctl_info = daemon.hfctl(&["info"]);
    assert!(hfctl_info.status.success(), "{}", shown(&hfctl_info));
    drop(silent);
    drop(halfway);
    assert_serving(&daemon);
}

#[test]
fn missing_things_are_not_found() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);

    let job = rpc_call(daemon.socket(), "job.get", json!({"job_id": 424242}));
    assert_eq!(job["error"]["code"], -31001, "{job}");
    let status = daemon.hfctl(&["status", "424242"]);
    assert_eq!(
        status.status.code(),
        Some(6),
        "NOT_FOUND exits 6: {}",
        shown(&status)
    );

    let submit = rpc_call(daemon.socket(), "job.submit", json!({"target": "nosuch"}));
    assert_eq!(
        submit["error"]["code"], -31001,
        "an unknown chain: {submit}"
    );
    let hfctl_submit = daemon.hfctl(&["submit", "nosuch"]);
    assert_eq!(
        hfctl_submit.status.code(),
        Some(6),
        "{}",
        shown(&hfctl_submit)
    );

    let describe = daemon.hfctl(&["describe", "nosuch"]);
    assert_eq!(describe.status.code(), Some(6), "{}", shown(&describe));
    let workflow = rpc_call(daemon.socket(), "workflow.get", json!({"name": "nosuch"}));
    assert_eq!(workflow["error"]["code"], -31001, "{workflow}");
}

#[tokio::test]
async fn workflows_list_loaded_and_broken_chains() {
    let broken = "[process.p.activity.a]\ncommand = [\"true\"]\nbogus_key = 1\n";
    let daemon = TestDaemon::start(&[("tiny.toml", TINY), ("broken.toml", broken)]);

    let client = daemon.client().await;
    let list = client.workflow_list().await.expect("workflow.list");
    let tiny = list
        .iter()
        .find(|w| w.name == "tiny")
        .unwrap_or_else(|| panic!("tiny is listed: {list:#?}"));
    assert_eq!(tiny.status, "loaded", "{tiny:#?}");
    assert_eq!(tiny.description.as_deref(), Some("does nothing"));
    let bad = list
        .iter()
        .find(|w| w.name == "broken")
        .unwrap_or_else(|| panic!("a broken file is listed: {list:#?}"));
    assert_eq!(bad.status, "broken", "{bad:#?}");
    let error = bad.error.as_ref().unwrap_or_else(|| panic!("{bad:#?}"));
    assert!(error.file.ends_with("broken.toml"), "{error:?}");
    assert_eq!(
        error.line,
        Some(3),
        "the error points at the unknown key: {error:?}"
    );
    assert!(error.message.contains("bogus_key"), "{error:?}");

    let hfctl_list = daemon.hfctl_json(&["workflows"]);
    let text = hfctl_list.to_string();
    assert!(
        text.contains("tiny") && text.contains("broken"),
        "{hfctl_list}"
    );

    let described: Value = daemon.hfctl_json(&["describe", "tiny"]);
    assert_eq!(described["name"], "tiny", "{described}");
    assert_eq!(
        described["processes"][0]["activities"][0]["path"], "tiny.p.a",
        "{described}"
    );

    let submit = daemon.hfctl(&["submit", "broken"]);
    assert!(
        !submit.status.success(),
        "a broken chain cannot be submitted: {}",
        shown(&submit)
    );
}

#[test]
fn a_socket_group_that_does_not_exist_leaves_the_socket_private() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = TestDaemon::start_with("socket_group = \"holdfast-no-such-group\"\n", &[]);
    let mode = std::fs::metadata(daemon.socket())
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "a socket that cannot be given to its group is not left open to another"
    );
    assert!(
        daemon.log_tail().contains(
            "socket group holdfast-no-such-group does not exist; only the daemon's user can connect"
        ),
        "the fallback is logged:\n{}",
        daemon.log_tail()
    );
    let info = daemon.hfctl(&["info"]);
    assert!(info.status.success(), "the owner still connects");
}
