//! Mail notifications: the event as a readable text, sent through the
//! `[smtp]` server with lettre's SMTP transport (plain SMTP, STARTTLS or
//! implicit TLS with rustls, AUTH when `[smtp]` has a user), or, without
//! `[smtp]`, handed to the local sendmail program. A rule with
//! `attach_report = true` sends the text and the jobs' HTML execution
//! reports (`report.rs`) as a multipart/mixed message.

use holdfast_api::Event;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt;

use super::deliver::DeliveryError;
use super::report::Reports;
use super::rules::MailVia;
use super::smtp::Security;

/// Send `payload` (an event, or a digest of events) to `to`, with
/// `reports` attached.
pub async fn send(
    via: &MailVia,
    to: &[String],
    payload: &str,
    reports: Reports,
) -> Result<(), DeliveryError> {
    let from = match via {
        MailVia::Smtp(smtp) => smtp.from.clone(),
        MailVia::Sendmail(_) => None,
    };
    let from = from.unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("holdfast@{host}")
    });
    let (subject, mut body) = text(payload);
    if !reports.notes.is_empty() {
        body.push('\n');
        for note in &reports.notes {
            body.push_str(note);
            body.push('\n');
        }
    }
    let address = |text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| DeliveryError::Status(format!("mail address {text:?}: {e}")))
    };
    let mut message = Message::builder().from(address(&from)?).subject(subject);
    for rcpt in to {
        message = message.to(address(rcpt)?);
    }
    let message = if reports.files.is_empty() {
        message.header(ContentType::TEXT_PLAIN).body(body)
    } else {
        let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(body));
        for (name, html) in reports.files {
            parts = parts.singlepart(Attachment::new(name).body(html, ContentType::TEXT_HTML));
        }
        message.multipart(parts)
    }
    .map_err(|e| DeliveryError::Status(format!("cannot build the mail: {e}")))?;
    let smtp = match via {
        MailVia::Smtp(smtp) => smtp,
        MailVia::Sendmail(program) => return sendmail(program, &from, to, &message).await,
    };
    let mut mailer =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str()).port(smtp.port);
    // The TLS parameters were built when the settings loaded (they are
    // there for every security but `None`).
    if let Some(tls) = &smtp.tls {
        mailer = mailer.tls(match smtp.security {
            Security::Implicit => Tls::Wrapper(tls.0.clone()),
            Security::Starttls | Security::None => Tls::Required(tls.0.clone()),
        });
    }
    if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
        mailer = mailer.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    mailer
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| DeliveryError::Smtp {
            address: format!("{}:{}", smtp.host, smtp.port),
            message: e.to_string(),
        })
}

/// Hand `message` to the sendmail program as `sendmail -i -f FROM -- TO...`
/// with the message on stdin (what lettre's sendmail transport does,
/// without the dependencies that feature brings into the lock file).
async fn sendmail(
    program: &std::path::Path,
    from: &str,
    to: &[String],
    message: &Message,
) -> Result<(), DeliveryError> {
    let mut child = tokio::process::Command::new(program)
        .arg("-i")
        .arg("-f")
        .arg(from)
        .arg("--")
        .args(to)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&message.formatted()).await?;
    }
    let status = child.wait().await?;
    if status.success() {
        Ok(())
    } else {
        Err(DeliveryError::Exit {
            program: program.display().to_string(),
            status: status.to_string(),
        })
    }
}

/// The subject and body of a mail for `payload`: the same facts as the
/// JSON, for people.
pub fn text(payload: &str) -> (String, String) {
    let value: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    if value["kind"] == "digest" {
        let events: Vec<Event> = value["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| serde_json::from_value(e.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let subject = format!(
            "[holdfast] {} events ({})",
            events.len(),
            value["rule"].as_str().unwrap_or("digest")
        );
        let body = events
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("\n----\n\n");
        return (subject, body);
    }
    match serde_json::from_value::<Event>(value) {
        Ok(event) => (subject(&event), describe(&event)),
        Err(_) => ("[holdfast] event".into(), payload.to_string()),
    }
}

fn subject(event: &Event) -> String {
    match (event.job_id, &event.chain, &event.schedule) {
        (Some(job), Some(chain), _) => format!("[holdfast] {}: job {job} ({chain})", event.kind),
        (_, _, Some(schedule)) => format!("[holdfast] {}: {schedule}", event.kind),
        _ => format!("[holdfast] {}", event.kind),
    }
}

fn describe(event: &Event) -> String {
    let mut text = format!("{}\n\n", subject(event).trim_start_matches("[holdfast] "));
    let mut fact = |name: &str, value: String| text.push_str(&format!("{name:<10} {value}\n"));
    fact("event", format!("{} ({})", event.id, event.at));
    if let Some(job) = event.job_id {
        fact("job", job.to_string());
    }
    if let Some(chain) = &event.chain {
        fact("chain", chain.clone());
    }
    if let Some(tenant) = &event.tenant {
        fact("tenant", tenant.clone());
    }
    if let Some(state) = event.state {
        fact("state", state.as_str().to_string());
    }
    if let Some(activity) = &event.activity {
        fact("activity", activity.clone());
    }
    if let Some(schedule) = &event.schedule {
        fact("schedule", schedule.clone());
    }
    if let Some(ms) = event.duration_ms {
        fact(
            "duration",
            humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
                .to_string(),
        );
    }
    if let Some(id) = &event.error_id {
        fact("error id", id.clone());
    }
    if let Some(error) = &event.error {
        fact("error", error.clone());
    }
    let mut tails = Vec::new();
    if let Some(tail) = &event.error_tail {
        tails.push(("its output ended with".to_string(), tail));
    }
    for failed in &event.failed {
        fact(
            "failed",
            format!(
                "{} {} {}",
                failed.activity,
                failed.error_id.as_deref().unwrap_or(""),
                failed.error.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        );
        if let Some(tail) = &failed.error_tail {
            tails.push((format!("{} ended with", failed.activity), tail));
        }
    }
    for link in &event.links {
        fact("see", link.clone());
    }
    // The output last, indented, so the facts above stay easy to scan.
    for (title, tail) in tails {
        text.push_str(&format!("\n{title}:\n"));
        for line in tail.lines() {
            text.push_str(&format!("    {line}\n"));
        }
    }
    text
}
