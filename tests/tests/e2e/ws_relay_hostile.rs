//! The WebSocket relay in front of jsonrpsee under a hostile socket
//! member: frame heads that announce more than `max_request_bytes`, a
//! fragmented message over it, a client that writes and never reads, and
//! string ids written like the relay's own tokens.

use std::fs;
use std::time::{Duration, Instant};

use holdfast_tests::TestDaemon;
use holdfast_tests::ws::RawWs;
use serde_json::Value;

const TINY: &str = r#"
[chain]
description = "does nothing"

[process.p.activity.a]
command = ["true"]
"#;

const PROBE: &str = r#"{"jsonrpc":"2.0","id":"probe","method":"daemon.info"}"#;

/// Resident memory of the process in bytes (VmRSS).
fn rss(pid: u32) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("status has VmRSS")
        * 1024
}

/// The head of a masked text frame announcing `len` bytes of payload.
fn frame_head(len: u64) -> Vec<u8> {
    let mut head = vec![0x81u8, 0x80 | 127];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    head
}

/// Before, the relay read client messages up to 64 MiB whatever
/// `max_request_bytes` (1 MiB here) said, and soketto makes room for a
/// frame's whole payload as soon as its head arrives: 14 bytes per
/// connection made the daemon hold 60 MiB of zeroes. Now a head over the
/// limit is refused as it is read, and nothing is held for it.
#[test]
fn a_frame_head_over_the_request_limit_holds_no_memory() {
    const CONNECTIONS: usize = 8;
    const ANNOUNCED: u64 = 60 << 20;
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let pid = daemon.pid().expect("the daemon runs");
    let mut probe = RawWs::connect(daemon.socket());
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
    let baseline = rss(pid);

    let mut hostile: Vec<RawWs> = (0..CONNECTIONS)
        .map(|_| RawWs::connect(daemon.socket()))
        .collect();
    for ws in &mut hostile {
        ws.send_bytes(&frame_head(ANNOUNCED));
    }
    // The daemon serves on meanwhile.
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
    // A bounded watch for growth that must never come (the old relay had
    // taken 480 MiB within milliseconds).
    let limit = 64 << 20;
    let watch_until = Instant::now() + Duration::from_secs(3);
    let mut peak = baseline;
    while Instant::now() < watch_until {
        peak = peak.max(rss(pid));
        assert!(
            peak.saturating_sub(baseline) < limit,
            "{CONNECTIONS} frame heads of {ANNOUNCED} bytes grew the daemon from {baseline} to \
             {peak} bytes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hostile);
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
}

/// Before, jsonrpsee read on whatever the client did and held each answer
/// until the client read it: a client writing 55-byte `rpc.discover`
/// requests and never reading made the daemon hold about 13 KB per request
/// (500 MB for 2 MB written). Now the relay stops reading from a client
/// that owes it 64 answers' reading, so the writer is held back instead;
/// other clients are served meanwhile.
#[test]
fn a_client_that_writes_and_never_reads_is_held_back() {
    const FRAMES: usize = 20_000;
    const PER_WRITE: usize = 100;
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let pid = daemon.pid().expect("the daemon runs");
    let mut probe = RawWs::connect(daemon.socket());
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
    let baseline = rss(pid);

    let message = br#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#;
    let mut frame = vec![0x81u8, 0x80 | message.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(message);
    let chunk = frame.repeat(PER_WRITE);
    let mut hostile = RawWs::connect(daemon.socket());
    let mut written = 0;
    let mut held_back = false;
    while written < FRAMES {
        if !hostile.send_bytes_within(&chunk, Duration::from_secs(2)) {
            held_back = true;
            break;
        }
        written += PER_WRITE;
    }
    let grown = rss(pid).saturating_sub(baseline);
    assert!(
        grown < 64 << 20,
        "{written} requests never read grew the daemon by {grown} bytes"
    );
    assert!(
        held_back,
        "all {written} requests were read from a client that reads nothing"
    );
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
    drop(hostile);
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
}

/// A request whose string id is written like one of the relay's tokens.
fn token_like(n: u64, method: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":"\u0001holdfast-front-{n}","method":"{method}"}}"#)
}

/// Before, a client's string id equal to the token of a message still in
/// flight on its connection took that message's answer slot: the client's
/// answers came back under each other's ids (and the token leaked as an
/// id). Now an id that looks like a token is itself relayed under a token
/// and comes back exactly as written.
#[test]
fn a_string_id_like_a_relay_token_gets_its_own_answer() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let mut ws = RawWs::connect(daemon.socket());
    // The daemon's first relayed message gets token 0; a slow one (a
    // submission, written to SQLite) then a quick one written with its
    // token. Later rounds cover tokens already handed out.
    for round in 0..20u64 {
        let slow = r#"{"jsonrpc":"2.0","id":-1,"method":"job.submit","params":{"target":"tiny"}}"#;
        ws.send(slow);
        for n in 0..=(round * 2 + 1) {
            ws.send(&token_like(n, "daemon.info"));
        }
        let mut answers: Vec<Value> = (0..=(round * 2 + 1) + 1).map(|_| ws.recv_json()).collect();
        answers.sort_by_key(|a| a["id"].to_string());
        for answer in &answers {
            if answer["id"] == -1 {
                assert!(
                    answer["result"].get("protocol").is_none(),
                    "the submission's id carries a daemon.info answer: {answer}"
                );
            } else {
                let id = answer["id"].as_str().unwrap_or_else(|| {
                    panic!("an id neither the submission's nor a string: {answer}")
                });
                assert!(id.starts_with("\u{1}holdfast-front-"), "{answer}");
                assert!(
                    answer["result"].get("protocol").is_some(),
                    "a daemon.info id carries another answer: {answer}"
                );
            }
        }
        let ids: Vec<String> = answers.iter().map(|a| a["id"].to_string()).collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(ids, unique, "every request answered once under its id");
    }
}

/// A masked frame with `opcode` (text 0x1, continuation 0x0) and `fin`.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// A message in two fragments that together pass `max_request_bytes`:
/// soketto then skips the whole message's length from the stream, the
/// fragment it already read included, so that connection is out of step
/// (documented); the daemon and every other connection serve on, and the
/// daemon holds nothing for it.
#[test]
fn a_fragmented_message_over_the_limit_harms_only_its_connection() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let pid = daemon.pid().expect("the daemon runs");
    let mut probe = RawWs::connect(daemon.socket());
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
    let baseline = rss(pid);
    let half = "x".repeat(700 << 10);
    let mut hostile = RawWs::connect(daemon.socket());
    hostile.send_bytes(&frame(
        0x1,
        false,
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"daemon.info","pad":"{half}"#).as_bytes(),
    ));
    hostile.send_bytes(&frame(0x0, true, format!(r#"{half}"}}"#).as_bytes()));
    for _ in 0..3 {
        assert_eq!(probe.call_raw(PROBE)["id"], "probe");
    }
    let grown = rss(pid).saturating_sub(baseline);
    assert!(grown < 32 << 20, "grew by {grown} bytes");
    drop(hostile);
    assert_eq!(probe.call_raw(PROBE)["id"], "probe");
}
