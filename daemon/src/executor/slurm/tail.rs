//! Reading a file another host appends to (a Slurm job's output or control
//! file on shared storage) as a stream that ends only once the job ended
//! and everything it wrote was read.
//!
//! The file lies in a directory the job's user owns, so that user may put
//! anything at its path. It is opened without following a symbolic link
//! and without blocking (a FIFO), and read only when it is a regular file
//! owned by that user: otherwise the daemon, which may be root, would copy
//! whatever the link names (`/etc/shadow`) into a log its readers see.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// Told why a file was not read (once), for the attempt's log.
pub type OnRefused = Box<dyn Fn(&str) + Send>;

/// An [`AsyncRead`] over a growing file: at its end it waits and reads
/// again, until `finished` is set; then one last read to the end, and EOF.
/// A file that does not exist yet is waited for the same way.
pub struct Tail {
    path: PathBuf,
    /// The only owner whose file is read (the job's user).
    owner: u32,
    on_refused: OnRefused,
    file: Option<tokio::fs::File>,
    finished: Arc<AtomicBool>,
    last_pass: bool,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where reading starts once the file is open.
    start: u64,
}

impl Tail {
    /// Read `path` from its start, provided it is a regular file owned by
    /// `owner`; otherwise `on_refused` is told why and the stream fails.
    pub fn new(
        path: PathBuf,
        finished: Arc<AtomicBool>,
        owner: u32,
        on_refused: OnRefused,
    ) -> Tail {
        Tail {
            path,
            owner,
            on_refused,
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

    /// Open the file as it is at its path, never through a link: None
    /// while it does not exist, an error saying why it is not read.
    fn open(&self) -> std::io::Result<Option<std::fs::File>> {
        let refused = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} not read: {why}", self.path.display()),
            )
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(refused("it is a symbolic link".into()));
            }
            Err(e) => return Err(refused(e.to_string())),
        };
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(refused("it is not a regular file".into()));
        }
        if meta.uid() != self.owner {
            return Err(refused(format!(
                "it belongs to uid {}, not to the job's user (uid {})",
                meta.uid(),
                self.owner
            )));
        }
        Ok(Some(file))
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
                match this.open() {
                    Ok(Some(mut file)) => {
                        if this.start > 0 {
                            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(this.start))?;
                        }
                        this.file = Some(tokio::fs::File::from_std(file));
                    }
                    Ok(None) => {
                        if this.at_end() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(e) => {
                        (this.on_refused)(&e.to_string());
                        return Poll::Ready(Err(e));
                    }
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
        let mut tail = Tail::new(path.clone(), finished.clone(), own_uid(), Box::new(|_| {}));
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

    fn own_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// A refused file: its reason, as told to `on_refused` and as the
    /// stream's error.
    async fn refusal(path: PathBuf, owner: u32) -> String {
        let told = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = told.clone();
        let finished = Arc::new(AtomicBool::new(true));
        let mut tail = Tail::new(
            path,
            finished,
            owner,
            Box::new(move |why| *sink.lock().expect("lock") = why.to_string()),
        );
        let mut text = String::new();
        let error = tokio::time::timeout(Duration::from_secs(5), tail.read_to_string(&mut text))
            .await
            .expect("a refusal never blocks")
            .expect_err("the file is refused");
        assert!(text.is_empty(), "nothing read: {text:?}");
        let told = told.lock().expect("lock").clone();
        assert_eq!(told, error.to_string());
        told
    }

    /// A symbolic link (to a file only the daemon may read), a FIFO (whose
    /// open would block) and a file of another owner are never read.
    #[tokio::test]
    async fn links_fifos_and_other_owners_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only\n").expect("write");
        let link = dir.path().join("output");
        std::os::unix::fs::symlink(&secret, &link).expect("symlink");
        assert!(refusal(link, own_uid()).await.contains("symbolic link"));

        let fifo = dir.path().join("control");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        assert!(
            refusal(fifo, own_uid())
                .await
                .contains("not a regular file")
        );

        let other = own_uid().wrapping_add(1);
        assert!(refusal(secret, other).await.contains("belongs to uid"));
    }
}
