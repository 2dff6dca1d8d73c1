//! The Unix socket: binding it safely (replacing a stale socket, refusing to
//! steal a live one), its permissions, and the accept loop that tags every
//! connection with the caller's peer credentials before handing it to
//! jsonrpsee (HTTP and WebSocket on the same socket), within the caps of
//! [`Limits`], after the protocol check of one-shot calls (`protocol`).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{
    HttpRequest, Server, ServerConfig, serve_with_graceful_shutdown, stop_channel,
};
use tokio::net::UnixListener;

use super::RpcServer;
use super::limits::Limits;
use super::named_params::NamedParams;
use crate::access::user_names::UserNames;
use crate::engine::Caller;
use holdfast_api::rpc::HoldfastServer;

/// The largest answer jsonrpsee sends; a bigger one is answered with an
/// error instead.
pub(super) const MAX_RESPONSE_BYTES: u32 = 64 << 20;

/// Longest time one HTTP request (or WebSocket upgrade) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another holdfastd is already serving on {0}; stop it first or pass --socket")]
    InUse(PathBuf),
    #[error("{path} exists and is not a socket; remove it or pass --socket")]
    NotASocket { path: PathBuf },
    #[error("cannot prepare socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create the socket's missing directories with their mode set explicitly
/// (whatever the umask): 0700 when `private_dir` (user mode), else 0755 so
/// members of the socket's group can reach it. A directory that exists
/// keeps its mode.
pub fn create_dir(path: &Path, private_dir: bool) -> Result<(), SocketError> {
    use std::os::unix::fs::DirBuilderExt;
    let mode = if private_dir { 0o700 } else { 0o755 };
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                    .map_err(io(d))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(d)(e)),
        }
    }
    Ok(())
}

/// Bind the socket at `path`. `mode` is applied to the socket file once
/// `group` (if any) is given it; `group_wait` is how long the user
/// database is waited for, and how often it is asked again once that
/// passed (`user_database_wait`, `run_as_recheck`). In user mode the
/// directory is made private to the user as well. The caller has
/// set the umask to 0077 (see `store::private::restrict_umask`), so the
/// socket is created 0700 or tighter and is never reachable by anyone the
/// configured mode and group do not let in, not even until its `chmod`.
pub fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
    group_wait: (Duration, Duration),
    private_dir: bool,
) -> Result<UnixListener, SocketError> {
    create_dir(path, private_dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket file: live if something answers, stale otherwise.
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                Err(_) => {
                    tracing::info!(socket = %path.display(), "replacing a stale socket");
                    std::fs::remove_file(path).map_err(io(path))?;
                }
            }
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io(path))?;
    // The group first, then the mode: never open to whatever group the file
    // happened to get, not even for a moment (`socket_group`).
    match group {
        Some(group) => super::socket_group::share(path, mode, group, group_wait.0, group_wait.1),
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
    }
    .map_err(io(path))?;
    Ok(listener)
}

/// The caller behind a connection, from SO_PEERCRED. Its `user` is filled
/// in for each request, off the accept loop ([`UserNames`]).
fn caller_of(stream: &tokio::net::UnixStream) -> Option<Caller> {
    let cred = stream.peer_cred().ok()?;
    let uid = cred.uid();
    let user = String::new();
    Some(Caller {
        uid,
        gid: cred.gid(),
        groups: peer_groups(stream),
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        user,
    })
}

/// The connecting process's supplementary groups (SO_PEERGROUPS, Linux
/// 4.13+), so a group gained with `newgrp`, `sg` or a service's
/// `SupplementaryGroups=` counts as the socket's permissions do. Empty when
/// the kernel cannot tell.
#[allow(unsafe_code)]
fn peer_groups(stream: &tokio::net::UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    // The generic value; the architectures that number socket options
    // differently (sparc, parisc, mips, alpha) are not targets here.
    const SO_PEERGROUPS: nix::libc::c_int = 59;
    if !cfg!(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x"
    )) {
        return Vec::new();
    }
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * size_of::<nix::libc::gid_t>()) as nix::libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes and outlives the call; the
        // kernel writes at most `len` bytes and sets `len` to what it needs.
        let rc = unsafe {
            nix::libc::getsockopt(
                stream.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / size_of::<nix::libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(nix::libc::ERANGE) {
            break;
        }
        groups.resize(count.max(groups.len() * 2), 0);
    }
    Vec::new()
}

/// Messages (responses and subscription notifications) queued per
/// connection before its subscriptions wait for the client to read: with
/// log chunks of at most 64 KiB this bounds what a client that never reads
/// can make the daemon hold.
const MESSAGE_BUFFER: u32 = 16;
/// First and longest pause of the accept loop when the daemon or the system
/// is out of file descriptors (the pending connection stays in the backlog,
/// so retrying at once would spin).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// At most one warning of each kind per this long; the others are counted
/// into the next one.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning that may repeat many times a second (a refused connection, a
/// failed accept): logged at most once per [`WARN_EVERY`], with how many
/// were not logged since.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttled {
    /// `Some(unlogged since the last warning)` when this one is to be
    /// logged.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + WARN_EVERY) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// Refused clients waiting for their request head at once; the next one
/// closes the one that has waited longest. Each holds a descriptor for at
/// most [`TURN_AWAY_WITHIN`], out of the reserve the connection cap leaves.
const TURNING_AWAY: usize = 32;
/// How long a refused client has to send its request head and take the
/// answer.
const TURN_AWAY_WITHIN: Duration = Duration::from_secs(1);
/// Most of a refused client's request head that is read.
const TURN_AWAY_HEAD: usize = 16 << 10;

/// Whether `head` holds a whole HTTP request head.
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Turn a refused client away with an HTTP 503 carrying the reason. Its
/// request head is read first (closing a socket with unread data resets
/// it, and the client would see a broken pipe instead of the reason).
///
/// A client that sent its head before it was accepted (hfctl and every
/// WebSocket client write it right after connecting) is answered at once,
/// without waiting and without a slot, so clients that connect and send
/// nothing cannot keep the others from hearing why they were refused.
/// Only a client whose head is not there yet waits, for at most
/// [`TURN_AWAY_WITHIN`], in one of the [`TURNING_AWAY`] places; with every
/// place taken, the client that has waited longest is closed without an
/// answer. A flood of silent connections so only ever displaces itself: a
/// client that sends its head within a moment of connecting hears why.
fn turn_away(stream: tokio::net::UnixStream, why: String, waiting: &mut TurningAway) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{why}",
        why.len()
    );
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < TURN_AWAY_HEAD && !head_complete(&head) {
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return,
        }
    }
    if head_complete(&head) || head.len() >= TURN_AWAY_HEAD {
        // A fresh socket's send buffer takes the few hundred bytes whole;
        // if it does not, the client is closed without an answer.
        let _ = stream.try_write(response.as_bytes());
        return;
    }
    let mut stream = stream;
    waiting.push(tokio::spawn(async move {
        let answer = async {
            while head.len() < TURN_AWAY_HEAD && !head_complete(&head) {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        };
        let _ = tokio::time::timeout(TURN_AWAY_WITHIN, answer).await;
    }));
}

/// The refused clients waiting for their request head, oldest first.
#[derive(Debug, Default)]
struct TurningAway(std::collections::VecDeque<tokio::task::JoinHandle<()>>);

impl TurningAway {
    /// Keep `task` among the waiting, closing the longest waiting one when
    /// [`TURNING_AWAY`] are waiting already.
    fn push(&mut self, task: tokio::task::JoinHandle<()>) {
        self.0.retain(|t| !t.is_finished());
        if self.0.len() >= TURNING_AWAY
            && let Some(oldest) = self.0.pop_front()
        {
            oldest.abort();
        }
        self.0.push_back(task);
    }
}

/// Serve connections until `stopped` resolves; then let open connections
/// finish their requests.
///
/// Every connection holds a slot of [`Limits`] while it is open, so idle
/// connections cannot use up the daemon's file descriptors: over the cap
/// a connection is accepted (to take it off the backlog), answered 503
/// and closed. When `accept` itself fails for lack of file descriptors the
/// loop backs off instead of spinning, and says so at most every
/// [`WARN_EVERY`].
pub async fn serve(listener: UnixListener, server: RpcServer, stopped: impl Future<Output = ()>) {
    let (stop_handle, server_handle) = stop_channel();
    let limits = Arc::new(Limits::new(&server.settings));
    let names = Arc::new(UserNames::default());
    // jsonrpsee's own count (requests in flight and WebSocket connections)
    // never refuses what `limits` let in, administrators' room included.
    let served = limits.connection_cap() + super::limits::ADMIN_ROOM;
    let config = ServerConfig::builder()
        .max_request_body_size(server.settings.max_request_bytes)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .max_connections(u32::try_from(served).unwrap_or(u32::MAX))
        .max_subscriptions_per_connection(256)
        .set_message_buffer_capacity(MESSAGE_BUFFER)
        .build();
    // An RPC middleware layer added here must be applied in
    // `ws_relay::Direct` too, which calls methods itself (only
    // `NamedParams` is, through `named_params::refuse`).
    let builder = Server::builder()
        .set_config(config)
        .set_rpc_middleware(RpcServiceBuilder::new().layer_fn(NamedParams::new))
        .to_service_builder();
    let engine = server.engine.clone();
    let max_bytes = server.settings.max_request_bytes;
    let methods = server.into_rpc();
    tokio::pin!(stopped);
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut accept_failures = Throttled::default();
    let mut refusals = Throttled::default();
    let mut turning_away = TurningAway::default();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF.0;
                    stream
                }
                Err(e) => {
                    let exhausted = crate::executor::is_out_of_files(e.raw_os_error())
                        || matches!(e.raw_os_error(), Some(nix::libc::ENOBUFS | nix::libc::ENOMEM));
                    if let Some(unlogged) = accept_failures.due() {
                        if exhausted {
                            tracing::warn!(error = %e, unlogged, "cannot accept connections: out of file descriptors or memory; pausing accepts");
                        } else {
                            tracing::warn!(error = %e, unlogged, "accept failed");
                        }
                    }
                    if !exhausted {
                        // One connection's problem (ECONNABORTED and the
                        // like): go on with the next.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut stopped => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let Some(caller) = caller_of(&stream) else {
            if let Some(unlogged) = refusals.due() {
                tracing::warn!(unlogged, "connection without peer credentials refused");
            }
            continue;
        };
        let permit = match limits.connect(caller.uid, crate::access::is_admin(&caller)) {
            Ok(permit) => permit,
            Err(refused) => {
                if let Some(unlogged) = refusals.due() {
                    tracing::warn!(uid = caller.uid, unlogged, "connection refused: {refused}");
                }
                turn_away(stream, refused.to_string(), &mut turning_away);
                continue;
            }
        };
        let builder = builder.clone();
        let methods = methods.clone();
        let stop = stop_handle.clone();
        let limits = Arc::clone(&limits);
        // The slot is held by this connection's service (dropped when hyper
        // is done with the connection) and by the request extensions, which
        // a WebSocket connection keeps for as long as it lives after the
        // upgrade; it is given back when both are gone.
        let permit = Arc::new(permit);
        let engine = engine.clone();
        let stop_ws = stop_handle.clone();
        // What a WebSocket connection's own calls see (`ws_relay::Direct`),
        // as the calls it relays do through `inner`.
        let connection = (
            caller.clone(),
            Arc::clone(&names),
            Arc::clone(&limits),
            Arc::clone(&permit),
            jsonrpsee::Methods::from(methods.clone()),
        );
        // jsonrpsee with the caller's extensions.
        let names = Arc::clone(&names);
        let inner = tower::service_fn(move |mut request: HttpRequest| {
            let mut caller = caller.clone();
            let names = Arc::clone(&names);
            request.extensions_mut().insert(Arc::clone(&limits));
            request.extensions_mut().insert(Arc::clone(&permit));
            let mut service = builder.clone().build(methods.clone(), stop.clone());
            async move {
                // A WebSocket connection's relayed side carries the caller
                // named once at its upgrade (`ws_relay`), so that its
                // relayed calls and those the relay makes itself name the
                // same user; anything else is named here. Extensions never
                // come from the wire.
                if request.extensions().get::<Caller>().is_none() {
                    caller.user = names.name(caller.uid).await;
                    request.extensions_mut().insert(caller);
                }
                crate::access::groups::GROUPS.refresh().await;
                tower::Service::call(&mut service, request).await
            }
        });
        let service = tower::service_fn(move |request: HttpRequest<_>| {
            let stop = stop_ws.clone();
            // A one-shot call of another protocol is refused before
            // anything reads it (`protocol`).
            let refusal = super::protocol::refusal(request.headers());
            // `GET /metrics` is answered here, before jsonrpsee: anyone
            // who may connect to the socket may read it, as job.list.
            let metrics = (request.method().as_str() == "GET"
                && request.uri().path() == "/metrics")
                .then(|| {
                    let accept = request
                        .headers()
                        .get("accept")
                        .and_then(|v| v.to_str().ok());
                    (engine.clone(), crate::metrics::Format::from_accept(accept))
                });
            // The JSON-RPC envelope rules jsonrpsee does not keep are
            // applied in front of it, to HTTP bodies (`envelope`) and
            // WebSocket messages (`ws_relay`).
            let request = request.map(jsonrpsee::server::HttpBody::new);
            let inner = inner.clone();
            // WebSocket messages too, through a relay (`ws_relay`).
            let upgrade = jsonrpsee::server::ws::is_upgrade_request(&request)
                .then(|| (stop.clone().shutdown(), connection.clone()));
            // A request whose body never completes would hold one of the
            // connection permits forever; every call (and a WebSocket
            // upgrade) answers well within this.
            async move {
                if let Some(refusal) = refusal {
                    return Ok(refusal);
                }
                if let Some((engine, format)) = metrics {
                    return Ok(metrics_response(&engine, format).await);
                }
                if let Some((stopped, (mut caller, names, limits, permit, methods))) = upgrade {
                    caller.user = names.name(caller.uid).await;
                    let direct = super::ws_relay::Direct::new(methods, caller, limits, permit);
                    return super::ws_relay::upgrade(request, inner, max_bytes, direct, stopped);
                }
                let call = super::envelope::serve_http(inner, request, max_bytes);
                match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                    Ok(result) => result.map(|mut answer| {
                        super::protocol::stamp(&mut answer);
                        answer
                    }),
                    Err(_) => Err("request not completed in time".into()),
                }
            }
        });
        tokio::spawn(serve_with_graceful_shutdown(
            stream,
            service,
            stop_handle.clone().shutdown(),
        ));
    }
    let _ = server_handle.stop();
}

/// The answer to `GET /metrics` on the socket.
async fn metrics_response(
    engine: &crate::engine::EngineHandle,
    format: crate::metrics::Format,
) -> jsonrpsee::server::HttpResponse {
    let text = crate::metrics::serve::answer(engine, format).await;
    let mut response =
        jsonrpsee::server::HttpResponse::new(jsonrpsee::server::HttpBody::from(text));
    if let Ok(value) = format.content_type().parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}
