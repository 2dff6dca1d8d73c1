//! A JSON-RPC client over the daemon's Unix socket: WebSocket (for
//! subscriptions) on a `UnixStream`, so calls and follows share one transport.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::client_transport::ws::{Url, WsHandshakeError, WsTransportClientBuilder};
use jsonrpsee::core::client::{Client, ClientBuilder};
use tokio::net::UnixStream;

/// Why a connection to the daemon could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens on the socket (missing file or connection refused).
    #[error("no daemon answers on {path}: {source}")]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket exists but we may not open it.
    #[error("permission denied on {path}; ask to be added to the socket's group")]
    PermissionDenied { path: PathBuf },
    /// The connection was taken into the daemon's backlog, then reset
    /// before it was served: a daemon stopped or killed as the client
    /// connected. Callers that outlive a restart try again.
    #[error("the daemon on {path} dropped the connection as it was opened: {source}")]
    Dropped {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's listen backlog is full: it runs but takes connections
    /// more slowly than they come. Worth trying again shortly.
    #[error(
        "the daemon on {path} is not taking connections as fast as they come (its backlog is full); try again"
    )]
    Busy { path: PathBuf },
    /// The WebSocket handshake failed.
    #[error("handshake with the daemon on {path} failed: {message}")]
    Handshake { path: PathBuf, message: String },
}

/// Connect to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<Client, ConnectError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| crate::oneshot::connect_error(socket, source))?;
    // The host part is never resolved: the stream is already connected.
    let url = Url::parse("ws://localhost/").map_err(|e| ConnectError::Handshake {
        path: socket.to_path_buf(),
        message: e.to_string(),
    })?;
    let (sender, receiver) = WsTransportClientBuilder::default()
        .max_request_size(16 * 1024 * 1024)
        .max_response_size(64 * 1024 * 1024)
        .build_with_stream(url, stream)
        .await
        .map_err(|e| ConnectError::Handshake {
            path: socket.to_path_buf(),
            message: match e {
                // The daemon's answer over its connection caps.
                WsHandshakeError::Rejected { status_code: 503 } => {
                    "it serves as many connections as it may (overall, or for this user); \
                     close idle clients or try again later"
                        .to_string()
                }
                e => e.to_string(),
            },
        })?;
    Ok(ClientBuilder::default()
        .request_timeout(Duration::from_secs(120))
        .max_buffer_capacity_per_subscription(4096)
        .build_with_tokio(sender, receiver))
}
