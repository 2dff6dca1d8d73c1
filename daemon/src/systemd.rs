//! What systemd hands holdfastd and what holdfastd tells it back: the
//! listening socket of socket activation (`LISTEN_FDS`), readiness and status
//! lines (`NOTIFY_SOCKET`), and watchdog pings (`WATCHDOG_USEC`).
//!
//! All of it is read once at start, before any thread exists, and removed
//! from the environment: activities inherit the daemon's environment, and
//! none of them should find another process's notify socket or watchdog.
//!
//! The watchdog is fed only when the engine loop answers a probe (the same
//! request `daemon.info` makes for its counts), so what systemd restarts is a
//! wedged engine, not merely a dead process. While the engine is held back
//! (a read-only state directory) there is no loop to probe: `STATUS=` says
//! why and the watchdog is fed, since the socket is served.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::engine::{Counts, EngineHandle};

/// How often `STATUS=` is refreshed when the watchdog asks for nothing faster.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// Why the socket systemd passed cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(
        "systemd passed {0} sockets but holdfastd serves exactly one; give holdfast.socket a single ListenStream="
    )]
    Count(usize),
    #[error("the socket systemd passed is not a Unix stream socket ({0}); check holdfast.socket")]
    NotUnixStream(#[source] std::io::Error),
}

/// What systemd passed at start.
pub struct Systemd {
    notifier: Notifier,
    watchdog: Option<Duration>,
    listener: Option<Result<UnixListener, ActivationError>>,
}

impl Systemd {
    /// Take systemd's variables out of the environment. Call it first thing
    /// in `main`, before the runtime or anything else starts a thread.
    pub fn from_env() -> Systemd {
        // listenfd checks LISTEN_PID and removes LISTEN_FDS and LISTEN_PID.
        let mut fds = listenfd::ListenFd::from_env();
        let listener = match fds.len() {
            0 => None,
            1 => Some(match fds.take_unix_listener(0) {
                Ok(Some(listener)) => Ok(listener),
                Ok(None) => Err(ActivationError::Count(0)),
                Err(e) => Err(ActivationError::NotUnixStream(e)),
            }),
            n => Some(Err(ActivationError::Count(n))),
        };
        let notifier = Notifier {
            address: std::env::var_os("NOTIFY_SOCKET").and_then(|s| notify_address(&s)),
        };
        let watchdog = sd_notify::watchdog_enabled();
        remove_from_environment(&[
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDNAMES",
        ]);
        Systemd {
            notifier,
            watchdog,
            listener,
        }
    }

    /// The listening socket systemd passed (holdfast.socket), if any.
    pub fn take_listener(&mut self) -> Result<Option<UnixListener>, ActivationError> {
        self.listener.take().transpose()
    }

    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// Send `STATUS=` with the engine's counts, and feed the watchdog, each
    /// time the engine answers; until the engine has stopped. Nothing to do
    /// (and no task) when systemd is not listening.
    pub fn start_heartbeat(&self, engine: EngineHandle) -> Option<tokio::task::JoinHandle<()>> {
        self.notifier.address.as_ref()?;
        let period = self
            .watchdog
            .map_or(STATUS_PERIOD, |w| (w / 3).min(STATUS_PERIOD));
        Some(tokio::spawn(heartbeat(
            self.notifier.clone(),
            engine,
            period,
            self.watchdog.is_some(),
        )))
    }
}

async fn heartbeat(notifier: Notifier, engine: EngineHandle, period: Duration, watchdog: bool) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(reason) = engine.held() {
            let mut states = vec![NotifyState::Status(&reason)];
            if watchdog {
                states.push(NotifyState::Watchdog);
            }
            notifier.send(&states);
            continue;
        }
        match tokio::time::timeout(period, engine.probe()).await {
            Ok(Some(counts)) => {
                let status = status_line(&counts);
                let mut states = vec![NotifyState::Status(&status)];
                if watchdog {
                    states.push(NotifyState::Watchdog);
                }
                notifier.send(&states);
            }
            // The engine has stopped: the daemon is on its way out.
            Ok(None) => return,
            Err(_) => tracing::warn!(
                waited = ?period,
                "the engine loop did not answer; the watchdog is not fed until it does"
            ),
        }
    }
}

/// The `STATUS=` text for `systemctl status holdfast`.
pub fn status_line(counts: &Counts) -> String {
    if counts.running_jobs == 0 && counts.queued_jobs == 0 {
        return "idle: no job running or queued".to_string();
    }
    format!(
        "{} {} running ({} {}), {} queued",
        counts.running_jobs,
        plural(counts.running_jobs, "job", "jobs"),
        counts.running_activities,
        plural(counts.running_activities, "activity", "activities"),
        counts.queued_jobs,
    )
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Sends state lines to systemd's notify socket; does nothing when there is
/// none (not started by systemd, or a supervisor that does not listen).
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    address: Option<SocketAddr>,
}

impl Notifier {
    pub fn send(&self, states: &[NotifyState<'_>]) {
        let Some(address) = &self.address else {
            return;
        };
        let mut message = String::new();
        for state in states {
            message.push_str(&state.to_string());
            message.push('\n');
        }
        let sent =
            UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), address));
        if let Err(error) = sent {
            tracing::debug!(%error, "cannot notify systemd");
        }
    }

    /// Startup is done: the socket is served and recovery has finished.
    pub fn ready(&self, counts: &Counts) {
        self.ready_with(&status_line(counts));
    }

    /// Startup is done, with this status (the engine is held back: the
    /// socket is served, for reads).
    pub fn ready_with(&self, status: &str) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(status),
            NotifyState::Watchdog,
        ]);
    }

    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// A reload (SIGHUP) begins; call [`Notifier::reloaded`] when it is done.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    pub fn reloaded(&self) {
        self.send(&[NotifyState::Ready, NotifyState::Status("reloaded")]);
    }

    /// A reload ended without reading the files: ready again, on what was
    /// loaded before.
    pub fn reload_failed(&self, why: &str) {
        let status = format!("reload failed: {why}");
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: interrupting running activities"),
        ]);
    }

    /// Feed the watchdog during a long step of startup.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// `NOTIFY_SOCKET` is a path, or `@name` for an abstract socket.
fn notify_address(value: &OsStr) -> Option<SocketAddr> {
    let bytes = value.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(std::path::Path::new(value)),
        // vsock: and other forms are not used for system services.
        None => return None,
    };
    address.ok()
}

#[allow(unsafe_code)]
fn remove_from_environment(names: &[&str]) {
    for name in names {
        // SAFETY: called from `main` before the runtime (or anything else)
        // starts a thread, so nothing can read the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}

/// SIGHUP's reloads, told to systemd (`RELOADING=1`, then `READY=1`, as
/// `systemctl status` shows; the unit's own `systemctl reload` goes
/// through `hfctl reload` instead, which waits for the answer): one task
/// reads the workflows again once for any number of SIGHUPs that came while
/// it was busy, with `RELOADING=1` before and `READY=1` after each read, so
/// the two always pair up; it says nothing more once the daemon stops. It
/// runs apart from `main`'s loop, which a read that waits on the user
/// database must not keep from seeing SIGTERM.
pub struct SighupReloads {
    asked: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl SighupReloads {
    pub fn start(handle: EngineHandle, notifier: Notifier) -> SighupReloads {
        let asked = Arc::new(tokio::sync::Notify::new());
        let signalled = asked.clone();
        let task = tokio::spawn(async move {
            loop {
                signalled.notified().await;
                notifier.reloading();
                // READY=1 after every RELOADING=1, whatever the answer:
                // systemd waits for it (`stop` ends this task before
                // STOPPING=1 goes out).
                match handle.reload().await {
                    Ok(()) => notifier.reloaded(),
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: the workflows were not read again");
                        notifier.reload_failed(&error.to_string());
                    }
                }
            }
        });
        SighupReloads { asked, task }
    }

    /// A SIGHUP: read the workflows again (once more, if a read is under
    /// way).
    pub fn ask(&self) {
        self.asked.notify_one();
    }

    /// The daemon stops: no more reloads, nor their notifications.
    pub fn stop(&self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            status_line(&Counts::default()),
            "idle: no job running or queued"
        );
        let counts = Counts {
            queued_jobs: 2,
            running_jobs: 1,
            running_activities: 3,
        };
        assert_eq!(
            status_line(&counts),
            "1 job running (3 activities), 2 queued"
        );
    }

    #[test]
    fn notify_addresses() {
        let path = notify_address(OsStr::new("/run/systemd/notify")).expect("a path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = notify_address(OsStr::new("@/org/systemd/notify")).expect("abstract");
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"/org/systemd/notify"[..])
        );
        assert!(notify_address(OsStr::new("vsock:2:1234")).is_none());
    }

    #[test]
    fn notifier_sends_one_datagram_of_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            address: Some(SocketAddr::from_pathname(&path).expect("address")),
        };
        notifier.ready(&Counts::default());
        let mut buffer = [0u8; 512];
        let n = receiver.recv(&mut buffer).expect("a datagram");
        assert_eq!(
            std::str::from_utf8(&buffer[..n]).expect("text"),
            "READY=1\nSTATUS=idle: no job running or queued\nWATCHDOG=1\n"
        );
    }

    #[test]
    fn notifier_without_socket_is_silent() {
        Notifier::default().stopping();
    }
}
