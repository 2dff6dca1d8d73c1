//! One delivery attempt: a webhook POST (HTTP/1.1, over TLS for an
//! https URL, signed with HMAC-SHA256 when the rule has a secret file),
//! an exec hook with the
//! event JSON on stdin, or a mail (`mail.rs`). Every attempt is bounded by
//! [`TIMEOUT`].

use std::process::Stdio;
use std::time::Duration;

use nix::libc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::rules::{Rule, Target, WebhookTls};
use crate::store::{DueDelivery, Store};

/// Longest one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why an attempt did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot reach {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "TLS with {address} failed: {source} (is its certificate issued for that name by a CA \
         of the system store or of ca_file?)"
    )]
    Tls {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// lettre's error: the server's reply (code and text) or why the
    /// connection, its TLS or AUTH failed.
    #[error("SMTP {address}: {message}")]
    Smtp { address: String, message: String },
    #[error("the receiver answered {0}")]
    Status(String),
    #[error("the request failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {}s", TIMEOUT.as_secs())]
    Timeout,
    #[error("secret_file {path} cannot be read: {source}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the hook {program} exited with {status}")]
    Exit { program: String, status: String },
    #[error("the hook cannot run as its chain's user: {0}")]
    RunAs(String),
}

pub async fn send(rule: &Rule, delivery: &DueDelivery, store: &Store) -> Result<(), DeliveryError> {
    match tokio::time::timeout(TIMEOUT, attempt(rule, delivery, store)).await {
        Ok(result) => result,
        Err(_) => Err(DeliveryError::Timeout),
    }
}

async fn attempt(rule: &Rule, delivery: &DueDelivery, store: &Store) -> Result<(), DeliveryError> {
    match &rule.target {
        Target::Webhook {
            host,
            port,
            path,
            secret_file,
            tls,
            ..
        } => {
            let signature = match secret_file {
                Some(file) => {
                    let secret = std::fs::read(file).map_err(|source| DeliveryError::Secret {
                        path: file.display().to_string(),
                        source,
                    })?;
                    let key = secret.trim_ascii_end();
                    let mac = hmac_sha256(key, delivery.payload.as_bytes());
                    Some(format!("sha256={}", hex(&mac)))
                }
                None => None,
            };
            post(
                host,
                *port,
                path,
                tls.as_ref(),
                delivery,
                signature.as_deref(),
            )
            .await
        }
        Target::Exec { argv, run_as } => exec(argv, run_as.as_ref(), delivery).await,
        Target::Mail {
            to,
            via,
            attach_report,
        } => {
            let reports = if *attach_report {
                super::report::of_payload(store, &delivery.payload).await
            } else {
                super::report::Reports::default()
            };
            super::mail::send(via, to, &delivery.payload, reports).await
        }
    }
}

async fn post(
    host: &str,
    port: u16,
    path: &str,
    tls: Option<&WebhookTls>,
    delivery: &DueDelivery,
    signature: Option<&str>,
) -> Result<(), DeliveryError> {
    let address = format!("{host}:{port}");
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|source| DeliveryError::Connect {
            address: address.clone(),
            source,
        })?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nUser-Agent: holdfastd\r\nX-Holdfast-Event: {}\r\n\
         X-Holdfast-Event-Id: {}\r\nX-Holdfast-Delivery: {}\r\nConnection: close\r\n",
        delivery.payload.len(),
        delivery.kind,
        delivery.event_id,
        delivery.id,
    );
    if let Some(signature) = signature {
        request.push_str(&format!("X-Holdfast-Signature: {signature}\r\n"));
    }
    request.push_str("\r\n");
    match tls {
        None => exchange(stream, &request, &delivery.payload).await,
        Some(tls) => {
            // The handshake verifies the certificate against the rule's
            // roots and the URL's host (sent as SNI when it is a name).
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), stream)
                .await
                .map_err(|source| DeliveryError::Tls { address, source })?;
            exchange(stream, &request, &delivery.payload).await
        }
    }
}

/// Send the request and its body, and read the status line of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
    payload: &str,
) -> Result<(), DeliveryError> {
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(payload.as_bytes()).await?;
    stream.flush().await?;
    // The status line is enough; read at most a small head.
    let mut head = vec![0u8; 1024];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let text = String::from_utf8_lossy(&head[..read]);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    let code = line.split_whitespace().nth(1).unwrap_or("");
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else if line.is_empty() {
        Err(DeliveryError::Status("nothing".into()))
    } else {
        Err(DeliveryError::Status(line))
    }
}

async fn exec(
    argv: &[String],
    run_as: Option<&crate::run_as::Request>,
    delivery: &DueDelivery,
) -> Result<(), DeliveryError> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("HF_EVENT", &delivery.kind)
        .env("HF_EVENT_ID", delivery.event_id.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(run_as) = run_as {
        // Looked up again now, like an activity's user before each spawn,
        // and off the runtime's threads in one of the daemon's look-up
        // turns: the user database can hang.
        let request = run_as.clone();
        let identity = crate::run_as::look_up_in_turn(crate::run_as::LookUpFor::Other, move || {
            request.resolve()
        })
        .await
        .map_err(|e| DeliveryError::RunAs(e.to_string()))?
        .map_err(|e| DeliveryError::RunAs(e.to_string()))?;
        command
            .current_dir("/")
            .env("HOME", &identity.home)
            .env("USER", &identity.name)
            .env("LOGNAME", &identity.name);
        switch_user(&mut command, identity);
    }
    let mut child = command.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(delivery.payload.as_bytes()).await;
    }
    let status = child.wait().await?;
    if status.success() {
        Ok(())
    } else {
        Err(DeliveryError::Exit {
            program: argv[0].clone(),
            status: status.to_string(),
        })
    }
}

/// Make the hook's process switch to `identity` (its groups, group, then
/// user) before `exec`. Raw system calls: in the forked child only this
/// thread exists, and glibc's wrappers would try to reach the others.
#[allow(unsafe_code)]
fn switch_user(command: &mut tokio::process::Command, identity: crate::run_as::Identity) {
    let groups: Vec<libc::gid_t> = identity.groups.clone();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes system calls on memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let check = |result: libc::c_long| {
                if result == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::syscall(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr(),
            ))?;
            check(libc::syscall(libc::SYS_setgid, identity.gid))?;
            check(libc::syscall(libc::SYS_setuid, identity.uid))
        });
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
