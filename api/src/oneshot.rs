//! The one-shot client: each call is one plain HTTP/1.1 `POST` over the
//! daemon's Unix socket (kept open for the next call of the same command),
//! with no WebSocket upgrade and no separate handshake round trip. The
//! protocol check rides along: every request carries [`PROTOCOL_HEADER`]
//! with our [`PROTOCOL_VERSION`], and the daemon refuses a request of
//! another protocol (HTTP 412, its own number in the same header) before it
//! carries out the call. Subscriptions need the WebSocket client
//! ([`crate::client::connect`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonrpsee::core::client::{
    BatchResponse, ClientT, Error as ClientError, Subscription, SubscriptionClientT,
};
use jsonrpsee::core::params::BatchRequestBuilder;
use jsonrpsee::core::traits::ToRpcParams;
use jsonrpsee::types::ErrorObjectOwned;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::PROTOCOL_VERSION;
use crate::client::ConnectError;

/// The request and response header that carries a protocol number: the
/// client's on a request, the daemon's on its answer.
pub const PROTOCOL_HEADER: &str = "HoldFast-Protocol";

/// The JSON-RPC error code of the answer to a request whose
/// [`PROTOCOL_HEADER`] names another protocol (HTTP status 412); its `data`
/// is `{"protocol": <the daemon's>}`. The call was not carried out.
pub const PROTOCOL_MISMATCH_CODE: i32 = -31006;

/// Longest wait for one answer, as the WebSocket client's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer head read.
const MAX_HEAD: usize = 64 << 10;
/// Largest answer body read, as the WebSocket client's response cap.
const MAX_BODY: usize = 64 << 20;

/// Why a one-shot call failed below JSON-RPC, carried inside
/// [`ClientError::Transport`] so callers can tell the cases apart.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// The daemon speaks another protocol and did not carry out the call.
    /// `theirs` is `None` when its answer named no protocol at all.
    #[error("the daemon speaks protocol {}, this client {ours}", theirs.map_or_else(|| "unknown".to_string(), |n| n.to_string()))]
    ProtocolMismatch { ours: u32, theirs: Option<u32> },
    /// The daemon turned the connection away (over its connection caps).
    #[error("{0}")]
    Refused(String),
    /// An HTTP answer that is not a JSON-RPC answer.
    #[error("the daemon answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// An answer that is not well-formed HTTP.
    #[error("malformed HTTP answer: {0}")]
    Malformed(&'static str),
    /// Reading or writing the socket failed, or it closed mid-answer.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The answer of one call, as far as HTTP goes.
struct Answer {
    status: u16,
    /// The daemon's [`PROTOCOL_HEADER`], if it sent one.
    protocol: Option<u32>,
    body: Vec<u8>,
    /// The daemon will close the connection after this answer.
    closes: bool,
}

/// A JSON-RPC client that sends each call as one HTTP `POST` on the Unix
/// socket. The connection made by [`OneShot::connect`] is used for the
/// calls that follow; one the daemon closed is opened again before the next
/// call.
#[derive(Debug)]
pub struct OneShot {
    socket: PathBuf,
    stream: Mutex<Option<UnixStream>>,
}

/// What a failed connect to `socket` means for the caller: the socket may
/// not be opened, nothing listens on it, the daemon's listen backlog is
/// full (a non-blocking connect then fails with EAGAIN), or a daemon went
/// away with the connection still in its backlog (tokio's connect then
/// reports the reset). The last two are [`ConnectError::Busy`] and
/// [`ConnectError::Dropped`], not an absent daemon, so that callers that
/// outlive a restart (`hfctl wait`) connect again. Both transports use it.
pub(crate) fn connect_error(socket: &Path, source: std::io::Error) -> ConnectError {
    use std::io::ErrorKind;
    if source.kind() == ErrorKind::PermissionDenied {
        ConnectError::PermissionDenied {
            path: socket.to_path_buf(),
        }
    } else if source.kind() == ErrorKind::WouldBlock {
        ConnectError::Busy {
            path: socket.to_path_buf(),
        }
    } else if matches!(
        source.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    ) {
        ConnectError::Dropped {
            path: socket.to_path_buf(),
            source,
        }
    } else {
        ConnectError::NotRunning {
            path: socket.to_path_buf(),
            source,
        }
    }
}

impl OneShot {
    /// Open the socket; no request is sent until the first call.
    pub async fn connect(socket: &Path) -> Result<OneShot, ConnectError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| connect_error(socket, e))?;
        Ok(OneShot {
            socket: socket.to_path_buf(),
            stream: Mutex::new(Some(stream)),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send one JSON-RPC request body and read its HTTP answer.
    async fn exchange(&self, body: &str) -> Result<Answer, OneShotError> {
        let mut guard = self.stream.lock().await;
        let mut stream = match guard.take() {
            Some(stream) => stream,
            None => UnixStream::connect(&self.socket).await?,
        };
        let request = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // The daemon may answer (a protocol mismatch, a request too large)
        // before it reads the whole body and close: the write then fails
        // with a broken pipe, and its answer is still there to read.
        match stream.write_all(request.as_bytes()).await {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
        let answer = read_answer(&mut stream).await?;
        if !answer.closes {
            *guard = Some(stream);
        }
        Ok(answer)
    }

    /// One call: the answer's `result` as raw JSON, or why there is none.
    async fn call(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<String, ClientError> {
        let method = serde_json::to_string(method)?;
        let body = match params {
            Some(params) => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":{method},"params":{}}}"#,
                params.get()
            ),
            None => format!(r#"{{"jsonrpc":"2.0","id":1,"method":{method}}}"#),
        };
        let exchange = async {
            let mut answer = self.exchange(&body).await?;
            if answer.status == 200 && answer.protocol.is_none() {
                // A daemon from before the header: it carried the call out
                // unchecked, so its protocol is asked before its answer is
                // believed.
                answer.protocol = self.protocol_by_info().await?;
            }
            Ok::<_, OneShotError>(answer)
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(answer) => answer.map_err(transport)?,
            Err(_) => return Err(ClientError::RequestTimeout),
        };
        interpret(answer)
    }

    /// The daemon's protocol from `daemon.info`, for a daemon that does not
    /// send [`PROTOCOL_HEADER`].
    async fn protocol_by_info(&self) -> Result<Option<u32>, OneShotError> {
        let answer = self
            .exchange(r#"{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":{}}"#)
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        Ok(value["result"]["protocol"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok()))
    }
}

fn transport(error: OneShotError) -> ClientError {
    ClientError::Transport(Box::new(error))
}

/// Turn an HTTP answer into the call's result, checking the daemon's
/// protocol first.
fn interpret(answer: Answer) -> Result<String, ClientError> {
    if answer.status == 412 || answer.protocol.is_some_and(|n| n != PROTOCOL_VERSION) {
        return Err(transport(OneShotError::ProtocolMismatch {
            ours: PROTOCOL_VERSION,
            theirs: answer.protocol,
        }));
    }
    if answer.status == 503 {
        let text = String::from_utf8_lossy(&answer.body);
        return Err(transport(OneShotError::Refused(text.into_owned())));
    }
    #[derive(serde::Deserialize)]
    struct Response<'a> {
        #[serde(borrow, default)]
        result: Option<&'a RawValue>,
        #[serde(default)]
        error: Option<ErrorObjectOwned>,
    }
    let response = serde_json::from_slice::<Response<'_>>(&answer.body);
    match response {
        // An error object is the answer whatever the status (413 for a
        // request over `max_request_bytes`, with -32007): the call was not
        // carried out, or failed.
        Ok(Response {
            error: Some(error), ..
        }) => {
            if answer.status == 200 && answer.protocol.is_none() {
                return Err(unchecked());
            }
            Err(ClientError::Call(error))
        }
        Ok(Response {
            result: Some(result),
            error: None,
        }) if answer.status == 200 => {
            if answer.protocol.is_none() {
                return Err(unchecked());
            }
            Ok(result.get().to_string())
        }
        Ok(_) if answer.status == 200 => Err(transport(OneShotError::Malformed(
            "a JSON-RPC answer without result or error",
        ))),
        Err(e) if answer.status == 200 => Err(ClientError::ParseError(e)),
        _ => Err(transport(OneShotError::Status {
            status: answer.status,
            body: String::from_utf8_lossy(&answer.body)
                .chars()
                .take(200)
                .collect(),
        })),
    }
}

/// Neither the header nor `daemon.info` named a protocol: the answer is
/// not believed.
fn unchecked() -> ClientError {
    transport(OneShotError::ProtocolMismatch {
        ours: PROTOCOL_VERSION,
        theirs: None,
    })
}

/// Read one HTTP answer (head, then a body by `Content-Length`, chunked,
/// or up to the end of the stream).
async fn read_answer(stream: &mut UnixStream) -> Result<Answer, OneShotError> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(OneShotError::Malformed("an answer head too long"));
        }
        if read_more(stream, &mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| OneShotError::Malformed("an answer head that is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| {
            line.strip_prefix("HTTP/1.1 ")
                .or(line.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(OneShotError::Malformed("no HTTP status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut closes = head.starts_with("HTTP/1.0");
    let mut protocol = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| OneShotError::Malformed("a bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            closes = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case(PROTOCOL_HEADER) {
            protocol = value.parse::<u32>().ok();
        }
    }
    let rest = buf.split_off(head_end);
    let body = if chunked {
        read_chunked(stream, rest).await?
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(OneShotError::Malformed("an answer body too large"));
        }
        let mut body = rest;
        while body.len() < length {
            if read_more(stream, &mut body).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        body.truncate(length);
        body
    } else {
        closes = true;
        let mut body = rest;
        while read_more(stream, &mut body).await? != 0 {
            if body.len() > MAX_BODY {
                return Err(OneShotError::Malformed("an answer body too large"));
            }
        }
        body
    };
    Ok(Answer {
        status,
        protocol,
        body,
        closes,
    })
}

async fn read_more(stream: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 << 10];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// A chunked body, `pending` holding what was read past the head.
async fn read_chunked(
    stream: &mut UnixStream,
    mut pending: Vec<u8>,
) -> Result<Vec<u8>, OneShotError> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            if pending.len() > MAX_HEAD {
                return Err(OneShotError::Malformed("a chunk size line too long"));
            }
            if read_more(stream, &mut pending).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        };
        let size_text = std::str::from_utf8(&pending[..line_end])
            .map_err(|_| OneShotError::Malformed("a bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| OneShotError::Malformed("a bad chunk size"))?;
        pending.drain(..line_end + 2);
        if size == 0 {
            // The last chunk; trailers (none expected) end with an empty line.
            while !pending.windows(2).any(|w| w == b"\r\n") {
                if read_more(stream, &mut pending).await? == 0 {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(OneShotError::Malformed("an answer body too large"));
        }
        while pending.len() < size + 2 {
            if read_more(stream, &mut pending).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        body.extend_from_slice(&pending[..size]);
        pending.drain(..size + 2);
    }
}

impl ClientT for OneShot {
    async fn notification<Params>(&self, method: &str, params: Params) -> Result<(), ClientError>
    where
        Params: ToRpcParams + Send,
    {
        // Sent as a call: the daemon answers notifications with nothing,
        // and an answer tells us it was received.
        self.call(method, params.to_rpc_params()?).await.map(|_| ())
    }

    async fn request<R, Params>(&self, method: &str, params: Params) -> Result<R, ClientError>
    where
        R: DeserializeOwned,
        Params: ToRpcParams + Send,
    {
        let result = self.call(method, params.to_rpc_params()?).await?;
        Ok(serde_json::from_str(&result)?)
    }

    async fn batch_request<'a, R>(
        &self,
        _batch: BatchRequestBuilder<'a>,
    ) -> Result<BatchResponse<'a, R>, ClientError>
    where
        R: DeserializeOwned + std::fmt::Debug + 'a,
    {
        Err(ClientError::HttpNotImplemented)
    }
}

impl SubscriptionClientT for OneShot {
    async fn subscribe<'a, Notif, Params>(
        &self,
        _subscribe_method: &'a str,
        _params: Params,
        _unsubscribe_method: &'a str,
    ) -> Result<Subscription<Notif>, ClientError>
    where
        Params: ToRpcParams + Send,
        Notif: DeserializeOwned,
    {
        Err(ClientError::HttpNotImplemented)
    }

    async fn subscribe_to_method<Notif>(
        &self,
        _method: &str,
    ) -> Result<Subscription<Notif>, ClientError>
    where
        Notif: DeserializeOwned,
    {
        Err(ClientError::HttpNotImplemented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_reset_as_it_is_opened_is_dropped_not_an_absent_daemon() {
        use std::io::{Error, ErrorKind};
        let socket = Path::new("/run/holdfast/holdfast.sock");
        let reset = connect_error(socket, Error::from(ErrorKind::ConnectionReset));
        assert!(matches!(&reset, ConnectError::Dropped { .. }), "{reset:?}");
        let refused = connect_error(socket, Error::from(ErrorKind::ConnectionRefused));
        assert!(
            matches!(refused, ConnectError::NotRunning { .. }),
            "{refused:?}"
        );
        let absent = connect_error(socket, Error::from(ErrorKind::NotFound));
        assert!(
            matches!(absent, ConnectError::NotRunning { .. }),
            "{absent:?}"
        );
        let busy = connect_error(socket, Error::from(ErrorKind::WouldBlock));
        assert!(matches!(busy, ConnectError::Busy { .. }), "{busy:?}");
        let denied = connect_error(socket, Error::from(ErrorKind::PermissionDenied));
        assert!(
            matches!(denied, ConnectError::PermissionDenied { .. }),
            "{denied:?}"
        );
    }

    /// A listener whose backlog is full (one that never accepts, listening
    /// with a backlog of 0): connecting fails with EAGAIN, and that is a
    /// busy daemon, not an absent one.
    #[tokio::test]
    async fn a_full_backlog_is_a_busy_daemon_not_an_absent_one() {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
        };
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busy.sock");
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new(&path).expect("address"),
        )
        .expect("bind");
        listen(&listener, Backlog::new(0).expect("backlog")).expect("listen");
        let mut queued = Vec::new();
        let refused = loop {
            match OneShot::connect(&path).await {
                Ok(client) => queued.push(client),
                Err(error) => break error,
            }
            assert!(queued.len() < 64, "the backlog never filled");
        };
        assert!(!queued.is_empty(), "the first connection is queued");
        assert!(matches!(refused, ConnectError::Busy { .. }), "{refused:?}");
    }

    fn answer(status: u16, protocol: Option<u32>, body: &str) -> Answer {
        Answer {
            status,
            protocol,
            body: body.as_bytes().to_vec(),
            closes: false,
        }
    }

    fn mismatch(error: ClientError) -> Option<Option<u32>> {
        match error {
            ClientError::Transport(e) => match e.downcast_ref::<OneShotError>() {
                Some(OneShotError::ProtocolMismatch { theirs, .. }) => Some(*theirs),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn a_result_is_taken_only_from_our_protocol() {
        let ok = interpret(answer(
            200,
            Some(PROTOCOL_VERSION),
            r#"{"jsonrpc":"2.0","result":{"a":1},"id":1}"#,
        ));
        assert_eq!(ok.expect("a result"), r#"{"a":1}"#);
        let other = interpret(answer(
            412,
            Some(PROTOCOL_VERSION + 1),
            r#"{"jsonrpc":"2.0","error":{"code":-31006,"message":"x"},"id":null}"#,
        ));
        assert_eq!(
            mismatch(other.expect_err("refused")),
            Some(Some(PROTOCOL_VERSION + 1))
        );
        let unknown = interpret(answer(200, None, r#"{"jsonrpc":"2.0","result":1,"id":1}"#));
        assert_eq!(mismatch(unknown.expect_err("unchecked")), Some(None));
    }

    #[test]
    fn an_error_object_is_a_call_error_whatever_the_status() {
        let too_big = interpret(answer(
            413,
            Some(PROTOCOL_VERSION),
            r#"{"jsonrpc":"2.0","error":{"code":-32007,"message":"Request is too big"},"id":null}"#,
        ));
        assert!(
            matches!(too_big, Err(ClientError::Call(ref e)) if e.code() == -32007),
            "{too_big:?}"
        );
        let not_json = interpret(answer(500, Some(PROTOCOL_VERSION), "oops"));
        assert!(
            matches!(not_json, Err(ClientError::Transport(_))),
            "{not_json:?}"
        );
    }

    #[test]
    fn an_error_object_is_a_call_error() {
        let error = interpret(answer(
            200,
            Some(PROTOCOL_VERSION),
            r#"{"jsonrpc":"2.0","error":{"code":-31001,"message":"job 9 does not exist"},"id":1}"#,
        ))
        .expect_err("an error");
        match error {
            ClientError::Call(object) => {
                assert_eq!(object.code(), -31001);
                assert_eq!(object.message(), "job 9 does not exist");
            }
            other => panic!("expected a call error, got {other:?}"),
        }
    }
}
