//! Notifications over TLS, against real servers with a certificate of a
//! CA each test makes with openssl: mail through aiosmtpd with STARTTLS
//! required (the older `starttls = true`) and with implicit TLS, both
//! with AUTH and the CA given as `[smtp]` `ca_file`; a login the server
//! refuses, retried then failed with the server's reply and never the
//! password; https webhooks to a Python receiver, delivered when the
//! rule's `ca_file` trusts its certificate, refused when nothing does.

use std::path::{Path, PathBuf};
use std::process::Command;

use holdfast_tests::{TestDaemon, eventually};
use serde_json::Value;

use crate::events::{EVENT_WAIT, FAILS};
use crate::notifications::{Killed, deliveries, lines_of};
use crate::support::shown;

/// An SMTP server (aiosmtpd on 127.0.0.1) with TLS from `cert` and `key`:
/// `starttls` requires STARTTLS before anything else, `implicit` speaks
/// TLS from the first byte. It requires AUTH as one user and password and
/// appends one JSON line per mail (the user it authenticated as, whether
/// the connection was TLS, the message) to a file.
const TLS_SMTP_SERVER: &str = r#"
import json, ssl, sys, threading, warnings
warnings.simplefilter("ignore")
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
mode, port, out, user, password, cert, key = sys.argv[1], int(sys.argv[2]), *sys.argv[3:8]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == user.encode() and auth_data.password == password.encode()
    # handled=False: aiosmtpd answers a refusal itself (535).
    return AuthResult(success=ok, handled=False, auth_data=auth_data)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({"to": envelope.rcpt_tos,
                                "login": session.auth_data.login.decode(),
                                "tls": server.transport.get_extra_info("ssl_object") is not None,
                                "data": envelope.content.decode()}) + "\n")
        return "250 OK"
options = dict(hostname="127.0.0.1", port=port, authenticator=authenticator, auth_required=True)
if mode == "starttls":
    options.update(tls_context=context, require_starttls=True)
else:
    # The whole connection is TLS; aiosmtpd's own check knows only STARTTLS.
    options.update(ssl_context=context, auth_require_tls=False)
Controller(Handler(), **options).start()
threading.Event().wait()
"#;

/// An https webhook receiver: Python's http.server behind TLS from `cert`
/// and `key`, appending one JSON line per request (the body, whether the
/// HMAC-SHA256 signature matches, the SNI name the client sent).
const HTTPS_RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, ssl, sys
port, out, secret_path, cert, key = int(sys.argv[1]), *sys.argv[2:6]
secret = open(secret_path, "rb").read().rstrip()
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
# One connection at a time: the last handshake's name is this request's.
sni = [None]
def remember(sock, name, ctx):
    sni[0] = name
context.sni_callback = remember
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Holdfast-Signature", "")
        record = {"signature_ok": hmac.compare_digest(want, got), "sni": sni[0],
                  "path": self.path, "body": json.loads(body)}
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Hook)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A CA (`ca.pem`) and a server certificate it signed (`server.pem`,
/// `server.key`) for `localhost` and 127.0.0.1, made with openssl in `dir`.
/// (Settings name the CA as `@DIR@/ca.pem`.)
struct Certificates {
    cert: PathBuf,
    key: PathBuf,
}

fn certificates(dir: &Path) -> Certificates {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (CI installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", shown(&out));
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        &[
            &["req", "-x509", "-new", "-nodes", "-days", "2"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=HoldFast test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-x509", "-new", "-nodes", "-days", "2"][..],
            &key,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.pem",
                "-subj",
                "/CN=localhost",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ],
        ]
        .concat(),
    );
    Certificates {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Start the TLS SMTP server in `mode` accepting `user`/`password`, and
/// wait until it listens.
fn smtp_server(
    mode: &str,
    port: u16,
    received: &Path,
    password: &str,
    certs: &Certificates,
) -> Killed {
    let server = Killed(
        Command::new("python3")
            .arg("-c")
            .arg(TLS_SMTP_SERVER)
            .arg(mode)
            .arg(port.to_string())
            .arg(received)
            .arg("hf")
            .arg(password)
            .arg(&certs.cert)
            .arg(&certs.key)
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    server
}

/// Submit the failing chain and wait for the first mail to arrive.
fn one_mail(daemon: &TestDaemon, received: &Path) -> Value {
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (mails, _) = eventually(EVENT_WAIT, "the mail to arrive", || {
        let mails = lines_of(received);
        if mails.is_empty() {
            Err(format!(
                "none yet; deliveries: {:?}",
                deliveries(daemon, &[])
            ))
        } else {
            Ok(mails)
        }
    });
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let data = mails[0]["data"].as_str().expect("the message");
    assert!(
        data.contains(&format!(
            "Subject: [holdfast] job.failed: job {job_id} (nightly)"
        )),
        "{data}"
    );
    mails[0].clone()
}

/// `starttls = true` (the older key, still read) sends through a server
/// that requires STARTTLS, verified against `ca_file`, and authenticates
/// over the TLS connection; `tls = "implicit"` sends through a server that
/// speaks TLS from the first byte.
#[test]
fn mail_goes_over_starttls_and_implicit_tls_with_auth() {
    if !crate::notifications::smtp_server_available(
        "mail_goes_over_starttls_and_implicit_tls_with_auth",
    ) {
        return;
    }
    for (mode, keys) in [
        ("starttls", "starttls = true"),
        ("implicit", "tls = \"implicit\""),
    ] {
        let port = free_port();
        let password = "pa55-over-tls";
        let mut daemon = TestDaemon::prepare(
            Some(&format!(
                r#"
[smtp]
host = "127.0.0.1"
port = {port}
{keys}
ca_file = "@DIR@/ca.pem"
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
        let certs = certificates(&dir);
        std::fs::write(dir.join("smtp.password"), format!("{password}\n")).expect("password");
        let received = dir.join("mails");
        let _server = smtp_server(mode, port, &received, password, &certs);
        daemon.launch();
        let mail = one_mail(&daemon, &received);
        assert_eq!(mail["login"], "hf", "{mode}: AUTH as hf");
        assert_eq!(mail["tls"], true, "{mode}: the mail came over TLS");
        let rule = daemon.hfctl(&["notifications"]);
        assert!(rule.status.success(), "{}", shown(&rule));
        let log = std::fs::read_to_string(daemon.log_path()).unwrap_or_default();
        assert!(
            !log.contains(password),
            "{mode}: the password is in the log"
        );
    }
}

/// The server refuses the login: the delivery is retried, then failed,
/// with the server's reply (535) as its last error in `hfctl
/// notifications --failed`; the password is in neither the error, the
/// daemon's log nor any answer.
#[test]
fn a_refused_smtp_login_fails_with_the_servers_reply_and_never_the_password() {
    if !crate::notifications::smtp_server_available(
        "a_refused_smtp_login_fails_with_the_servers_reply_and_never_the_password",
    ) {
        return;
    }
    let port = free_port();
    let wrong = "wr0ng-pa55-never-shown";
    let mut daemon = TestDaemon::prepare(
        Some(&format!(
            r#"
[smtp]
host = "127.0.0.1"
port = {port}
tls = "starttls"
ca_file = "@DIR@/ca.pem"
user = "hf"
password_file = "@DIR@/smtp.password"

[notify.ops]
on = ["job.failed"]
mail = {{ to = ["ops@example.com"] }}
max_attempts = 2
retry_delay = "50ms"
"#
        )),
        &[("nightly.toml", FAILS)],
    );
    let dir = daemon.dir().to_path_buf();
    let certs = certificates(&dir);
    std::fs::write(dir.join("smtp.password"), format!("{wrong}\n")).expect("password");
    let received = dir.join("mails");
    let _server = smtp_server("starttls", port, &received, "the-right-one", &certs);
    daemon.launch();
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (failed, _) = eventually(EVENT_WAIT, "the delivery to fail", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.iter().find(|d| d["rule"] == "ops") {
            Some(d) if d["state"] == "failed" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(failed["attempts"], 2, "retried once: {failed:#}");
    let error = failed["last_error"].as_str().expect("a last error");
    assert!(
        error.contains("535")
            && error.contains("Authentication credentials invalid")
            && error.contains(&format!("127.0.0.1:{port}")),
        "the server's reply: {error}"
    );
    assert!(lines_of(&received).is_empty(), "no mail went through");
    let table = daemon.hfctl(&["notifications", "--failed"]);
    let json = daemon.hfctl(&["--json", "notifications", "--failed"]);
    let rules = daemon.hfctl(&["--json", "describe", "nightly"]);
    let log = std::fs::read_to_string(daemon.log_path()).unwrap_or_default();
    assert!(log.contains("535"), "the journal has the failure:\n{log}");
    for (what, text) in [
        ("the table", shown(&table)),
        ("the JSON answer", shown(&json)),
        ("describe", shown(&rules)),
        ("the log", log),
    ] {
        assert!(!text.contains(wrong), "{what} shows the password:\n{text}");
    }
    assert!(shown(&table).contains("535"), "{}", shown(&table));
}

/// Two https rules to one receiver: the one whose `ca_file` holds the CA
/// is delivered, signed, with SNI `localhost`; the one that trusts only
/// the system's certificates is refused at the handshake, with a last
/// error that says so, and the receiver never sees its request. A chain
/// file's rule with `ca_file` is delivered too.
#[test]
fn https_webhooks_are_delivered_only_to_a_trusted_receiver() {
    let port = free_port();
    let chain = format!(
        "{FAILS}\n[notify.hook]\non = [\"job.failed\"]\n\
         webhook = {{ url = \"https://localhost:{port}/chain\", ca_file = \"@DIR@/ca.pem\" }}\n"
    );
    let mut daemon = TestDaemon::prepare(
        Some(&format!(
            r#"
[notify.trusted]
on = ["job.failed"]
webhook = {{ url = "https://localhost:{port}/hook", secret_file = "@DIR@/hook.secret", ca_file = "@DIR@/ca.pem" }}

[notify.untrusted]
on = ["job.failed"]
webhook = {{ url = "https://localhost:{port}/hook", secret_file = "@DIR@/hook.secret" }}
max_attempts = 1
"#
        )),
        &[("nightly.toml", &chain)],
    );
    let dir = daemon.dir().to_path_buf();
    let certs = certificates(&dir);
    std::fs::write(dir.join("hook.secret"), "s3cret\n").expect("secret");
    let received = dir.join("received");
    let _receiver = Killed(
        Command::new("python3")
            .arg("-c")
            .arg(HTTPS_RECEIVER)
            .arg(port.to_string())
            .arg(&received)
            .arg(dir.join("hook.secret"))
            .arg(&certs.cert)
            .arg(&certs.key)
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the receiver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    daemon.launch();
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (listed, _) = eventually(EVENT_WAIT, "both deliveries to end", || {
        let listed = deliveries(&daemon, &[]);
        let state = |rule: &str| {
            listed
                .iter()
                .find(|d| d["rule"] == rule)
                .map(|d| d["state"].clone())
        };
        if state("trusted") == Some("delivered".into())
            && state("untrusted") == Some("failed".into())
        {
            Ok(listed)
        } else {
            Err(format!("{listed:#?}"))
        }
    });
    let untrusted = listed
        .iter()
        .find(|d| d["rule"] == "untrusted")
        .expect("the untrusted delivery");
    let error = untrusted["last_error"].as_str().expect("a last error");
    assert!(
        error.contains("TLS with localhost:") && error.contains("UnknownIssuer"),
        "a clear last error: {error}"
    );
    let got = lines_of(&received);
    assert_eq!(got.len(), 2, "the trusted rules' requests only: {got:#?}");
    let settings_rule = got
        .iter()
        .find(|r| r["path"] == "/hook")
        .expect("the settings rule's request");
    assert_eq!(settings_rule["signature_ok"], true, "{got:#?}");
    for request in &got {
        assert_eq!(request["sni"], "localhost", "{got:#?}");
        assert_eq!(request["body"]["job_id"], job_id, "{got:#?}");
    }
    assert!(got.iter().any(|r| r["path"] == "/chain"), "{got:#?}");
}

/// TLS settings that cannot work stop the daemon from starting, with the
/// reason; a password to a server off this host is allowed over TLS.
#[test]
fn tls_settings_that_cannot_work_are_load_errors() {
    for (settings, words) in [
        (
            "[smtp]\nhost = \"127.0.0.1\"\ntls = \"implicit\"\nstarttls = true\n",
            &["disagree"][..],
        ),
        (
            "[smtp]\nhost = \"127.0.0.1\"\nca_file = \"@DIR@/ca.pem\"\n",
            &["ca_file is for TLS"][..],
        ),
        (
            "[smtp]\nhost = \"127.0.0.1\"\ntls = \"starttls\"\nca_file = \"/nonexistent/ca.pem\"\n",
            &["ca_file", "/nonexistent/ca.pem"][..],
        ),
        (
            "[smtp]\nhost = \"127.0.0.1\"\ntls = \"starttls\"\nca_file = \"@DIR@/pw\"\n",
            &["holds no certificate"][..],
        ),
        (
            "[smtp]\nhost = \"127.0.0.1\"\ntls = \"sometimes\"\n",
            &["sometimes"][..],
        ),
        (
            "[notify.chat]\non = [\"job.failed\"]\n\
             webhook = { url = \"http://127.0.0.1:9/hook\", ca_file = \"@DIR@/ca.pem\" }\n",
            &["[notify.chat]", "ca_file is for https"][..],
        ),
        (
            "[notify.chat]\non = [\"job.failed\"]\n\
             webhook = { url = \"ftp://127.0.0.1/hook\" }\n",
            &["[notify.chat]", "http:// or https://"][..],
        ),
    ] {
        let mut daemon = TestDaemon::prepare(Some(settings), &[]);
        std::fs::write(daemon.dir().join("pw"), "secret\n").expect("pw");
        std::fs::write(daemon.dir().join("ca.pem"), "").expect("ca");
        let error = daemon.try_launch().expect_err("the settings are refused");
        let log = daemon.log_tail();
        for word in words {
            assert!(log.contains(word), "{word:?}: {error}\n{log}");
        }
    }
    let mut over_tls = TestDaemon::prepare(
        Some(
            "[smtp]\nhost = \"192.0.2.1\"\nport = 587\ntls = \"starttls\"\nuser = \"hf\"\n\
             password_file = \"@DIR@/pw\"\n",
        ),
        &[],
    );
    std::fs::write(over_tls.dir().join("pw"), "secret\n").expect("pw");
    over_tls
        .try_launch()
        .unwrap_or_else(|e| panic!("AUTH over TLS is allowed: {e}\n{}", over_tls.log_tail()));
}
