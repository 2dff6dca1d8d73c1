//! Mail notifications: the event as a readable text, sent through the
//! `[smtp]` server with a plain SMTP conversation (EHLO, MAIL, RCPT, DATA).

use holdfast_api::Event;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::deliver::DeliveryError;
use super::rules::Smtp;

/// Send `payload` (an event, or a digest of events) to `to`.
pub async fn send(smtp: &Smtp, to: &[String], payload: &str) -> Result<(), DeliveryError> {
    let from = smtp.from.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("holdfast@{host}")
    });
    let (subject, body) = text(payload);
    let address = format!("{}:{}", smtp.host, smtp.port);
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|source| DeliveryError::Connect {
            address: address.clone(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, "220").await?;
    command(&mut write, "EHLO holdfastd").await?;
    expect(&mut read, "250").await?;
    command(&mut write, &format!("MAIL FROM:<{from}>")).await?;
    expect(&mut read, "250").await?;
    for rcpt in to {
        command(&mut write, &format!("RCPT TO:<{rcpt}>")).await?;
        expect(&mut read, "25").await?;
    }
    command(&mut write, "DATA").await?;
    expect(&mut read, "354").await?;
    let mut message = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        to.join(", ")
    );
    for line in body.lines() {
        // Dot-stuffing: a line starting with a dot gets another.
        if line.starts_with('.') {
            message.push('.');
        }
        message.push_str(line);
        message.push_str("\r\n");
    }
    message.push_str(".\r\n");
    write.write_all(message.as_bytes()).await?;
    expect(&mut read, "250").await?;
    let _ = command(&mut write, "QUIT").await;
    Ok(())
}

async fn command(write: &mut tokio::net::tcp::OwnedWriteHalf, line: &str) -> std::io::Result<()> {
    write.write_all(format!("{line}\r\n").as_bytes()).await
}

/// Read a reply (every line of a multi-line one) and require its code to
/// start with `code`.
async fn expect(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    code: &str,
) -> Result<(), DeliveryError> {
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Err(DeliveryError::Status(
                "the SMTP server closed the connection".into(),
            ));
        }
        let line = line.trim_end();
        // `250-...` continues, `250 ...` ends the reply.
        if line.len() >= 4 && line.as_bytes()[3] == b'-' {
            continue;
        }
        return if line.starts_with(code) {
            Ok(())
        } else {
            Err(DeliveryError::Status(format!("SMTP: {line}")))
        };
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
    }
    for link in &event.links {
        fact("see", link.clone());
    }
    text
}
