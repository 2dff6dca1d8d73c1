//! Hostile requests against the real daemon: every method `rpc.discover`
//! lists, called over the real socket with its own parameter names bound to
//! values no client should send (wrong types, huge and negative numbers,
//! path traversal, NUL bytes, deep nesting, megabyte strings), by name and
//! by position, with unknown extra parameters. The fuzz target checks that
//! decoding never panics; this checks what the handlers do with whatever
//! decodes: every answer is one well-formed JSON-RPC response with a known
//! error code, the daemon stays up and logs no panic, and ordinary work
//! goes on afterwards.

use std::collections::{BTreeMap, BTreeSet};

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_raw;
use holdfast_tests::process::is_alive;
use serde_json::{Value, json};

use crate::support::discovered_methods;

const CHAIN: &str = r#"
[params.day]
type = "date"
[params.n]
type = "int"
default = 1

[schedule.nightly]
cron = "0 3 * * *"

[process.p.activity.a]
command = ["echo", "{{ params.day }}"]
"#;

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn hostile_values() -> Vec<Value> {
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-0.5),
        json!(""),
        json!("../../../../etc/passwd"),
        json!("hostile.p.a/../../x"),
        json!("hostile\u{0}nul"),
        json!("\u{202e}gnp.exe"),
        json!("hostile"),
        json!("hostile.p"),
        json!("hostile.p.a"),
        json!("hostile.nightly"),
        json!("nope.nope.nope.nope"),
        json!("2026-02-30"),
        // Under the 1 MiB body cap (beyond it the request is refused whole).
        json!("x".repeat(256 << 10)),
        json!([]),
        json!(["a", 1, null]),
        json!({}),
        json!({"day": "2026-11-23", "n": "not a number", "extra": [1, 2]}),
        json!({"__proto__": {"admin": true}}),
        deep,
    ]
}

#[test]
fn hostile_parameters_get_clean_errors_and_the_daemon_stays_up() {
    let daemon = TestDaemon::start(&[("hostile.toml", CHAIN)]);
    let pid = daemon.pid().expect("the daemon runs");
    let known = daemon.submit("hostile", &["-p", "day=2026-11-23"]);
    daemon.wait_done(known);

    let discovered = rpc_raw(
        daemon.socket(),
        r#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#,
    );
    let methods: BTreeMap<String, BTreeSet<String>> = discovered_methods(&discovered["result"])
        .into_iter()
        // Subscriptions and their unsubscribe calls need a WebSocket;
        // over HTTP they are refused.
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "job.watch"
                    | "job.follow_logs"
                    | "store.backup"
                    | "events.subscribe"
                    | "job.unwatch"
                    | "job.unfollow_logs"
                    | "store.backup_cancel"
                    | "events.unsubscribe"
            )
        })
        .collect();
    assert!(methods.len() >= 15, "{methods:?}");

    let values = hostile_values();
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let mut answered = 0;
    let mut problems = Vec::new();
    for (method, names) in &methods {
        for round in 0..24 {
            let params = match round % 3 {
                // By name, each parameter hostile, plus an unknown one.
                0 | 1 => {
                    let mut object = serde_json::Map::new();
                    for name in names {
                        object.insert(name.clone(), rng.pick(&values).clone());
                    }
                    if round % 3 == 1 {
                        object.insert("unexpected".into(), rng.pick(&values).clone());
                    }
                    Value::Object(object)
                }
                // By position.
                _ => Value::Array(names.iter().map(|_| rng.pick(&values).clone()).collect()),
            };
            let id = answered + 1;
            let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            let answer = rpc_raw(daemon.socket(), &request.to_string());
            answered += 1;
            let well_formed = answer["jsonrpc"] == "2.0"
                && answer["id"] == id
                && (answer.get("result").is_some() != answer.get("error").is_some());
            let code = answer["error"]["code"].as_i64();
            let known_code = code.is_none_or(|c| {
                matches!(c, -32700 | -32600 | -32601 | -32602 | -32603)
                    || (-31005..=-31001).contains(&c)
            });
            if !well_formed || !known_code || code == Some(-32603) {
                let shown: String = request.to_string().chars().take(300).collect();
                problems.push(format!("{method} {shown} -> {answer}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {answered} hostile calls were answered badly:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    assert!(is_alive(pid as i32), "the daemon died under hostile calls");
    let log = std::fs::read_to_string(daemon.log_path()).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the daemon logged a panic:\n{}",
        daemon.log_tail()
    );

    // Ordinary work goes on.
    let after = daemon.submit("hostile", &["-p", "day=2026-11-24"]);
    let job = daemon.wait_done(after);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let listed = daemon.hfctl_json(&["list"]);
    assert!(
        listed.to_string().contains(&format!("\"id\":{known}")),
        "the earlier job is still listed: {listed}"
    );
}
