//! Attempt log files: stdout and stderr copied into one capped file, and a
//! hub that lets `job.follow_logs` wake up when a live log grows.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Identifies one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    pub job_id: u64,
    pub idx: usize,
    pub number: u32,
}

/// The path of an attempt's log. Activity paths are validated names
/// (`[a-z0-9_-]` and dots), so they are safe as file names.
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
    file: OnceLock<Option<File>>,
    cap: u64,
    written: AtomicU64,
    dropped: AtomicU64,
    notify: watch::Sender<u64>,
}

impl LogSink {
    pub fn new(path: PathBuf, cap: u64, notify: watch::Sender<u64>) -> LogSink {
        LogSink {
            path,
            file: OnceLock::new(),
            cap,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            notify,
        }
    }

    /// The log file, created (with its job directory) on first use. None if
    /// it cannot be created; the bytes are then counted as dropped.
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
                    .map_err(|e| tracing::warn!(path = %self.path.display(), error = %e, "cannot create an attempt log"))
                    .ok()
            })
            .as_ref()
    }

    /// Append what fits under the cap; count the rest as dropped.
    pub fn append(&self, data: &[u8]) {
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
    /// past `log_max_bytes`, and `written` counts every byte in it.
    pub fn note(&self, text: &str) {
        let line = format!("[holdfast] {text}\n");
        self.append(line.as_bytes());
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Acquire)
    }
}

/// Copy a child's stream into the sink until EOF. Reads never stop, even
/// past the cap, so a child writing a gigabyte is never stalled.
pub async fn copy_stream(mut stream: impl AsyncRead + Unpin, sink: Arc<LogSink>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => sink.append(&buf[..n]),
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
