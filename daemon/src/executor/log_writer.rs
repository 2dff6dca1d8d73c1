//! The one thread that writes attempt logs. The runtime's workers read the
//! children's pipes and hand the bytes here, so a write held up by the disk
//! (writeback throttling, a slow or failing device) stalls only log
//! capture, never an RPC, a timer or the engine.
//!
//! The queue is bounded: when the disk falls behind, the readers wait for
//! room, stop draining their pipes, and the children block on a full pipe,
//! the same backpressure `cat > file` would give them. Memory stays within
//! [`QUEUE_CHUNKS`] chunks of at most [`CHUNK_BYTES`] each, plus the one
//! chunk each waiting reader holds (at most one per running attempt).

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::logs::LogSink;

/// Largest chunk a reader hands over (one pipe read).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks waiting for the writer, all attempts together: at most 4 MiB.
const QUEUE_CHUNKS: usize = 64;

/// Bytes on their way to one attempt's log. The sink counts it as in
/// flight until it is appended; a chunk dropped unwritten (its reader was
/// stopped while it waited for room) is counted as dropped, so the
/// attempt's figures still add up to what was read.
pub struct Chunk {
    sink: Arc<LogSink>,
    data: Vec<u8>,
    /// Told once the bytes are in the file (a daemon note waits for it).
    done: Option<oneshot::Sender<()>>,
    pending: bool,
}

impl Chunk {
    fn new(sink: &Arc<LogSink>, data: Vec<u8>, done: Option<oneshot::Sender<()>>) -> Chunk {
        sink.queued();
        Chunk {
            sink: sink.clone(),
            data,
            done,
            pending: true,
        }
    }

    fn write(mut self) {
        self.sink.append(&self.data);
        self.pending = false;
        self.sink.unqueued(0);
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.pending {
            self.sink.unqueued(self.data.len() as u64);
        }
    }
}

enum Work {
    /// Append these bytes to their attempt's log (within its cap).
    Append(Chunk),
    /// Everything queued before this has been written.
    Flush(oneshot::Sender<()>),
}

/// A handle on the log writer thread.
#[derive(Clone)]
pub struct LogWriter {
    queue: mpsc::Sender<Work>,
}

impl LogWriter {
    /// The daemon's log writer, started on first use. None if the thread
    /// cannot be started (out of threads); callers then write in place.
    pub fn get() -> Option<&'static LogWriter> {
        static WRITER: OnceLock<Option<LogWriter>> = OnceLock::new();
        WRITER
            .get_or_init(|| match LogWriter::start() {
                Ok(writer) => Some(writer),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the log writer thread; attempt logs are written on the runtime's workers");
                    None
                }
            })
            .as_ref()
    }

    fn start() -> std::io::Result<LogWriter> {
        let (queue, mut work) = mpsc::channel::<Work>(QUEUE_CHUNKS);
        std::thread::Builder::new()
            .name("holdfastd-logs".into())
            // It copies bytes and calls write(2): a small stack is plenty.
            .stack_size(256 * 1024)
            .spawn(move || {
                while let Some(item) = work.blocking_recv() {
                    match item {
                        Work::Append(chunk) => chunk.write(),
                        Work::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(LogWriter { queue })
    }

    /// Queue bytes for `sink`, waiting for room when the writer is behind.
    /// Written in place if the writer is gone (it never exits while the
    /// daemon runs, so this is a fallback, not a path).
    pub async fn append(&self, sink: &Arc<LogSink>, data: Vec<u8>) {
        if !data.is_empty() {
            self.send(Chunk::new(sink, data, None)).await;
        }
    }

    /// Queue bytes for `sink` if there is room now; otherwise they are
    /// counted as dropped (the chunk is dropped unwritten).
    pub fn try_append(&self, sink: &Arc<LogSink>, data: Vec<u8>) {
        if !data.is_empty() {
            let _ = self
                .queue
                .try_send(Work::Append(Chunk::new(sink, data, None)));
        }
    }

    /// Queue bytes for `sink` behind what is queued already, and wait
    /// until they are in the file.
    pub async fn write(&self, sink: &Arc<LogSink>, data: Vec<u8>) {
        let (done, wait) = oneshot::channel();
        self.send(Chunk::new(sink, data, Some(done))).await;
        let _ = wait.await;
    }

    async fn send(&self, chunk: Chunk) {
        if let Err(mpsc::error::SendError(Work::Append(chunk))) =
            self.queue.send(Work::Append(chunk)).await
        {
            chunk.write();
        }
    }

    /// Wait until everything queued so far is in the files.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Work::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    #[tokio::test]
    async fn bytes_are_in_the_file_after_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job").join("a.log");
        let (tx, rx) = watch::channel(0);
        let sink = Arc::new(LogSink::new(path.clone(), 1 << 20, tx));
        let writer = LogWriter::get().expect("the writer starts");
        for i in 0..100u32 {
            writer
                .append(&sink, format!("line {i}\n").into_bytes())
                .await;
        }
        writer.append(&sink, Vec::new()).await;
        writer.flush().await;
        let text = std::fs::read_to_string(&path).expect("the log exists");
        let expected: String = (0..100u32).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected, "every chunk, in order");
        assert_eq!(sink.written(), expected.len() as u64);
        assert_eq!(*rx.borrow(), expected.len() as u64, "followers were told");
    }

    #[tokio::test]
    async fn a_note_follows_the_output_already_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.log");
        let (tx, _rx) = watch::channel(0);
        let sink = Arc::new(LogSink::new(path.clone(), 1 << 20, tx));
        let writer = LogWriter::get().expect("the writer starts");
        writer.append(&sink, b"output\n".to_vec()).await;
        sink.note("timeout after 1s").await;
        sink.settle().await;
        assert_eq!(
            std::fs::read_to_string(&path).expect("the log exists"),
            "output\n[holdfast] timeout after 1s\n"
        );
    }

    #[test]
    fn a_chunk_dropped_unwritten_is_counted_as_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let (tx, _rx) = watch::channel(0);
        let sink = Arc::new(LogSink::new(path.clone(), 1 << 20, tx));
        let chunk = Chunk::new(&sink, b"lost".to_vec(), None);
        drop(chunk);
        assert_eq!((sink.written(), sink.dropped()), (0, 4));
        assert!(!path.exists(), "nothing was written");
    }
}
