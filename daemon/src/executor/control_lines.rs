//! Reading an attempt's control channel: lines from the fd 3 pipe (or the
//! control file a Slurm job appends to), each bounded and parsed by
//! [`control`](super::control), handed to the engine with a share of the
//! attempt's in-flight budget.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use super::control;
use super::logs::{AttemptKey, LogSink};
use super::report::StartReport;
use super::{ControlMessage, ExecEvent};

/// Control-line bytes of one attempt that may wait for the engine at once,
/// in KiB. The reader waits when they are all taken, so a slow engine turn
/// (a slow disk) holds the activity back instead of queuing its messages
/// in the daemon's memory.
const CONTROL_IN_FLIGHT_KIB: u32 = 1024;

/// Read control lines until EOF; malformed lines become warnings in the log,
/// and so do messages the attempt's [`control::Gate`] refuses.
pub(super) async fn read_control(
    fd: OwnedFd,
    key: AttemptKey,
    gate: control::Gate,
    events: mpsc::Sender<ExecEvent>,
    sink: Arc<LogSink>,
    masker: crate::mask::Masker,
    start: Arc<StartReport>,
) {
    let receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(r) => r,
        Err(e) => {
            sink.note(&format!("control channel unavailable: {e}"))
                .await;
            return;
        }
    };
    read_control_lines(receiver, 0, key, gate, events, sink, masker, Some(start)).await;
}

/// The control channel's lines from any reader (the fd 3 pipe, or the
/// control file a Slurm job appends to), parsed and bounded the same way.
#[allow(clippy::too_many_arguments)]
pub(super) async fn read_control_lines(
    input: impl tokio::io::AsyncRead + Unpin,
    start: u64,
    key: AttemptKey,
    mut gate: control::Gate,
    events: mpsc::Sender<ExecEvent>,
    sink: Arc<LogSink>,
    masker: crate::mask::Masker,
    mut pid_report: Option<Arc<StartReport>>,
) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let budget = Arc::new(tokio::sync::Semaphore::new(CONTROL_IN_FLIGHT_KIB as usize));
    // Bytes of the input read so far, from `start`: each message carries
    // the offset after its line.
    let mut offset = start;
    loop {
        line.clear();
        let mut limited = (&mut reader).take(control::MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(n) => offset += n as u64,
        }
        if line.len() > control::MAX_LINE {
            sink.note("control line longer than 256 KiB ignored").await;
            // Skip the rest of the overlong line without holding it.
            match skip_line(&mut reader).await {
                Some(n) => offset += n,
                None => break,
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        if text.trim().is_empty() {
            continue;
        }
        let message = match control::parse_line(text) {
            // What an activity reports (alerts, progress text, outputs) is
            // shown to others: secrets in it are masked like its output.
            Ok(ControlMessage::Checkpoint(value)) if masker.holds_secret(&value) => {
                sink.note(
                    "checkpoint refused: it holds a secret value, and checkpoints are stored and \
                     shown; keep secrets out of checkpoints (the previous one stays)",
                )
                .await;
                continue;
            }
            Ok(message) => masker.mask_control(message),
            Err(why) => {
                sink.note(&format!("ignored control message: {why}")).await;
                continue;
            }
        };
        match gate.admit(&message, std::time::Instant::now()) {
            Ok(()) => {}
            Err(control::Refusal::Note(why)) => {
                sink.note(&why).await;
                continue;
            }
            Err(control::Refusal::Quiet) => continue,
        }
        // A line is at most 256 KiB, well within the budget.
        let kib = (line.len() / 1024 + 1).min(CONTROL_IN_FLIGHT_KIB as usize) as u32;
        let Ok(held) = budget.clone().acquire_many_owned(kib).await else {
            break;
        };
        // The attempt's pid goes first: what it reports follows its start.
        if let Some(report) = pid_report.take() {
            report.send().await;
        }
        let event = ExecEvent::Control {
            key,
            message,
            offset,
            held: Some(held),
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
    if gate.alerts_dropped_total > 0 {
        sink.note(&format!(
            "{} alerts dropped by the rate limit",
            gate.alerts_dropped_total
        ))
        .await;
    }
}

/// Discard input up to and including the next newline, a buffer at a time.
/// The bytes discarded, or None at end of input or on an error.
async fn skip_line(reader: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Option<u64> {
    let mut skipped = 0;
    loop {
        let (found, used) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return None,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (true, at + 1),
                None => (false, buf.len()),
            },
        };
        reader.consume(used);
        skipped += used as u64;
        if found {
            return Some(skipped);
        }
    }
}
