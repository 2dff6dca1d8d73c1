//! A checked connection to the daemon. A one-shot connection (plain HTTP
//! calls) sends hfctl's protocol number with every call and the daemon
//! refuses a call of another protocol before carrying it out; a
//! subscribing connection (WebSocket) checks it with a `daemon.info`
//! handshake before any other call. Either way a mismatch is
//! [`Error::ProtocolMismatch`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdfast_api::client::{ConnectError, connect};
use holdfast_api::oneshot::OneShot;
use holdfast_api::{DaemonInfo, PROTOCOL_VERSION};
use jsonrpsee::core::client::{ClientT, Error as ClientError};
use jsonrpsee::core::params::ObjectParams;
use serde_json::Value;

use crate::error::{Error, SocketAccess};
use crate::link::Link;

/// Which kind of connection a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Calls only: each one HTTP `POST`, no handshake round trip.
    OneShot,
    /// Subscriptions too: a WebSocket, checked with `daemon.info` first.
    Subscribing,
}

/// A connection whose daemon speaks our protocol.
pub struct Daemon {
    pub client: Link,
    pub socket: PathBuf,
    /// `daemon.info` as the WebSocket handshake read it.
    handshake: Option<DaemonInfo>,
}

impl Daemon {
    /// Open a subscribing connection to `socket` and check the protocol.
    pub async fn connect(socket: &Path) -> Result<Daemon, Error> {
        Daemon::open(socket, Transport::Subscribing).await
    }

    /// Open a one-shot connection to `socket`: the protocol is checked by
    /// the daemon with each call.
    pub async fn one_shot(socket: &Path) -> Result<Daemon, Error> {
        Daemon::open(socket, Transport::OneShot).await
    }

    async fn open(socket: &Path, transport: Transport) -> Result<Daemon, Error> {
        match transport {
            Transport::OneShot => {
                let client = OneShot::connect(socket).await.map_err(connect_error)?;
                Ok(Daemon {
                    client: Link::OneShot(client),
                    socket: socket.to_path_buf(),
                    handshake: None,
                })
            }
            Transport::Subscribing => {
                let client = connect(socket).await.map_err(connect_error)?;
                Daemon::handshake(Link::WebSocket(client), socket).await
            }
        }
    }

    /// Like [`Daemon::connect`] (of `transport`), but while nothing listens
    /// on the socket (missing file or refused connection), its backlog is
    /// full, or a daemon going away drops the connection (as it is opened,
    /// or during the WebSocket handshake: [`crate::error::is_lost`]), try
    /// again until `wait` has passed. Scripts that start a daemon use this
    /// to wait for it. `socket` is asked again before every try, so a socket found by
    /// discovery (the user daemon's) is picked up once the daemon creates it.
    pub async fn connect_waiting(
        socket: impl Fn() -> PathBuf,
        wait: Duration,
        transport: Transport,
    ) -> Result<Daemon, Error> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let socket = socket();
            match Daemon::open(&socket, transport).await {
                Err(error) if crate::error::is_lost(&error) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(error);
                    }
                    // The last pause ends at the deadline, so the last try
                    // happens right then.
                    tokio::time::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn handshake(client: Link, socket: &Path) -> Result<Daemon, Error> {
        let info = checked_info(&client, socket).await?;
        Ok(Daemon {
            client,
            socket: socket.to_path_buf(),
            handshake: Some(info),
        })
    }

    /// The daemon's `daemon.info`: the handshake's on a subscribing
    /// connection, else asked now.
    pub async fn info(&self) -> Result<DaemonInfo, Error> {
        match &self.handshake {
            Some(info) => Ok(info.clone()),
            None => checked_info(&self.client, &self.socket).await,
        }
    }

    /// Await one call and classify its error.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, Error> {
        call.await.map_err(|e| Error::from_client(&self.socket, e))
    }

    /// Classify an error of a subscription item (a notification the client
    /// could not decode).
    pub fn bad_item(&self, source: serde_json::Error) -> Error {
        Error::BadAnswer {
            socket: self.socket.clone(),
            source,
        }
    }
}

/// `daemon.info`, its protocol compared with ours before its shape is
/// trusted.
async fn checked_info(client: &Link, socket: &Path) -> Result<DaemonInfo, Error> {
    // Read the answer loosely first: a daemon of another protocol may
    // answer with a different shape, and the protocol number is what must
    // be reported then, not a decoding error.
    let answer: Value = client
        .request("daemon.info", ObjectParams::new())
        .await
        .map_err(|e| Error::from_client(socket, e))?;
    let theirs = answer.get("protocol").and_then(Value::as_u64);
    if theirs != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(Error::ProtocolMismatch {
            socket: socket.to_path_buf(),
            ours: PROTOCOL_VERSION,
            theirs: theirs.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        });
    }
    serde_json::from_value(answer).map_err(|source| Error::BadAnswer {
        socket: socket.to_path_buf(),
        source,
    })
}

fn connect_error(error: ConnectError) -> Error {
    match error {
        ConnectError::NotRunning { path, .. } => Error::NotRunning { socket: path },
        ConnectError::PermissionDenied { path } => Error::SocketPermission {
            access: socket_access(&path),
            socket: path,
        },
        ConnectError::Busy { path } => Error::Busy { socket: path },
        ConnectError::Dropped { path, source } => Error::Dropped {
            socket: path,
            cause: source,
        },
        ConnectError::Handshake { path, message } => Error::Handshake {
            socket: path,
            message,
        },
    }
}

/// Who may open `socket`, from its mode, owner and group, for the refusal
/// message.
fn socket_access(socket: &Path) -> SocketAccess {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(socket) {
        Ok(meta) => access_of(meta.mode() & 0o7777, meta.uid(), meta.gid()),
        // The directory itself may be closed to the caller.
        Err(_) => SocketAccess::Directory,
    }
}

fn access_of(mode: u32, uid: u32, gid: u32) -> SocketAccess {
    if mode & 0o006 == 0o006 {
        SocketAccess::Directory
    } else if mode & 0o060 == 0o060 {
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name);
        SocketAccess::Group { group }
    } else {
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        SocketAccess::Owner { owner, mode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_follows_the_socket_mode() {
        assert_eq!(
            access_of(0o660, 0, 0),
            SocketAccess::Group {
                group: "root".into()
            }
        );
        assert_eq!(
            access_of(0o600, 0, 0),
            SocketAccess::Owner {
                owner: "root".into(),
                mode: 0o600
            }
        );
        assert_eq!(access_of(0o666, 0, 0), SocketAccess::Directory);
        assert_eq!(
            SocketAccess::Owner {
                owner: "ana".into(),
                mode: 0o600
            }
            .to_string(),
            "only its owner 'ana' may use it (mode 0600); run hfctl as 'ana', or start a daemon of your own"
        );
    }
}
