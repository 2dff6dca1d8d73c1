//! Notifications: webhook deliveries retried while the receiver is down
//! and delivered once after a kill -9, signed with HMAC-SHA256; exec hooks
//! with the event on stdin; mails through a real SMTP server process;
//! digests (`coalesce`); `hfctl notifications` and its retry, for operators
//! only; rules that can never work refused at load.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use holdfast_tests::{TestDaemon, eventually};
use serde_json::Value;

use crate::events::{EVENT_WAIT, FAILS};
use crate::support::{activity, shown};

/// A webhook receiver: Python's http.server on 127.0.0.1, appending one
/// JSON line per request (the body, the event id header, whether the
/// HMAC-SHA256 signature matches the secret file) to a file.
const RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, sys
port, out, secret_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
secret = open(secret_path, "rb").read().rstrip()
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Holdfast-Signature", "")
        record = {"signature_ok": hmac.compare_digest(want, got),
                  "event_id": self.headers.get("X-Holdfast-Event-Id"),
                  "body": json.loads(body)}
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
"#;

/// A child process killed when the test ends.
pub(crate) struct Killed(pub(crate) std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Set to `required` where the SMTP server the mail tests run (Python's
/// aiosmtpd) must be present, as CI does.
const SMTP_REQUIRED_ENV: &str = "HOLDFAST_MAIL_TEST";

/// True when Python's aiosmtpd can be imported, which the mail tests'
/// SMTP servers are made of. Without it a test skips, saying so, unless
/// HOLDFAST_MAIL_TEST=required, where it fails.
pub(crate) fn smtp_server_available(test: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var(SMTP_REQUIRED_ENV).as_deref() != Ok("required"),
            "{SMTP_REQUIRED_ENV}=required, but python3 cannot import aiosmtpd"
        );
        eprintln!("{test}: skipped, python3 cannot import aiosmtpd (pip install aiosmtpd)");
    }
    found
}

/// The complete lines the receiver has written so far, parsed. A line
/// still being written (a digest of a thousand events is written in
/// several pieces) has no newline yet and is left for the next read.
pub(crate) fn lines_of(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub(crate) fn deliveries(daemon: &TestDaemon, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["notifications"];
    args.extend_from_slice(extra);
    daemon
        .hfctl_json(&args)
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("`hfctl --json notifications` is a list"))
}

/// A job fails while the webhook receiver is down: the webhook delivery is
/// retried (and listed as such), the exec hook gets the event on its stdin
/// at once. The daemon is killed -9 before the webhook was delivered; the
/// receiver comes up, the daemon starts again, and the receiver gets the
/// event once, signed with HMAC-SHA256 of the secret file, with the event
/// id in the payload and header.
#[test]
fn notifications_are_delivered_at_least_once_across_kill_9_and_a_receiver_that_was_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let settings = format!(
        r#"
[notify.chat]
on = ["job.failed"]
webhook = {{ url = "http://127.0.0.1:{port}/hook", secret_file = "@DIR@/hook.secret" }}
retry_delay = "100ms"
max_retry_delay = "300ms"

[notify.pager]
on = ["job.failed"]
chains = ["night*"]
exec = ["@DIR@/page.sh"]
"#
    );
    let mut daemon = TestDaemon::prepare(Some(&settings), &[("nightly.toml", FAILS)]);
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("hook.secret"), "s3cret\n").expect("secret file");
    let hook = dir.join("page.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {0}/paged; echo >> {0}/paged\n",
            dir.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    daemon.launch();

    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let paged = dir.join("paged");
    let (paged_events, _) = eventually(EVENT_WAIT, "the exec hook to get the event", || {
        let events = lines_of(&paged);
        if events.is_empty() {
            Err("nothing yet".to_string())
        } else {
            Ok(events)
        }
    });
    assert_eq!(paged_events.len(), 1, "{paged_events:#?}");
    assert_eq!(paged_events[0]["kind"], "job.failed");
    assert_eq!(paged_events[0]["job_id"], job_id);
    let (trouble, _) = eventually(EVENT_WAIT, "the webhook to be retried", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.iter().find(|d| d["rule"] == "chat") {
            Some(d) if d["attempts"].as_u64().unwrap_or(0) >= 2 => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(trouble["state"], "pending", "{trouble:#}");
    assert!(
        trouble["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{trouble:#}"
    );

    daemon.kill9();
    let received = dir.join("received");
    let _receiver = Killed(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(RECEIVER)
            .arg(port.to_string())
            .arg(&received)
            .arg(dir.join("hook.secret"))
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the receiver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    daemon.launch();
    let (delivered, _) = eventually(EVENT_WAIT, "the webhook to be delivered", || {
        let listed = deliveries(&daemon, &[]);
        match listed.iter().find(|d| d["rule"] == "chat") {
            Some(d) if d["state"] == "delivered" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(delivered["delivered_at"].is_string(), "{delivered:#}");
    let got = lines_of(&received);
    assert_eq!(got.len(), 1, "delivered once: {got:#?}");
    assert_eq!(got[0]["signature_ok"], true, "{got:#?}");
    assert_eq!(got[0]["body"]["kind"], "job.failed");
    assert_eq!(got[0]["body"]["job_id"], job_id);
    assert_eq!(got[0]["event_id"], got[0]["body"]["id"].to_string());
    assert_eq!(lines_of(&paged).len(), 1, "the exec hook ran once");

    let table = daemon.hfctl(&["notifications"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("chat") && text.contains("delivered"),
        "{text}"
    );
}

/// A hook that fails is tried `max_attempts` times, then listed as failed;
/// `hfctl notifications retry` delivers it again. A rule that can never
/// work (an unreadable secret file) stops the daemon from starting.
#[test]
fn failed_notifications_can_be_retried_and_impossible_rules_are_load_errors() {
    let settings = r#"
[notify.broken]
on = ["job.failed"]
exec = ["/bin/false"]
max_attempts = 2
retry_delay = "50ms"
"#;
    let daemon = TestDaemon::start_with(settings, &[("nightly.toml", FAILS)]);
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (failed, _) = eventually(EVENT_WAIT, "the delivery to fail", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.first() {
            Some(d) if d["state"] == "failed" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(failed["attempts"], 2, "{failed:#}");
    let id = failed["id"].as_u64().expect("an id").to_string();
    let retried = daemon.hfctl(&["notifications", "retry", &id]);
    assert!(retried.status.success(), "{}", shown(&retried));
    eventually(EVENT_WAIT, "the retried delivery to be attempted", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.first() {
            Some(d) if d["state"] == "failed" && d["attempts"] == 3 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    let mut bad = TestDaemon::prepare(
        Some(
            r#"
[notify.chat]
on = ["job.failed"]
webhook = { url = "http://127.0.0.1:9/hook", secret_file = "/nonexistent/hook.secret" }
"#,
        ),
        &[],
    );
    let error = bad
        .try_launch()
        .expect_err("a rule with an unreadable secret file is a load error");
    let log = bad.log_tail();
    assert!(
        log.contains("[notify.chat]") && log.contains("secret_file"),
        "{error}\n{log}"
    );
}

/// Retrying a notification is for operators: a member is refused (exit 7)
/// and the delivery stays as it was; an operator's retry is let through. A
/// member reads events as it reads jobs (every caller on the socket does).
#[test]
fn retrying_notifications_is_for_operators_and_members_read_events() {
    let Some(accounts) = crate::users::accounts_or_skip(
        "retrying_notifications_is_for_operators_and_members_read_events",
    ) else {
        return;
    };
    let settings = r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"

[notify.broken]
on = ["job.failed"]
exec = ["/bin/false"]
max_attempts = 1
"#;
    let daemon =
        holdfast_tests::users::SystemDaemon::start(settings, &[("nightly.toml", FAILS)], &[]);
    let socket = daemon.socket();
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (failed, _) = eventually(EVENT_WAIT, "the delivery to fail", || {
        match deliveries(&daemon, &["--failed"]).first() {
            Some(d) if d["state"] == "failed" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    let id = failed["id"].as_u64().expect("an id").to_string();

    let (member, operator) = (&accounts.member, &accounts.operator);
    let line = crate::users::denied(
        &member.hfctl(socket, &["notifications", "retry", &id]),
        "`hfctl notifications retry` by a member",
    );
    assert!(line.contains("operator"), "{line}");
    assert_eq!(
        deliveries(&daemon, &["--failed"]).first(),
        Some(&failed),
        "a refused retry changes nothing"
    );
    let output = member.hfctl(socket, &["--json", "events", "--kind", "job.failed"]);
    assert!(output.status.success(), "{}", shown(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("\"job_id\":{job_id}")),
        "{}",
        shown(&output)
    );
    let retried = operator.hfctl(socket, &["notifications", "retry", &id]);
    assert!(retried.status.success(), "{}", shown(&retried));
}

/// A rule with `coalesce` sends one digest for the events of its window
/// instead of one notification each: 40 failing jobs, a handful of digests
/// at most (one when the machine keeps up), every event in exactly one.
#[test]
fn coalesce_sends_digests_instead_of_one_notification_per_event() {
    const JOBS: usize = 40;
    let settings = r#"
[notify.digest]
on = ["job.failed"]
exec = ["@DIR@/page.sh"]
coalesce = "3s"
"#;
    let mut daemon = TestDaemon::prepare(Some(settings), &[("nightly.toml", FAILS)]);
    let dir = daemon.dir().to_path_buf();
    let hook = dir.join("page.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {0}/paged; echo >> {0}/paged\n",
            dir.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    daemon.launch();
    let mut jobs = BTreeSet::new();
    for _ in 0..JOBS {
        let answer = holdfast_tests::http::rpc_call(
            daemon.socket(),
            "job.submit",
            serde_json::json!({"target": "nightly"}),
        );
        jobs.insert(
            answer["result"]["job_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("submitted: {answer}")),
        );
    }
    let paged = dir.join("paged");
    let (digests, _) = eventually(Duration::from_secs(60), "every failure in a digest", || {
        let digests = lines_of(&paged);
        let count: u64 = digests.iter().filter_map(|d| d["count"].as_u64()).sum();
        if count as usize >= JOBS {
            Ok(digests)
        } else {
            Err(format!("{count} events in {} digests", digests.len()))
        }
    });
    assert!(
        digests.len() <= 4,
        "{} digests for {JOBS} jobs",
        digests.len()
    );
    let mut seen = BTreeSet::new();
    for digest in &digests {
        assert_eq!(digest["kind"], "digest", "{digest:#}");
        assert_eq!(digest["rule"], "digest", "{digest:#}");
        let events = digest["events"].as_array().expect("events");
        assert_eq!(digest["count"].as_u64(), Some(events.len() as u64));
        for event in events {
            assert_eq!(event["kind"], "job.failed", "{event:#}");
            assert!(
                seen.insert(event["job_id"].as_u64().expect("job id")),
                "each event once: {event:#}"
            );
        }
    }
    assert_eq!(seen, jobs, "every failure was in a digest");
}

/// 1,000 jobs that fail at once, submitted in one JSON-RPC batch, make
/// one digest of a `coalesce` rule that names every one of them, once.
/// (They all fail within ~5 s here; the 15 s window leaves room for a
/// loaded machine.)
#[test]
fn a_thousand_failures_make_one_digest() {
    const JOBS: usize = 1000;
    let settings = r#"
[notify.digest]
on = ["job.failed"]
exec = ["@DIR@/page.sh"]
coalesce = "15s"
"#;
    let failing = "[process.p.activity.a]\ncommand = [\"false\"]\n";
    let mut daemon = TestDaemon::prepare(Some(settings), &[("failing.toml", failing)]);
    let dir = daemon.dir().to_path_buf();
    crate::chain_notifications::write_hook(&dir, "page.sh", &dir.join("paged"), false);
    daemon.launch();
    let batch: Vec<Value> = (0..JOBS)
        .map(|i| {
            serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "job.submit",
                               "params": {"target": "failing"}})
        })
        .collect();
    let answers = holdfast_tests::http::rpc_raw(daemon.socket(), &Value::from(batch).to_string());
    let jobs: BTreeSet<u64> = answers
        .as_array()
        .unwrap_or_else(|| panic!("a batch answer: {answers}"))
        .iter()
        .map(|a| {
            a["result"]["job_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("submitted: {a}"))
        })
        .collect();
    assert_eq!(jobs.len(), JOBS);
    let paged = dir.join("paged");
    let (digests, _) = eventually(Duration::from_secs(90), "the digest", || {
        let digests = lines_of(&paged);
        if digests.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(digests)
        }
    });
    assert_eq!(digests.len(), 1, "one digest: {} of them", digests.len());
    let digest = &digests[0];
    assert_eq!(digest["kind"], "digest");
    assert_eq!(digest["count"].as_u64(), Some(JOBS as u64));
    let named: Vec<u64> = digest["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["job_id"].as_u64().expect("a job id"))
        .collect();
    assert_eq!(named.len(), JOBS, "each job once");
    assert_eq!(named.into_iter().collect::<BTreeSet<u64>>(), jobs);
}

/// An SMTP server: Python's smtpd on 127.0.0.1, appending one JSON line per
/// mail (sender, recipients, the message) to a file.
const SMTP_SERVER: &str = r#"
import asyncore, json, sys, warnings
warnings.simplefilter("ignore")
import smtpd
port, out = int(sys.argv[1]), sys.argv[2]
class Server(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if isinstance(data, bytes):
            data = data.decode()
        with open(out, "a") as f:
            f.write(json.dumps({"from": mailfrom, "to": rcpttos, "data": data}) + "\n")
Server(("127.0.0.1", port), None)
asyncore.loop()
"#;

/// A mail rule sends a readable mail with the facts of the event through
/// a real SMTP server process; a mail rule with neither `[smtp]` nor a
/// sendmail program is a load error.
#[test]
fn mail_rules_send_a_readable_mail_through_the_smtp_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut daemon = TestDaemon::prepare(
        Some(&format!(
            r#"
[smtp]
host = "127.0.0.1"
port = {port}
from = "holdfast@test.example"

[notify.ops]
on = ["job.failed"]
mail = {{ to = ["ops@example.com", "dba@example.com"] }}
"#
        )),
        &[("nightly.toml", FAILS)],
    );
    let received = daemon.dir().join("mails");
    let _server = Killed(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(SMTP_SERVER)
            .arg(port.to_string())
            .arg(&received)
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    daemon.launch();
    let job_id = daemon.submit("nightly", &[]);
    let job = daemon.wait_done(job_id);
    let error_id = activity(&job, "load.facts").attempts[0]
        .error_id
        .clone()
        .expect("an error id");
    let (mails, _) = eventually(EVENT_WAIT, "the mail to arrive", || {
        let mails = lines_of(&received);
        if mails.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(mails)
        }
    });
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(mail["from"], "holdfast@test.example");
    assert_eq!(
        mail["to"],
        serde_json::json!(["ops@example.com", "dba@example.com"])
    );
    let data = mail["data"].as_str().expect("the message");
    for fact in [
        format!("Subject: [holdfast] job.failed: job {job_id} (nightly)"),
        "nightly.load.facts".to_string(),
        error_id,
        format!("hfctl status {job_id}"),
    ] {
        assert!(data.contains(&fact), "the mail says {fact:?}:\n{data}");
    }

    let mut bad = TestDaemon::prepare(
        Some(
            "sendmail = \"/nonexistent/sendmail\"\n[notify.ops]\non = [\"job.failed\"]\n\
             mail = { to = [\"ops@example.com\"] }\n",
        ),
        &[],
    );
    let error = bad
        .try_launch()
        .expect_err("a mail rule without [smtp] is a load error");
    let log = bad.log_tail();
    assert!(
        log.contains("[notify.ops]") && log.contains("[smtp]"),
        "{error}\n{log}"
    );
}
