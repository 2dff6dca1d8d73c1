//! Mail notifications beyond plain SMTP: AUTH with the `[smtp]` user and
//! `password_file` against a real aiosmtpd server that requires it, the
//! failed activities' `error_tail` in the mail text, the local sendmail
//! program when there is no `[smtp]`, and the `[smtp]` settings that are
//! load errors (a password in clear to a server off this host, an
//! unreadable password file). TLS: notify_tls.rs.

use holdfast_tests::{TestDaemon, eventually};

use crate::events::{EVENT_WAIT, FAILS};
use crate::notifications::{Killed, deliveries, lines_of};
use crate::support::activity;

/// An SMTP server that requires AUTH (aiosmtpd, without TLS, on
/// 127.0.0.1), accepting one user and password, appending one JSON line
/// per mail (sender, recipients, the user it authenticated as, the
/// message) to a file.
const AUTH_SERVER: &str = r#"
import json, sys, threading, warnings
warnings.simplefilter("ignore")
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
port, out, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == user.encode() and auth_data.password == password.encode()
    # handled=False: aiosmtpd answers a refusal itself (535); by default it
    # would answer nothing and the client would wait.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "login": session.auth_data.login.decode(),
                                "data": envelope.content.decode()}) + "\n")
        return "250 OK"
controller = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticator,
                        auth_required=True, auth_require_tls=False)
controller.start()
threading.Event().wait()
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A mail rule authenticates with `[smtp]` `user` and the password read
/// from `password_file` at load, to a server that refuses mail without
/// AUTH; the mail names the failed activity, its error id and the tail of
/// its output. The password is in no log line.
#[test]
fn mail_authenticates_and_shows_the_failed_activitys_output() {
    if !crate::notifications::smtp_server_available(
        "mail_authenticates_and_shows_the_failed_activitys_output",
    ) {
        return;
    }
    let port = free_port();
    let password = "pa55-w0rd-not-logged";
    let mut daemon = TestDaemon::prepare(
        Some(&format!(
            r#"
[smtp]
host = "127.0.0.1"
port = {port}
from = "holdfast@test.example"
user = "hf"
password_file = "@DIR@/smtp.password"

[notify.ops]
on = ["job.failed"]
mail = {{ to = ["ops@example.com"] }}
"#
        )),
        &[("nightly.toml", FAILS)],
    );
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("smtp.password"), format!("{password}\n")).expect("password file");
    let received = dir.join("mails");
    let _server = Killed(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(AUTH_SERVER)
            .arg(port.to_string())
            .arg(&received)
            .arg("hf")
            .arg(password)
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
            let listed = deliveries(&daemon, &[]);
            Err(format!("none yet; deliveries: {listed:?}"))
        } else {
            Ok(mails)
        }
    });
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0]["login"], "hf", "the server saw AUTH as hf");
    let data = mails[0]["data"].as_str().expect("the message");
    for fact in [
        format!("Subject: [holdfast] job.failed: job {job_id} (nightly)"),
        "nightly.load.facts".to_string(),
        error_id,
        "ORA-01555: snapshot too old".to_string(),
    ] {
        assert!(data.contains(&fact), "the mail says {fact:?}:\n{data}");
    }
    let log = std::fs::read_to_string(daemon.log_path()).unwrap_or_default();
    assert!(
        !log.contains(password),
        "the password is never logged:\n{log}"
    );
}

/// Without `[smtp]`, a mail rule hands the mail to the sendmail program
/// (`sendmail`, default /usr/sbin/sendmail) with the recipients as
/// arguments and the message on stdin.
#[test]
fn without_smtp_mail_goes_through_sendmail() {
    let mut daemon = TestDaemon::prepare(
        Some(
            r#"
sendmail = "@DIR@/sendmail"

[notify.ops]
on = ["job.failed"]
mail = { to = ["ops@example.com", "dba@example.com"] }
"#,
        ),
        &[("nightly.toml", FAILS)],
    );
    let dir = daemon.dir().to_path_buf();
    let sendmail = dir.join("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}/args.tmp\ncat > {0}/message\nmv {0}/args.tmp {0}/args\n",
            dir.display()
        ),
    )
    .expect("sendmail");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    daemon.launch();
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (args, _) = eventually(EVENT_WAIT, "sendmail to run", || {
        std::fs::read_to_string(dir.join("args"))
    });
    let args: Vec<&str> = args.lines().collect();
    assert!(
        args.ends_with(&["--", "ops@example.com", "dba@example.com"]),
        "{args:?}"
    );
    let message = std::fs::read_to_string(dir.join("message")).expect("the message");
    assert!(
        message.contains(&format!(
            "Subject: [holdfast] job.failed: job {job_id} (nightly)"
        )) && message.contains("ORA-01555"),
        "{message}"
    );
}

/// `[smtp]` settings that cannot work stop the daemon from starting, with
/// the reason: a password sent in clear to a server off this host (no
/// `tls`), an unreadable password file, a user without a password file.
/// (TLS settings: notify_tls.rs.)
#[test]
fn smtp_settings_that_cannot_work_are_load_errors() {
    for (smtp, words) in [
        (
            "host = \"192.0.2.1\"\nuser = \"hf\"\npassword_file = \"@DIR@/pw\"\n",
            &["unencrypted", "192.0.2.1", "tls = \"starttls\""][..],
        ),
        (
            "host = \"127.0.0.1\"\nuser = \"hf\"\npassword_file = \"/nonexistent/pw\"\n",
            &["password_file", "/nonexistent/pw"][..],
        ),
        (
            "host = \"127.0.0.1\"\nuser = \"hf\"\n",
            &["user and password_file go together"][..],
        ),
    ] {
        let mut daemon = TestDaemon::prepare(Some(&format!("[smtp]\n{smtp}")), &[]);
        std::fs::write(daemon.dir().join("pw"), "secret\n").expect("pw");
        let error = daemon
            .try_launch()
            .expect_err("the [smtp] settings are refused");
        let log = daemon.log_tail();
        for word in words {
            assert!(log.contains(word), "{word:?}: {error}\n{log}");
        }
    }
}
