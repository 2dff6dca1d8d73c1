//! Reading a file another host appends to (a Slurm job's output or control
//! file on shared storage) as a stream that ends only once the job ended
//! and everything it wrote was read.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

/// How often a file at its end is looked at again. Shared file systems
/// (NFS) send no change notifications, so this is a bounded poll.
const RECHECK: Duration = Duration::from_millis(200);

/// An [`AsyncRead`] over a growing file: at its end it waits and reads
/// again, until `finished` is set; then one last read to the end, and EOF.
/// A file that does not exist yet is waited for the same way.
pub struct Tail {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    finished: Arc<AtomicBool>,
    last_pass: bool,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where reading starts once the file is open.
    start: u64,
}

impl Tail {
    /// Read `path` from its start.
    pub fn new(path: PathBuf, finished: Arc<AtomicBool>) -> Tail {
        Tail {
            path,
            file: None,
            finished,
            last_pass: false,
            wait: None,
            start: 0,
        }
    }

    /// Read from byte `offset` on instead of the start: what was before
    /// it was read by an earlier daemon.
    pub fn starting_at(mut self, offset: u64) -> Tail {
        self.start = offset;
        self
    }

    /// At the end for now: EOF if the writer is done, else wait.
    fn at_end(&mut self) -> bool {
        if self.last_pass {
            return true;
        }
        if self.finished.load(Ordering::Acquire) {
            // Whatever was written before the end was signalled is read
            // in one more pass.
            self.last_pass = true;
        } else {
            self.wait = Some(Box::pin(tokio::time::sleep(RECHECK)));
        }
        false
    }
}

impl AsyncRead for Tail {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(wait) = this.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                this.wait = None;
            }
            let Some(file) = this.file.as_mut() else {
                match std::fs::File::open(&this.path) {
                    Ok(mut file) => {
                        if this.start > 0 {
                            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(this.start))?;
                        }
                        this.file = Some(tokio::fs::File::from_std(file));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if this.at_end() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            };
            let before = buf.filled().len();
            ready!(Pin::new(file).poll_read(cx, buf))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if this.at_end() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Lines appended while the tail waits are read, and the stream ends
    /// once the writer is done.
    #[tokio::test]
    async fn follows_a_growing_file_until_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let finished = Arc::new(AtomicBool::new(false));
        let mut tail = Tail::new(path.clone(), finished.clone());
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::fs::write(&path, "one\n").expect("write");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            std::io::Write::write_all(&mut f, b"two\n").expect("append");
            finished.store(true, Ordering::Release);
        });
        let mut text = String::new();
        tail.read_to_string(&mut text).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(text, "one\ntwo\n");
    }
}
