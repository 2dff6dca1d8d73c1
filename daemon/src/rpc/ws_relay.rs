//! The JSON-RPC envelope rules (`envelope`) for WebSocket connections.
//!
//! jsonrpsee reads WebSocket frames itself, after the upgrade, so nothing
//! can be put in front of its parser the way `envelope::serve_http` is for
//! HTTP bodies. Instead the daemon takes the upgrade itself and relays the
//! connection: each text frame from the client goes through
//! `envelope::prepare` and on, over an in-memory pipe, to jsonrpsee served
//! exactly as on the socket (same service, same caller, same connection
//! permit); each frame jsonrpsee sends back that answers a forwarded message
//! gets its original ids back (or is dropped: notifications), everything
//! else (answers to plain requests, subscription notifications) passes as it
//! is.
//!
//! Only what needs jsonrpsee's connection takes that pipe: subscriptions
//! and their ends, batches, messages the envelope rules rewrite or answer,
//! anything that is not one well-formed call of a known method. One plain
//! call of any other method (`job.submit`, `job.get`: most of the traffic)
//! is made here (`Direct`), as jsonrpsee's own WebSocket loop makes it: the
//! same method callback, the same extensions (the caller), the same
//! parameter-name check (`named_params::refuse`), the same response cap. It
//! skips a second WebSocket framing, the pipe and jsonrpsee's connection
//! tasks, which cost the daemon about 15% of its CPU a submission at 64
//! clients (BENCHMARKS.md, "calls made without the relay's pipe").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use hyper_util::rt::TokioIo;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use jsonrpsee::types::{Params, Request};
use jsonrpsee::{ConnectionId, Extensions, MethodCallback, MethodResponse, Methods};
use soketto::connection::Error as WsError;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::envelope::{self, Front, Restore};

/// The error type of jsonrpsee's HTTP service.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the relayed connection's service answers with.
type ServiceFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

/// Bytes the in-memory pipe to jsonrpsee holds each way before the writer
/// waits: a client that does not read holds back jsonrpsee's sends (and so
/// its bounded message buffer) after this much.
const PIPE_BYTES: usize = 64 << 10;
/// Frames for the client queued between the two directions of the relay.
const OUTGOING: usize = 16;
/// The largest message read from jsonrpsee, as its own limit (its response
/// size cap). Client messages are bounded by `max_request_bytes` instead:
/// soketto makes room for a frame's whole payload as soon as its head
/// announces it, so this bound on the client side let 14 bytes per
/// connection hold 64 MiB of the daemon's memory.
const MAX_FRAME: usize = 64 << 20;

/// Messages sent on to jsonrpsee and not answered yet, per connection;
/// past this the relay reads no more from the client until an answer goes
/// out. jsonrpsee reads on whatever its client does and runs each message
/// in a task of its own that holds the answer until the client reads it,
/// so without this bound a client that writes requests and never reads
/// made the daemon hold every answer (55-byte `rpc.discover` requests: 500
/// MB for 2 MB written). The calls the relay makes itself ([`Direct`])
/// count against the same bound.
const MAX_IN_FLIGHT: usize = 64;

/// The connection id the calls made here are given. Only subscriptions
/// use one, and those go through jsonrpsee's connection.
const DIRECT_CONNECTION: ConnectionId = ConnectionId(usize::MAX);

/// Plain calls of one connection, made without the pipe to jsonrpsee.
pub struct Direct {
    methods: Methods,
    /// What every call of the connection sees: its caller, the limits and
    /// the connection's slot, as `inner` gives them to jsonrpsee.
    extensions: Extensions,
    /// One permit per call made here and per message sent on to jsonrpsee
    /// that is not answered yet: one bound for both ways.
    in_flight: Arc<Semaphore>,
}

impl Direct {
    /// The calls of a connection from `caller` (named), holding `permit`
    /// of `limits`: every call it makes carries the three, as the calls
    /// `inner` passes to jsonrpsee do.
    pub fn new(
        methods: Methods,
        caller: crate::engine::Caller,
        limits: Arc<super::limits::Limits>,
        permit: Arc<super::limits::Permit>,
    ) -> Self {
        let mut extensions = Extensions::new();
        extensions.insert(caller);
        extensions.insert(limits);
        extensions.insert(permit);
        Self {
            methods,
            extensions,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Make `message` here if it is one call of a method that answers once
    /// (not a subscription, not its end), queueing its answer on
    /// `outgoing`: `Ok(true)`. `Ok(false)` leaves it to the pipe, which
    /// answers everything else as before. An async method runs in a task of
    /// its own, after waiting while [`MAX_IN_FLIGHT`] are unanswered. Err
    /// once the client is gone.
    async fn take(&mut self, message: &[u8], outgoing: &mpsc::Sender<String>) -> Result<bool, ()> {
        // jsonrpsee looks for the opening brace within the first 128 bytes
        // only, and answers a parse error past them: so does the pipe.
        if message.iter().take(128).find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Ok(false);
        }
        let Ok(mut request) = serde_json::from_slice::<Request<'_>>(message) else {
            return Ok(false);
        };
        let callback = match self.methods.method(&request.method) {
            Some(callback @ (MethodCallback::Sync(_) | MethodCallback::Async(_))) => {
                callback.clone()
            }
            _ => return Ok(false),
        };
        // Each call decides on groups as fresh as an HTTP request's.
        crate::access::groups::GROUPS.refresh().await;
        request.extensions = self.extensions.clone();
        if let Some(refused) = super::named_params::refuse(&request) {
            return outgoing
                .send(answer_text(refused))
                .await
                .map(|()| true)
                .map_err(|_| ());
        }
        let Request {
            id,
            params,
            extensions,
            ..
        } = request;
        let params = Params::new(params.as_ref().map(|p| p.get()));
        let max = super::socket::MAX_RESPONSE_BYTES as usize;
        match callback {
            MethodCallback::Sync(callback) => {
                let answer = answer_text(callback(id, params, max, extensions));
                outgoing.send(answer).await.map_err(|_| ())?;
            }
            MethodCallback::Async(callback) => {
                let permit = Arc::clone(&self.in_flight)
                    .acquire_owned()
                    .await
                    .map_err(|_| ())?;
                let call = callback(
                    id.into_owned(),
                    params.into_owned(),
                    DIRECT_CONNECTION,
                    max,
                    extensions,
                );
                let outgoing = outgoing.clone();
                // As jsonrpsee's loop does, a call stops once nobody is left
                // to answer: the client's writer (the queue's receiver) ended.
                tokio::spawn(async move {
                    let answer = tokio::select! {
                        answer = call => Some(answer_text(answer)),
                        () = outgoing.closed() => None,
                    };
                    if let Some(answer) = answer {
                        let _ = outgoing.send(answer).await;
                    }
                    drop(permit);
                });
            }
            MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_) => {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The text of one call's answer.
fn answer_text(answer: MethodResponse) -> String {
    Box::<str>::from(answer.into_json()).into_string()
}

/// Forwarded messages whose answers may still be owed on one connection.
/// jsonrpsee answers a few of them without their id (a batch whose answers
/// are too big together), so past this many the oldest is forgotten: its
/// answer, should it come, keeps the token as id.
const MAX_PENDING: usize = 1024;

/// Forwarded messages whose answers are still owed, by token.
#[derive(Debug, Default)]
struct Pending {
    /// Token → the key of the message it belongs to.
    tokens: HashMap<String, u64>,
    /// Keys in the order the messages were forwarded.
    restores: BTreeMap<u64, Restore>,
    next: u64,
}

impl Pending {
    fn insert(&mut self, restore: Restore) {
        let key = self.next;
        self.next += 1;
        for token in restore.tokens() {
            self.tokens.insert(token.to_string(), key);
        }
        self.restores.insert(key, restore);
        while self.restores.len() > MAX_PENDING {
            if let Some((_, oldest)) = self.restores.pop_first() {
                for token in oldest.tokens() {
                    self.tokens.remove(token);
                }
            }
        }
    }

    /// The restore owed for the message `token` was forwarded in, taken
    /// out with all its tokens.
    fn take(&mut self, token: &str) -> Option<Restore> {
        let key = self.tokens.remove(token)?;
        let restore = self.restores.remove(&key)?;
        for token in restore.tokens() {
            self.tokens.remove(token);
        }
        Some(restore)
    }
}

/// Take a WebSocket upgrade `request`: answer it (101), and relay the
/// connection to `inner` (jsonrpsee with the caller's extensions), served
/// over an in-memory pipe until either side closes or `stopped` resolves.
pub fn upgrade<S>(
    request: HttpRequest,
    inner: S,
    max_bytes: u32,
    direct: Direct,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<HttpResponse, BoxError>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut handshake = soketto::handshake::http::Server::new();
    let response = match handshake.receive_request(&request) {
        Ok(response) => response,
        Err(e) => {
            return Ok(http::Response::builder()
                .status(http::StatusCode::BAD_REQUEST)
                .body(HttpBody::from(format!("WebSocket upgrade refused: {e}")))?);
        }
    };
    let resource = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    // The relayed side gets the caller the relay's own calls have (named
    // once, at the upgrade); `inner` names only a request without one.
    let caller = direct.extensions.get::<crate::engine::Caller>().cloned();
    let service = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let mut inner = inner.clone();
        let mut request = request.map(HttpBody::new);
        if let Some(caller) = &caller {
            request.extensions_mut().insert(caller.clone());
        }
        let call: ServiceFuture =
            Box::pin(async move { tower::Service::call(&mut inner, request).await });
        call
    });
    let serve = jsonrpsee::server::serve_with_graceful_shutdown(theirs, service, stopped);
    let serve: std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> =
        Box::pin(serve);
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::debug!(error = %e, "relayed WebSocket connection ended");
        }
    });
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let client = BufReader::new(BufWriter::new(TokioIo::new(upgraded).compat()));
        let mut builder = handshake.into_builder(client);
        // A message over the limit is discarded as it is read (soketto's
        // `MessageTooLarge`) and answered "too big" below. soketto 0.8
        // skips the message's whole length from the stream, fragments
        // already read included: a fragmented message over the limit
        // leaves this connection out of step (its sender's alone).
        builder.set_max_message_size(max_bytes as usize);
        let (client_tx, client_rx) = builder.finish();
        let mut to_server =
            soketto::handshake::Client::new(BufReader::new(ours.compat()), "localhost", &resource);
        match to_server.handshake().await {
            Ok(soketto::handshake::ServerResponse::Accepted { .. }) => {}
            other => {
                tracing::warn!(answer = ?other, "the relayed WebSocket was not accepted");
                return;
            }
        }
        let mut builder = to_server.into_builder();
        builder.set_max_message_size(MAX_FRAME);
        let (server_tx, server_rx) = builder.finish();
        relay(
            client_tx, client_rx, server_tx, server_rx, max_bytes, direct,
        )
        .await;
    });
    Ok(response.map(|()| HttpBody::default()))
}

/// Relay frames both ways until either side closes.
async fn relay<C, S>(
    client_tx: soketto::Sender<C>,
    client_rx: soketto::Receiver<C>,
    server_tx: soketto::Sender<S>,
    server_rx: soketto::Receiver<S>,
    max_bytes: u32,
    direct: Direct,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let pending = Arc::new(Mutex::new(Pending::default()));
    let in_flight = Arc::clone(&direct.in_flight);
    let (outgoing, queued) = mpsc::channel::<String>(OUTGOING);
    let to_server = ToServer {
        tx: server_tx,
        pending: Arc::clone(&pending),
        in_flight: Arc::clone(&in_flight),
    };
    let readers = async move {
        tokio::select! {
            ended = from_client(client_rx, to_server, outgoing.clone(), max_bytes, direct) => ended,
            () = from_server(server_rx, outgoing, pending, in_flight) => Ended::Server,
        }
    };
    let writer = to_client(client_tx, queued);
    tokio::pin!(writer);
    tokio::select! {
        () = &mut writer => {}
        ended = readers => {
            if let Ended::Server = ended {
                // jsonrpsee's side closed: the daemon is stopping. Nothing
                // more is read from the client; the calls the relay made
                // itself finish and their answers go out, as jsonrpsee lets
                // its own finish, and the writer ends once the last of them
                // has dropped its sender. A client that is gone ends it at
                // once (and so the calls, through `outgoing.closed`).
                writer.await;
            }
        }
    }
}

/// Why the relay stopped reading.
enum Ended {
    /// The client closed, broke the protocol, or its writer ended.
    Client,
    /// jsonrpsee's side of the pipe closed.
    Server,
}

/// The relay's side of the pipe to jsonrpsee: what it sends, the answers
/// owed for it.
struct ToServer<S> {
    tx: soketto::Sender<S>,
    pending: Arc<Mutex<Pending>>,
    /// One permit per message jsonrpsee has not answered yet.
    in_flight: Arc<Semaphore>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ToServer<S> {
    /// Send one message on, once fewer than [`MAX_IN_FLIGHT`] are owed.
    async fn send(&mut self, message: Outgoing) -> Result<(), ()> {
        let permit = Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .map_err(|_| ())?;
        // Given back by `from_server` when the answer comes.
        permit.forget();
        let sent = match message {
            Outgoing::Binary(data) => self.tx.send_binary(&data).await,
            Outgoing::Text(text) => self.tx.send_text_owned(text).await,
            Outgoing::Forward { body, restore } => {
                lock(&self.pending).insert(restore);
                self.tx.send_text_owned(body).await
            }
        };
        sent.map_err(|_| ())?;
        self.tx.flush().await.map_err(|_| ())
    }
}

/// One message for jsonrpsee.
enum Outgoing {
    Binary(Vec<u8>),
    Text(String),
    Forward { body: String, restore: Restore },
}

/// Client frames through the envelope rules to jsonrpsee, or answered here.
async fn from_client<C, S>(
    mut client_rx: soketto::Receiver<C>,
    mut server: ToServer<S>,
    outgoing: mpsc::Sender<String>,
    max_bytes: u32,
    mut direct: Direct,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let too_big = format!(
        r#"{{"jsonrpc":"2.0","error":{{"code":{},"message":"Request is too big"}},"id":null}}"#,
        jsonrpsee::types::error::OVERSIZED_REQUEST_CODE
    );
    let ended = loop {
        let mut data = Vec::new();
        let binary = match client_rx.receive(&mut data).await {
            Ok(soketto::Incoming::Data(kind)) => kind.is_binary(),
            Ok(soketto::Incoming::Pong(_)) => continue,
            Ok(soketto::Incoming::Closed(_)) | Err(WsError::Closed) => break Ended::Client,
            Err(WsError::MessageTooLarge { .. }) => {
                if outgoing.send(too_big.clone()).await.is_err() {
                    break Ended::Client;
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket client read failed");
                break Ended::Client;
            }
        };
        if data.len() > max_bytes as usize {
            // As jsonrpsee would answer it, without holding its tokens.
            if outgoing.send(too_big.clone()).await.is_err() {
                break Ended::Client;
            }
            continue;
        }
        let message = match envelope::prepare(&data) {
            Front::Unchanged if binary => Outgoing::Binary(data),
            Front::Unchanged => match direct.take(&data, &outgoing).await {
                Ok(true) => continue,
                Ok(false) => match String::from_utf8(data) {
                    Ok(text) => Outgoing::Text(text),
                    Err(_) => break Ended::Client,
                },
                Err(()) => break Ended::Client,
            },
            Front::Answer(answer) => {
                if outgoing.send(answer).await.is_err() {
                    break Ended::Client;
                }
                continue;
            }
            Front::Forward { body, restore } => Outgoing::Forward { body, restore },
        };
        // Each call decides on groups as fresh as an HTTP request's.
        crate::access::groups::GROUPS.refresh().await;
        if server.send(message).await.is_err() {
            break Ended::Server;
        }
    };
    let _ = server.tx.close().await;
    ended
}

/// Whether a frame from jsonrpsee answers a message (rather than being a
/// subscription's notification, which names a method).
fn is_answer(frame: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Notification {
        method: Option<serde::de::IgnoredAny>,
    }
    !matches!(
        serde_json::from_slice::<Notification>(frame),
        Ok(Notification { method: Some(_) })
    )
}

/// jsonrpsee's frames to the client, with forwarded messages' ids restored.
async fn from_server<S>(
    mut server_rx: soketto::Receiver<S>,
    outgoing: mpsc::Sender<String>,
    pending: Arc<Mutex<Pending>>,
    in_flight: Arc<Semaphore>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let mut data = Vec::new();
        match server_rx.receive(&mut data).await {
            Ok(soketto::Incoming::Data(_)) => {}
            Ok(soketto::Incoming::Pong(_)) => continue,
            Ok(soketto::Incoming::Closed(_)) | Err(_) => break,
        }
        if in_flight.available_permits() < MAX_IN_FLIGHT && is_answer(&data) {
            in_flight.add_permits(1);
        }
        // Only an answer to a forwarded message carries a token, and none
        // is owed while nothing is pending: most answers are not read for one.
        let owed = !lock(&pending).restores.is_empty();
        let restore = owed
            .then(|| envelope::answer_token(&data))
            .flatten()
            .and_then(|t| lock(&pending).take(&t));
        let answer = match restore {
            None => String::from_utf8(data)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            Some(restore) => match restore.restore(&data) {
                Some(answer) => answer,
                // Only notifications: nothing to send.
                None => continue,
            },
        };
        if outgoing.send(answer).await.is_err() {
            break;
        }
    }
}

/// The one writer to the client.
async fn to_client<C>(mut client_tx: soketto::Sender<C>, mut queued: mpsc::Receiver<String>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(text) = queued.recv().await {
        if client_tx.send_text_owned(text).await.is_err() || client_tx.flush().await.is_err() {
            return;
        }
    }
    let _ = client_tx.close().await;
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_restored_once_whichever_token_answers() {
        let batch = r#"[{"jsonrpc":"2.0","method":"m"},{"jsonrpc":"2.0","id":-7,"method":"m"}]"#;
        let Front::Forward { body, restore } = envelope::prepare(batch.as_bytes()) else {
            panic!("the batch is forwarded");
        };
        let tokens: Vec<String> = restore.tokens().map(str::to_string).collect();
        assert_eq!(tokens.len(), 2, "{body}");
        let mut pending = Pending::default();
        pending.insert(restore);
        assert!(pending.take(&tokens[1]).is_some());
        assert!(
            pending.take(&tokens[0]).is_none(),
            "taken with all its tokens"
        );
        assert!(pending.tokens.is_empty() && pending.restores.is_empty());
    }

    #[test]
    fn answers_never_given_cannot_grow_the_pending_map() {
        let mut pending = Pending::default();
        let mut first = None;
        for _ in 0..MAX_PENDING + 10 {
            let Front::Forward { restore, .. } =
                envelope::prepare(br#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#)
            else {
                panic!("forwarded");
            };
            first.get_or_insert_with(|| restore.tokens().next().map(str::to_string));
            pending.insert(restore);
        }
        assert_eq!(pending.restores.len(), MAX_PENDING);
        assert_eq!(pending.tokens.len(), MAX_PENDING);
        let first = first.flatten().expect("a token");
        assert!(pending.take(&first).is_none(), "the oldest was forgotten");
    }
}
