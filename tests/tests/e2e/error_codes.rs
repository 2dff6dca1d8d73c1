//! The table of error codes in docs/json-contract.md is the whole truth: each
//! documented code is provoked on the real socket, and each code provoked is
//! in the table. PERMISSION_DENIED needs a caller who is neither root nor
//! the daemon's user, and UNAVAILABLE a read-only state directory: both need
//! root (skipped without, unless HOLDFAST_USERS_TEST=required).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use holdfast_tests::TestDaemon;
use holdfast_tests::http::{post, post_with, rpc_call, rpc_raw};
use holdfast_tests::users::SystemDaemon;
use holdfast_tests::ws::RawWs;
use serde_json::{Value, json};

use crate::faults::{Tmpfs, daemon_on};
use crate::users::{accounts_or_skip, denied};

/// A chain that succeeds at once, one that runs until cancelled, and one
/// whose log is 12 MB of control characters (each six bytes in JSON).
const TINY: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;
const SLEEPER: &str = r#"
[process.p.activity.sleep]
command = ["sleep", "600"]
"#;
const NOISE: &str = r#"
[process.p.activity.noise]
shell = "head -c 12000000 /dev/zero | tr '\\0' '\\1'"
"#;

/// The codes of the table under "## Errors" in docs/json-contract.md.
fn documented_codes() -> BTreeSet<i64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json-contract.md");
    let text = std::fs::read_to_string(&path).expect("docs/json-contract.md can be read");
    let errors = text
        .split("\n## Errors\n")
        .nth(1)
        .expect("json-contract.md has an Errors section");
    let section = errors.split("\n## ").next().unwrap_or(errors);
    let codes: BTreeSet<i64> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(" |").next())
        .filter_map(|code| code.trim().parse().ok())
        .collect();
    assert!(codes.len() >= 10, "the table was read: {codes:?}");
    codes
}

/// The error code of an answer; panics with the answer when it has none.
fn code_of(answer: &Value, what: &str) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what} is answered with an error: {answer}"))
}

/// Codes seen, with what provoked each.
#[derive(Default)]
struct Provoked(BTreeMap<i64, String>);

impl Provoked {
    fn saw(&mut self, code: i64, what: &str) {
        self.0.entry(code).or_insert_with(|| what.to_string());
    }

    fn expect(&mut self, answer: &Value, expected: i64, what: &str) {
        let code = code_of(answer, what);
        assert_eq!(code, expected, "{what}: {answer}");
        self.saw(code, what);
    }
}

/// Every code a plain caller (root or the daemon's user) can meet.
fn provoke_as_owner(provoked: &mut Provoked) {
    let daemon = TestDaemon::start_with(
        "log_max_bytes = \"32M\"\n",
        &[
            ("tiny.toml", TINY),
            ("sleeper.toml", SLEEPER),
            ("noise.toml", NOISE),
        ],
    );
    let socket = daemon.socket();

    provoked.expect(&rpc_raw(socket, "{"), -32700, "a body that is not JSON");
    provoked.expect(&rpc_raw(socket, "1"), -32600, "a bare number as body");
    provoked.expect(
        &rpc_call(socket, "no.such", json!({})),
        -32601,
        "an unknown method",
    );
    provoked.expect(
        &rpc_call(socket, "job.get", json!({})),
        -32602,
        "job.get without job_id",
    );
    let answer = rpc_call(socket, "job.watch", json!({"job_id": 1}));
    provoked.expect(&answer, -32603, "a subscription over HTTP");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("WebSocket"), "says what to do: {answer}");

    let other = (holdfast_api::PROTOCOL_VERSION + 1).to_string();
    let refused = post_with(
        socket,
        br#"{"jsonrpc":"2.0","id":1,"method":"daemon.info"}"#,
        &[("HoldFast-Protocol", &other)],
    );
    assert_eq!(refused.status, 412, "{refused:?}");
    provoked.expect(&refused.json(), -31006, "a call of another protocol");

    let too_big = post(socket, &vec![b' '; (1 << 20) + 1]);
    assert_eq!(too_big.status, 413, "{too_big:?}");
    provoked.expect(&too_big.json(), -32007, "a body over max_request_bytes");

    provoked.expect(
        &rpc_call(socket, "job.get", json!({"job_id": 999_999})),
        -31001,
        "job.get of a job that does not exist",
    );
    provoked.expect(
        &rpc_call(
            socket,
            "job.submit",
            json!({"target": "tiny", "params": {"nope": 1}}),
        ),
        -31002,
        "a submission with an undeclared parameter",
    );
    let sleeper = daemon.submit("sleeper", &[]);
    daemon.wait_for(sleeper, "the sleeper runs", |job| {
        job.state == holdfast_api::JobState::Running
    });
    provoked.expect(
        &rpc_call(socket, "job.retry", json!({"job_id": sleeper})),
        -31004,
        "job.retry of a running job",
    );
    let cancelled = daemon.hfctl(&["cancel", &sleeper.to_string()]);
    assert!(cancelled.status.success(), "{cancelled:?}");

    // 256 subscriptions on one WebSocket connection, then one more.
    let mut ws = RawWs::connect(socket);
    let subscriptions = 257;
    for id in 1..=subscriptions {
        ws.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": "events.subscribe", "params": {}})
                .to_string(),
        );
    }
    let mut answers = BTreeMap::new();
    while answers.len() < subscriptions {
        let message = ws.recv_json();
        if let Some(id) = message["id"].as_u64() {
            answers.insert(id, message);
        }
    }
    let refused: Vec<&Value> = answers
        .values()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert_eq!(refused.len(), 1, "one subscription over 256: {refused:?}");
    provoked.expect(refused[0], -32006, "a 257th subscription on a connection");

    // Answers over 64 MiB: one job.logs, and a batch of two.
    let noise = daemon.submit("noise", &[]);
    let job = daemon.wait_done(noise);
    assert_eq!(job.state, holdfast_api::JobState::Succeeded, "{job:?}");
    let logs = |max_bytes: u64, id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "job.logs",
               "params": {"job_id": noise, "activity": "p.noise", "max_bytes": max_bytes}})
    };
    provoked.expect(
        &rpc_raw(socket, &logs(16 << 20, 1).to_string()),
        -32008,
        "job.logs answering 72 MB",
    );
    let batch = json!([logs(6_000_000, 1), logs(6_000_000, 2)]);
    provoked.expect(
        &rpc_raw(socket, &batch.to_string()),
        -32011,
        "a batch of two job.logs answering 36 MB each",
    );
}

/// PERMISSION_DENIED: an operator-only method called by a member of the
/// socket's group, through hfctl, whose exit code 7 is given for -31003
/// alone (and for a socket it may not open, which `denied` rules out).
fn provoke_permission_denied(provoked: &mut Provoked) {
    let Some(accounts) = accounts_or_skip("PERMISSION_DENIED in the error table") else {
        return;
    };
    let daemon = SystemDaemon::start(
        "socket_group = \"hft-sock\"\noperator_groups = [\"hft-ops\"]\n",
        &[("tiny.toml", TINY)],
        &[],
    );
    let line = denied(
        &accounts.member.hfctl(daemon.socket(), &["reload"]),
        "`hfctl reload` by a member",
    );
    provoked.saw(-31003, &format!("config.reload by a member: {line}"));
}

/// UNAVAILABLE: a submission while the state directory is read-only.
fn provoke_unavailable(provoked: &mut Provoked) {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        assert!(
            !holdfast_tests::users::required(),
            "UNAVAILABLE needs a tmpfs ({}=required)",
            holdfast_tests::users::REQUIRED_ENV
        );
        return;
    };
    let mut daemon = daemon_on(&tmpfs);
    let status = daemon.stop();
    assert!(status.success(), "the daemon stops cleanly: {status}");
    let remounted = tmpfs.remount("ro");
    assert!(remounted.status.success(), "remount ro: {remounted:?}");
    daemon.launch();
    provoked.expect(
        &rpc_call(daemon.socket(), "job.submit", json!({"target": "quick"})),
        -31005,
        "a submission on a read-only state directory",
    );
    // Writable again before the fixtures are dropped.
    let _ = daemon.stop();
    let _ = tmpfs.remount("rw");
}

#[test]
fn every_documented_error_code_is_provoked_and_no_other() {
    let documented = documented_codes();
    let mut provoked = Provoked::default();
    provoke_as_owner(&mut provoked);
    provoke_permission_denied(&mut provoked);
    provoke_unavailable(&mut provoked);

    let seen: BTreeSet<i64> = provoked.0.keys().copied().collect();
    let undocumented: Vec<(&i64, &String)> = provoked
        .0
        .iter()
        .filter(|(code, _)| !documented.contains(code))
        .collect();
    assert!(
        undocumented.is_empty(),
        "codes a client received that the table lacks: {undocumented:?}"
    );
    let mut unprovoked: Vec<i64> = documented.difference(&seen).copied().collect();
    if !nix::unistd::geteuid().is_root() {
        // Without root, neither a second caller nor a read-only mount.
        unprovoked.retain(|code| ![-31003, -31005].contains(code));
    }
    assert!(
        unprovoked.is_empty(),
        "documented codes no provocation produced: {unprovoked:?}"
    );
}
