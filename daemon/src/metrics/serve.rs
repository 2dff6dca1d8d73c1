//! Where the metrics are read: the answer to `GET /metrics` (on the Unix
//! socket, see `rpc::socket`), the optional TCP listener that serves only
//! that (`metrics_listen`), and the textfile for node_exporter's textfile
//! collector (`metrics_textfile`), replaced atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Format, Gauges};
use crate::engine::EngineHandle;

/// Connections the TCP listener serves at once; more wait in the backlog.
const TCP_CONNECTIONS: usize = 8;
/// How long a TCP client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8192;
/// How long a scrape waits for the engine's running and queued counts.
const COUNTS_TIMEOUT: Duration = Duration::from_secs(2);

/// The text of one scrape: the counters (once the totals from before this
/// start are in), and the gauges when the engine answers (it does not
/// while held back by a read-only state directory).
pub async fn answer(engine: &EngineHandle, format: Format) -> String {
    let gauges = match tokio::time::timeout(COUNTS_TIMEOUT, engine.probe()).await {
        Ok(Some(c)) => Some(Gauges {
            queued_jobs: c.queued_jobs,
            running_jobs: c.running_jobs,
            running_activities: c.running_activities,
        }),
        _ => None,
    };
    // The totals from before this start are being counted in (a pass over
    // the history, off the start's path).
    super::global().seeded().await;
    super::global().render(format, gauges)
}

/// Serve `GET /metrics` on `listener` until the task is dropped: at most
/// [`TCP_CONNECTIONS`] at once, each closed after its answer or after
/// [`READ_TIMEOUT`] without a complete request.
pub async fn listen(listener: TcpListener, engine: EngineHandle) {
    let slots = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics listener: accept failed");
                // EMFILE and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_one(stream, &engine).await {
                tracing::debug!(%error, "metrics listener: connection dropped");
            }
            drop(permit);
        });
    }
}

async fn serve_one(mut stream: TcpStream, engine: &EngineHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, content_type, body) = match complete {
        Ok(Ok(true)) => {
            let text = String::from_utf8_lossy(&head);
            let mut words = text.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let accept = text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case("accept")
                    .then(|| value.trim().to_string())
            });
            match (method, path.split('?').next().unwrap_or("")) {
                ("GET", "/metrics") => {
                    let format = Format::from_accept(accept.as_deref());
                    (
                        "200 OK",
                        format.content_type(),
                        answer(engine, format).await,
                    )
                }
                ("GET", _) => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    "only /metrics is served here\n".to_string(),
                ),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain; charset=utf-8",
                    "only GET /metrics is served here\n".to_string(),
                ),
            }
        }
        Ok(Ok(false)) | Ok(Err(_)) => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "send GET /metrics\n".to_string(),
        ),
        Err(_) => (
            "408 Request Timeout",
            "text/plain; charset=utf-8",
            "request not completed in time\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(READ_TIMEOUT, stream.write_all(response.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Write the metrics (classic text format) to `path` every `every`,
/// through a temporary file beside it renamed over it, so the collector
/// never reads half a file.
pub async fn textfile(path: PathBuf, every: Duration, engine: EngineHandle) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let text = answer(&engine, Format::Prometheus).await;
        let written = tokio::task::spawn_blocking({
            let path = path.clone();
            move || write_atomically(&path, text.as_bytes())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Ok(()) => failing = false,
            // Said once per run of failures, not every interval.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, path = %path.display(), "cannot write the metrics textfile; check metrics_textfile's directory");
            }
            Err(_) => {}
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // The name is predictable and the directory may be the collector's:
    // whatever is at it (a link to /etc/passwd left there) is removed, not
    // written through, and the file is made new.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        // Readable by the collector, which runs as another user.
        .mode(0o644)
        .open(&tmp)?;
    // The daemon's umask (0077) takes the collector's bits from the mode.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
