//! Mail rules with `attach_report = true`: the job's HTML execution report
//! travels as an attachment through a real SMTP server (aiosmtpd) and is
//! read back with Python's `email` package; a digest attaches one report
//! per job it names; a rule without the key still sends plain text; the
//! attached file renders in headless Chromium as `hfctl report`'s does.

use holdfast_tests::{TestDaemon, eventually};
use serde_json::Value;

use crate::events::{EVENT_WAIT, FAILS};
use crate::notifications::{Killed, deliveries, lines_of};
use crate::report_views::{CHROMIUM_ENV, chromium, headless};
use crate::support::{activity, shown};

/// An SMTP server on 127.0.0.1 that parses each mail's MIME structure and
/// appends one JSON line per mail: recipients, subject, content type, and
/// every leaf part with its type, file name, disposition and decoded body.
const MIME_SERVER: &str = r#"
import json, sys, threading, warnings
warnings.simplefilter("ignore")
from email import message_from_bytes, policy
from aiosmtpd.controller import Controller
port, out = int(sys.argv[1]), sys.argv[2]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.content, policy=policy.default)
        parts = [{"type": p.get_content_type(), "filename": p.get_filename(),
                  "disposition": p.get_content_disposition(), "body": p.get_content()}
                 for p in msg.walk() if not p.is_multipart()]
        with open(out, "a") as f:
            f.write(json.dumps({"to": envelope.rcpt_tos, "subject": str(msg["subject"]),
                                "type": msg.get_content_type(), "parts": parts}) + "\n")
        return "250 OK"
controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
threading.Event().wait()
"#;

/// The chain file's own rule (`nightly.digest`): one mail for the failures
/// of 2 seconds, with every job's report.
const DIGEST: &str = r#"
[notify.digest]
on = ["job.failed"]
coalesce = "2s"
mail = { to = ["digest@example.com"], attach_report = true }
"#;

fn to(mail: &Value) -> &str {
    mail["to"][0].as_str().expect("a recipient")
}

fn attachments(mail: &Value) -> Vec<&Value> {
    mail["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter(|p| p["disposition"] == "attachment")
        .collect()
}

/// Two failed jobs of two tenants: the `ops` rule mails each with its
/// report attached (whose recent runs are its tenant's only),
/// the `plain` rule mails each as text only, and the chain file's `digest`
/// rule sends
/// one mail for both with both reports. Each report is the job's: its
/// sections, the failed attempt's error id and output, the daemon as its
/// writer, and every section present in Chromium's DOM of the file.
#[test]
fn mail_rules_attach_the_jobs_html_report() {
    if !crate::notifications::smtp_server_available("mail_rules_attach_the_jobs_html_report") {
        return;
    }
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
mail = {{ to = ["ops@example.com"], attach_report = true }}

[notify.plain]
on = ["job.failed"]
mail = {{ to = ["plain@example.com"] }}
"#
        )),
        &[("nightly.toml", &format!("{FAILS}{DIGEST}"))],
    );
    let received = daemon.dir().join("mails");
    let _server = Killed(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(MIME_SERVER)
            .arg(port.to_string())
            .arg(&received)
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    daemon.write_tenant("north", "[params]\n");
    daemon.write_tenant("south", "[params]\n");
    daemon.launch();
    let chain = daemon.hfctl_json(&["describe", "nightly"]);
    assert!(
        chain["notify"]
            .to_string()
            .contains("with the job's report"),
        "the chain's rule says it attaches: {chain:#}"
    );
    let jobs = [
        daemon.submit("nightly", &["--tenant", "north"]),
        daemon.submit("nightly", &["--tenant", "south"]),
    ];
    let error_ids: Vec<String> = jobs
        .iter()
        .map(|&id| {
            let job = daemon.wait_done(id);
            activity(&job, "load.facts").attempts[0]
                .error_id
                .clone()
                .expect("an error id")
        })
        .collect();
    let (mails, _) = eventually(EVENT_WAIT, "five mails", || {
        let mails = lines_of(&received);
        if mails.len() >= 5 {
            Ok(mails)
        } else {
            let listed = deliveries(&daemon, &[]);
            Err(format!("{} so far; deliveries: {listed:?}", mails.len()))
        }
    });
    assert_eq!(mails.len(), 5, "{mails:#?}");

    for ((job_id, error_id), other) in jobs.iter().zip(&error_ids).zip(jobs.iter().rev()) {
        let name = format!("job-{job_id}-report.html");
        let mail = mails
            .iter()
            .find(|m| {
                to(m) == "ops@example.com"
                    && m["subject"]
                        .as_str()
                        .is_some_and(|s| s.ends_with(&format!("job {job_id} (nightly)")))
            })
            .unwrap_or_else(|| panic!("the ops mail of job {job_id}: {mails:#?}"));
        assert_eq!(mail["type"], "multipart/mixed", "{mail:#}");
        let text = &mail["parts"][0];
        assert_eq!(text["type"], "text/plain", "{mail:#}");
        let body = text["body"].as_str().expect("text");
        assert!(body.contains(error_id.as_str()), "{body}");
        assert!(
            body.contains(&format!(
                "Attached: the execution report of job {job_id} ({name})"
            )),
            "{body}"
        );
        let files = attachments(mail);
        assert_eq!(files.len(), 1, "{mail:#}");
        assert_eq!(files[0]["filename"], name.as_str());
        assert_eq!(files[0]["type"], "text/html");
        let html = files[0]["body"].as_str().expect("the report");
        for fact in [
            format!("<h1>Job {job_id} <span class=\"failed\">failed</span>"),
            "<section id=\"failures\">".to_string(),
            "<section id=\"timeline\">".to_string(),
            error_id.clone(),
            "ORA-01555: snapshot too old".to_string(),
            "Written by holdfastd at".to_string(),
        ] {
            assert!(html.contains(&fact), "the report has {fact:?}:\n{html}");
        }
        // Recent runs are the job's own tenant's: the other tenant's job of
        // the same chain is not in this report.
        assert!(html.contains(&format!("<tr><td>{job_id}</td>")), "{html}");
        assert!(
            !html.contains(&format!("<tr><td>{other}</td>")),
            "another tenant's job {other} in the report of {job_id}:\n{html}"
        );
    }

    let plain: Vec<&Value> = mails
        .iter()
        .filter(|m| to(m) == "plain@example.com")
        .collect();
    assert_eq!(plain.len(), 2, "{mails:#?}");
    for mail in plain {
        assert_eq!(mail["type"], "text/plain", "no attachment asked: {mail:#}");
        assert!(
            !mail["parts"][0]["body"]
                .as_str()
                .unwrap_or_default()
                .contains("Attached:"),
            "{mail:#}"
        );
    }

    let digest = mails
        .iter()
        .find(|m| to(m) == "digest@example.com")
        .unwrap_or_else(|| panic!("the digest: {mails:#?}"));
    assert!(
        digest["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("[holdfast] 2 events")),
        "{digest:#}"
    );
    let names: Vec<&str> = attachments(digest)
        .iter()
        .map(|p| p["filename"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        jobs.iter()
            .map(|id| format!("job-{id}-report.html"))
            .collect::<Vec<_>>(),
        "one report per job of the digest, in order"
    );

    let Some(browser) = chromium() else {
        assert_ne!(
            std::env::var(CHROMIUM_ENV).as_deref(),
            Ok("required"),
            "{CHROMIUM_ENV}=required but no chromium on PATH"
        );
        eprintln!("skipped the rendering: no chromium on PATH (Debian package chromium)");
        return;
    };
    let file = daemon.dir().join("attached.html");
    let html = attachments(digest)[0]["body"].as_str().expect("the report");
    std::fs::write(&file, html).expect("write the attachment");
    let profile = daemon.dir().join("chromium-profile");
    let dom = headless(
        &browser,
        &profile,
        &["--dump-dom", &format!("file://{}", file.display())],
    );
    assert!(dom.status.success(), "{}", shown(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for section in [
        "facts",
        "timeline",
        "activities",
        "outputs",
        "failures",
        "recent",
    ] {
        assert!(
            dom.contains(&format!("id=\"{section}\"")),
            "{section} in the DOM: {dom}"
        );
    }
}
