//! Attempt log files: stdout and stderr copied into one capped file, and a
//! hub that lets `job.follow_logs` wake up when a live log grows. Chains
//! with `journal = true` also have their output lines forwarded to the
//! journal, within a shared rate limit.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::log_writer::{CHUNK_BYTES, LogWriter};
use crate::mask::{Masker, StreamMasker};
use tokio::sync::watch;

/// Identifies one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    pub job_id: u64,
    pub idx: usize,
    pub number: u32,
    /// The item of a fan-out (`load.chunk[17]`); None for an activity
    /// without `foreach`.
    pub item: Option<u32>,
}

impl AttemptKey {
    /// A name unique to this attempt, for its cgroup and secret files.
    pub fn name(&self) -> String {
        match self.item {
            None => format!("{}-{}-{}", self.job_id, self.idx, self.number),
            Some(item) => format!("{}-{}i{item}-{}", self.job_id, self.idx, self.number),
        }
    }
}

/// The path of a fan-out item: `chain.process.activity[17]`. It keys the
/// item's log files and is what `hfctl logs JOB process.activity[17]`
/// names.
pub fn item_path(activity_path: &str, item: Option<u32>) -> String {
    match item {
        None => activity_path.to_string(),
        Some(item) => format!("{activity_path}[{item}]"),
    }
}

/// The path of an attempt's log. Activity paths are validated names
/// (`[a-z0-9_-]` and dots), and an item adds `[N]`, so they are safe as
/// file names.
pub fn log_path(logs_dir: &Path, job_id: u64, activity_path: &str, attempt: u32) -> PathBuf {
    logs_dir
        .join(job_id.to_string())
        .join(format!("{activity_path}.{attempt}.log"))
}

/// A capped sink shared by the stdout and stderr copiers of one attempt.
///
/// The file is created on the first byte: most activities of a large chain
/// print nothing, and creating thousands of empty files costs more than
/// running them.
pub struct LogSink {
    path: PathBuf,
    /// The file, or why it could not be created.
    file: OnceLock<Result<File, String>>,
    cap: u64,
    written: AtomicU64,
    dropped: AtomicU64,
    notify: watch::Sender<u64>,
    /// Secret values masked in the daemon's own notes (which may quote
    /// what the activity sent on the control channel).
    masker: Masker,
    /// The last [`TAIL_BYTES`] of what was appended (already masked), kept
    /// even past the cap: a failed attempt's `error_tail`.
    tail: Mutex<std::collections::VecDeque<u8>>,
    /// Chunks handed to the log writer and not yet appended.
    in_flight: AtomicUsize,
    /// Tasks of this attempt waiting for the log writer (for room in its
    /// queue, or for a note to be written).
    waiting: AtomicUsize,
}

/// Bytes of output kept for a failed attempt's `error_tail`.
pub const TAIL_BYTES: usize = 4096;
/// Lines of output kept for a failed attempt's `error_tail`.
pub const TAIL_LINES: usize = 20;

impl LogSink {
    pub fn new(path: PathBuf, cap: u64, notify: watch::Sender<u64>) -> LogSink {
        LogSink {
            path,
            file: OnceLock::new(),
            cap,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            notify,
            masker: Masker::new([]),
            tail: Mutex::new(std::collections::VecDeque::with_capacity(TAIL_BYTES)),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The same sink, masking these secrets in its notes.
    pub fn masking(mut self, masker: Masker) -> LogSink {
        self.masker = masker;
        self
    }

    /// The log file, created (with its job directory) on first use. None if
    /// it cannot be created; the bytes are then counted as dropped and
    /// [`LogSink::create_error`] says why.
    fn file(&self) -> Option<&File> {
        self.file
            .get_or_init(|| {
                if let Some(dir) = self.path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| {
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot create an attempt log");
                        e.to_string()
                    })
            })
            .as_ref()
            .ok()
    }

    /// Why the log file could not be created, if creating it failed.
    pub fn create_error(&self) -> Option<String> {
        self.file.get().and_then(|f| f.as_ref().err().cloned())
    }

    /// Append what fits under the cap; count the rest as dropped.
    pub fn append(&self, data: &[u8]) {
        if let Ok(mut tail) = self.tail.lock() {
            let keep = &data[data.len().saturating_sub(TAIL_BYTES)..];
            let excess = (tail.len() + keep.len()).saturating_sub(TAIL_BYTES);
            tail.drain(..excess);
            tail.extend(keep);
        }
        let len = data.len() as u64;
        let mut granted = 0;
        let _ = self
            .written
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                granted = self.cap.saturating_sub(w).min(len);
                Some(w + granted)
            });
        if granted > 0 {
            // A failed write (disk full, file removed) is counted as dropped:
            // the child must never block or die because its log cannot grow.
            let written = self
                .file()
                .is_some_and(|mut f| f.write_all(&data[..granted as usize]).is_ok());
            if !written {
                self.dropped.fetch_add(granted, Ordering::Relaxed);
            }
            self.notify
                .send_replace(self.written.load(Ordering::Acquire));
        }
        if granted < len {
            self.dropped.fetch_add(len - granted, Ordering::Relaxed);
        }
    }

    /// A note from the daemon itself (a timeout, a malformed control line),
    /// kept within the cap like the child's output: the file never grows
    /// past `log_max_bytes`, and `written` counts every byte in it. It goes
    /// through the log writer, after the output already read, and this
    /// returns once it is in the file: a slow disk holds up this attempt
    /// only.
    pub async fn note(self: &Arc<Self>, text: &str) {
        let line = self.note_line(text);
        match LogWriter::get() {
            Some(writer) => {
                let _waiting = Waiting::begin(self);
                writer.write(self, line.into_bytes()).await;
            }
            None => self.append(line.as_bytes()),
        }
    }

    /// The same note for a caller that cannot wait (the Slurm tail refusing
    /// a file, once per file): queued if the log writer has room, counted
    /// as dropped if it has none; never written on the caller's thread.
    pub fn note_now(self: &Arc<Self>, text: &str) {
        let line = self.note_line(text).into_bytes();
        match LogWriter::get() {
            Some(writer) => writer.try_append(self, line),
            None => self.append(&line),
        }
    }

    fn note_line(&self, text: &str) -> String {
        format!("[holdfast] {}\n", self.masker.mask(text))
    }

    /// Wait until everything handed to the log writer for this attempt is
    /// in its file, so its counters and tail are final.
    pub async fn settle(&self) {
        if self.in_flight.load(Ordering::Acquire) > 0
            && let Some(writer) = LogWriter::get()
        {
            writer.flush().await;
        }
    }

    /// Past its cap with nothing queued: more output is only counted, so
    /// it need not go through the writer.
    fn full(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.written.load(Ordering::Acquire) >= self.cap
    }

    /// Whether a task of this attempt waits for the log writer (the disk
    /// is behind), rather than for its pipe.
    pub fn waiting_for_disk(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    pub(super) fn queued(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A chunk left the queue; `lost` bytes of it were never written.
    pub(super) fn unqueued(&self, lost: u64) {
        if lost > 0 {
            self.dropped.fetch_add(lost, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The last lines of the output: at most [`TAIL_LINES`] lines and
    /// [`TAIL_BYTES`] bytes (a line cut by that limit starts the text), or
    /// None when the attempt printed nothing.
    pub fn tail(&self) -> Option<String> {
        let bytes: Vec<u8> = self.tail.lock().ok()?.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end_matches(['\n', '\r']);
        let lines: Vec<&str> = text.lines().collect();
        let kept = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        let kept = kept.trim_start_matches('\u{fffd}').to_string();
        (!kept.trim().is_empty()).then_some(kept)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Acquire)
    }
}

/// Copy a child's stream into the sink until EOF. Reads never stop, even
/// past the cap, so a child writing a gigabyte is never stalled by its cap.
/// The bytes are written by the [`LogWriter`] thread, never on the
/// runtime's workers; [`LogSink::settle`] waits until they are in the file.
/// With `forward`, complete lines also go to the journal.
pub async fn copy_stream(
    mut stream: impl AsyncRead + Unpin,
    sink: Arc<LogSink>,
    forward: Option<JournalForward>,
    mut masker: Option<StreamMasker>,
) {
    // Forwarding only makes sense when the daemon logs to the journal;
    // otherwise the lines would land in its own stderr.
    let mut forward = forward.filter(|_| crate::logging::to_journal());
    let writer = LogWriter::get();
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    loop {
        buf.clear();
        let n = match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = match &mut masker {
            // Secrets are masked before the bytes reach the log, its
            // followers or the journal.
            Some(masker) => {
                let mut masked = Vec::new();
                masker.push(&buf, &mut masked);
                masked
            }
            // A full read is handed over as it is; a short one is copied,
            // so the queue does not hold 64 KiB for a line.
            None if n > CHUNK_BYTES / 4 => {
                std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES))
            }
            None => buf.clone(),
        };
        if let Some(forward) = &mut forward {
            forward.push(&data);
        }
        deliver(&sink, writer, data).await;
    }
    if let Some(masker) = &mut masker {
        let mut masked = Vec::new();
        masker.finish(&mut masked);
        if let Some(forward) = &mut forward {
            forward.push(&masked);
        }
        deliver(&sink, writer, masked).await;
    }
    if let Some(forward) = forward {
        forward.finish();
    }
}

/// Hand bytes to the writer (in pieces of at most [`CHUNK_BYTES`]: masking
/// can lengthen a read), or count them in place when the sink is past its
/// cap or the writer thread could not be started.
async fn deliver(sink: &Arc<LogSink>, writer: Option<&'static LogWriter>, data: Vec<u8>) {
    let Some(writer) = writer.filter(|_| !sink.full()) else {
        sink.append(&data);
        return;
    };
    let _waiting = Waiting::begin(sink);
    if data.len() <= CHUNK_BYTES {
        writer.append(sink, data).await;
    } else {
        for piece in data.chunks(CHUNK_BYTES) {
            writer.append(sink, piece.to_vec()).await;
        }
    }
}

/// A task's wait for the log writer, counted in its sink from `begin`
/// until dropped (also when the waiting task is stopped).
struct Waiting<'a>(&'a LogSink);

impl<'a> Waiting<'a> {
    fn begin(sink: &'a LogSink) -> Waiting<'a> {
        sink.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(sink)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long readers may go on after their attempt ended before they are
/// stopped: a process that escaped the group could hold a pipe open forever.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Wait for an ended attempt's readers to reach EOF. Time spent waiting
/// for a disk that is behind does not count: only a pipe held open does.
/// False if readers were stopped; they have then ended too, so nothing
/// they read is queued after the caller's [`LogSink::settle`].
pub async fn drain(readers: &mut tokio::task::JoinSet<()>, sink: &LogSink) -> bool {
    loop {
        let all = async { while readers.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIME, all).await.is_ok() {
            return true;
        }
        if !sink.waiting_for_disk() {
            break;
        }
    }
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    false
}

/// Longest output line forwarded to the journal; longer ones are cut.
const JOURNAL_LINE_MAX: usize = 4096;
/// Output lines forwarded per second, all attempts together. journald's
/// default limit is 10,000 messages per 30 s for the whole service; this
/// keeps chatty jobs well below it, so the daemon's own messages are never
/// the ones dropped.
const JOURNAL_LINES_PER_SECOND: u32 = 100;

/// The shared budget of forwarded lines: a count per one-second window.
/// Approximate at the window's edge, which is all a flood guard needs.
struct LineBudget {
    window: AtomicU64,
    used: AtomicU64,
}

impl LineBudget {
    const fn new() -> LineBudget {
        LineBudget {
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    /// May one more line go out in second `now` of the daemon's life?
    fn take(&self, now: u64, limit: u32) -> bool {
        let window = self.window.load(Ordering::Acquire);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.used.store(0, Ordering::Release);
        }
        self.used.fetch_add(1, Ordering::AcqRel) < u64::from(limit)
    }
}

static JOURNAL_BUDGET: LineBudget = LineBudget::new();

fn seconds_since_start() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
}

/// Forwards one attempt's output lines to the journal (a chain's
/// `journal = true`) with the job's fields, within the shared budget.
pub struct JournalForward {
    job_id: u64,
    chain: String,
    process: String,
    activity: String,
    attempt: u32,
    partial: Vec<u8>,
    dropped: u64,
}

impl JournalForward {
    /// `path` is `chain.process.activity` (names never contain dots).
    pub fn new(key: AttemptKey, path: &str) -> JournalForward {
        let mut parts = path.splitn(3, '.');
        let mut next = || parts.next().unwrap_or_default().to_string();
        JournalForward {
            job_id: key.job_id,
            chain: next(),
            process: next(),
            activity: next(),
            attempt: key.number,
            partial: Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.len() < JOURNAL_LINE_MAX {
                let room = JOURNAL_LINE_MAX - self.partial.len();
                self.partial.extend_from_slice(&rest[..end.min(room)]);
            }
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
            rest = &rest[end + 1..];
        }
        let room = JOURNAL_LINE_MAX.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
    }

    fn emit(&mut self, line: &[u8]) {
        if !JOURNAL_BUDGET.take(seconds_since_start(), JOURNAL_LINES_PER_SECOND) {
            self.dropped += 1;
            return;
        }
        let line = String::from_utf8_lossy(line);
        tracing::info!(
            target: "holdfastd::output",
            HF_JOB_ID = self.job_id,
            HF_CHAIN = %self.chain,
            HF_PROCESS = %self.process,
            HF_ACTIVITY = %self.activity,
            HF_ATTEMPT = self.attempt,
            "{}",
            line.trim_end_matches('\r')
        );
    }

    /// The stream ended: forward a last unterminated line, and say how many
    /// lines the budget held back.
    fn finish(mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line);
        }
        if self.dropped > 0 {
            tracing::warn!(
                HF_JOB_ID = self.job_id,
                HF_CHAIN = %self.chain,
                HF_PROCESS = %self.process,
                HF_ACTIVITY = %self.activity,
                HF_ATTEMPT = self.attempt,
                dropped = self.dropped,
                "{} output lines were not forwarded to the journal (over {JOURNAL_LINES_PER_SECOND} a second); `hfctl logs` has them all",
                self.dropped
            );
        }
    }
}

/// Live attempts' log growth, so followers wait for a signal rather than poll.
#[derive(Clone, Default)]
pub struct LogHub {
    live: Arc<Mutex<HashMap<AttemptKey, watch::Receiver<u64>>>>,
}

impl LogHub {
    /// Register a live attempt; the returned sender is dropped when it ends.
    pub fn register(&self, key: AttemptKey) -> watch::Sender<u64> {
        let (tx, rx) = watch::channel(0);
        if let Ok(mut live) = self.live.lock() {
            live.insert(key, rx);
        }
        tx
    }

    pub fn unregister(&self, key: AttemptKey) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&key);
        }
    }

    /// A receiver that changes as the attempt's log grows, or None when the
    /// attempt is not running.
    pub fn watch(&self, key: AttemptKey) -> Option<watch::Receiver<u64>> {
        self.live.lock().ok()?.get(&key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_budget_resets_each_second() {
        let budget = LineBudget::new();
        assert!(budget.take(7, 2));
        assert!(budget.take(7, 2));
        assert!(!budget.take(7, 2), "a third line in the same second");
        assert!(budget.take(8, 2), "a new second, a new budget");
    }

    #[test]
    fn forwarding_splits_lines_and_keeps_the_fields() {
        let key = AttemptKey {
            job_id: 42,
            idx: 0,
            number: 2,
            item: None,
        };
        let mut forward = JournalForward::new(key, "etl.load.facts");
        assert_eq!(
            (
                forward.chain.as_str(),
                forward.process.as_str(),
                forward.activity.as_str()
            ),
            ("etl", "load", "facts")
        );
        forward.push(b"one\ntw");
        assert_eq!(forward.partial, b"tw");
        forward.push(b"o\nthree");
        assert_eq!(forward.partial, b"three");
        let long = vec![b'x'; JOURNAL_LINE_MAX * 2];
        forward.push(&long);
        assert_eq!(
            forward.partial.len(),
            JOURNAL_LINE_MAX,
            "long lines are cut"
        );
        forward.push(b"\n");
        assert!(forward.partial.is_empty());
    }

    #[test]
    fn cap_drops_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let (tx, _rx) = watch::channel(0);
        let sink = LogSink::new(path.clone(), 10, tx);
        assert!(!path.exists(), "no file before the first byte");
        sink.append(b"123456");
        sink.append(b"789012");
        assert_eq!(sink.written(), 10);
        assert_eq!(sink.dropped(), 2);
        assert_eq!(std::fs::read(&path).expect("read"), b"1234567890");
    }
}
