//! One-shot calls: hfctl's plain HTTP `POST`s with the protocol check folded
//! into the same exchange. The daemon refuses a request whose
//! `HoldFast-Protocol` header names another protocol before carrying it out,
//! names its own in every HTTP answer, and hfctl stops with exit code 9 on
//! a refusal, sending nothing else. A daemon of another protocol is played
//! by a peer on a socket of its own that gives one fixed answer, since only
//! one daemon (this protocol's) is built.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_api::PROTOCOL_VERSION;
use holdfast_tests::TestDaemon;
use holdfast_tests::command::{hfctl_command, run_with_deadline};
use holdfast_tests::http::{post_with, rpc_call};
use serde_json::json;

const TINY: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

fn submit_body() -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 7, "method": "job.submit", "params": {"target": "tiny"}})
        .to_string()
        .into_bytes()
}

fn job_count(socket: &Path) -> usize {
    let list = rpc_call(socket, "job.list", json!({}));
    list["result"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("a job list: {list}"))
        .len()
}

/// Proves a submission sent with another protocol number is answered 412
/// with -31006 and the daemon's number (in the body and the header), and
/// creates no job; a header that is not a number is answered 400; our own
/// number, or no header, is carried out and the answer names the protocol.
#[test]
fn a_call_of_another_protocol_is_refused_before_it_runs() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let socket = daemon.socket();
    let ours = PROTOCOL_VERSION.to_string();
    let other = (PROTOCOL_VERSION + 1).to_string();

    let refused = post_with(socket, &submit_body(), &[("HoldFast-Protocol", &other)]);
    assert_eq!(refused.status, 412, "{refused:?}");
    assert_eq!(refused.header("holdfast-protocol"), Some(ours.as_str()));
    let answer = refused.json();
    assert_eq!(answer["error"]["code"], -31006, "{answer}");
    assert_eq!(answer["error"]["data"]["protocol"], PROTOCOL_VERSION);
    assert_eq!(job_count(socket), 0, "the refused submission left no job");

    let garbage = post_with(socket, &submit_body(), &[("HoldFast-Protocol", "two")]);
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert_eq!(garbage.json()["error"]["code"], -32600);
    assert_eq!(job_count(socket), 0, "nor did the unreadable one");

    let accepted = post_with(socket, &submit_body(), &[("HoldFast-Protocol", &ours)]);
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(accepted.header("holdfast-protocol"), Some(ours.as_str()));
    assert_eq!(accepted.json()["id"], 7);
    assert!(accepted.json()["result"]["job_id"].is_u64(), "{accepted:?}");

    let plain = post_with(socket, &submit_body(), &[]);
    assert_eq!(plain.header("holdfast-protocol"), Some(ours.as_str()));
    assert_eq!(job_count(socket), 2);
}

/// A socket whose peer answers every request with `answers` in turn (the
/// last one repeated) and keeps what it was sent.
struct FixedPeer {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    received: Arc<Mutex<Vec<String>>>,
}

impl FixedPeer {
    fn start(answers: Vec<String>) -> FixedPeer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("peer.sock");
        let listener = UnixListener::bind(&socket).expect("the peer binds");
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut turn = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                // Each request on the connection, until the client closes it.
                loop {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let complete = loop {
                        if let Some(text) = complete_request(&request) {
                            break Some(text);
                        }
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    };
                    let Some(text) = complete else { break };
                    seen.lock().expect("the list").push(text);
                    let answer = &answers[turn.min(answers.len() - 1)];
                    turn += 1;
                    if stream.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        FixedPeer {
            _dir: dir,
            socket,
            received,
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("the list").clone()
    }
}

/// The request text once its head and `Content-Length` body are all there.
fn complete_request(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| text.into_owned())
}

fn answer(status: &str, protocol: Option<u32>, body: &str) -> String {
    let header = protocol.map_or_else(String::new, |n| format!("HoldFast-Protocol: {n}\r\n"));
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{header}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Proves hfctl sends its protocol number with its one call, as a plain
/// POST (no WebSocket upgrade, no `daemon.info` first), and that a refusal
/// naming another protocol ends it with exit code 9 and the daemon's
/// number, after that one request.
#[test]
fn hfctl_stops_with_code_9_on_a_refusal_and_sends_nothing_else() {
    let other = PROTOCOL_VERSION + 7;
    let peer = FixedPeer::start(vec![answer(
        "412 Precondition Failed",
        Some(other),
        r#"{"jsonrpc":"2.0","error":{"code":-31006,"message":"another protocol"},"id":null}"#,
    )]);
    let mut cmd = hfctl_command(&peer.socket);
    cmd.args(["submit", "tiny"]);
    let out = run_with_deadline(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "speaks protocol {PROTOCOL_VERSION} but the daemon at {} speaks {other}",
            peer.socket.display()
        )),
        "{stderr}"
    );
    let received = peer.received();
    assert_eq!(
        received.len(),
        1,
        "one request and nothing more: {received:?}"
    );
    let request = &received[0];
    assert!(request.starts_with("POST / HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!("HoldFast-Protocol: {PROTOCOL_VERSION}\r\n")),
        "{request}"
    );
    assert!(
        !request.to_ascii_lowercase().contains("upgrade"),
        "{request}"
    );
    assert!(request.contains(r#""method":"job.submit""#), "{request}");
}

/// Proves an answer without the protocol header (a daemon from before it,
/// which does not check) is not believed until `daemon.info` names our
/// protocol: another one ends hfctl with exit code 9.
#[test]
fn an_answer_without_the_header_is_checked_with_daemon_info() {
    let other = PROTOCOL_VERSION + 1;
    let info = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"protocol":{other}}}}}"#);
    let peer = FixedPeer::start(vec![
        answer(
            "200 OK",
            None,
            r#"{"jsonrpc":"2.0","id":1,"result":{"job_id":1,"state":"queued"}}"#,
        ),
        answer("200 OK", None, &info),
    ]);
    let mut cmd = hfctl_command(&peer.socket);
    cmd.args(["submit", "tiny"]);
    let out = run_with_deadline(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(stderr.contains(&format!("speaks {other}")), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing printed as a result");
    let received = peer.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(
        received[1].contains(r#""method":"daemon.info""#),
        "{received:?}"
    );
}
