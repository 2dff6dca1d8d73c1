//! Hand-written HTTP/1.1 over the Unix socket, so tests see exactly what the
//! daemon answers to bytes no well-behaved client would send.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// How long a raw request may wait for its answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the raw text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} answer is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// POST `body` to `/` on the socket with `Connection: close` and read the
/// whole answer.
pub fn post(socket: &Path, body: &[u8]) -> HttpResponse {
    post_with(socket, body, &[])
}

/// [`post`] with more request headers (`name`, `value`).
pub fn post_with(socket: &Path, body: &[u8], headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("a read timeout can be set");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("the request head can be sent");
    // A server may answer before it reads the body (a protocol mismatch)
    // and close: the write then fails with a broken pipe, and the answer
    // is still there to read.
    if let Err(e) = stream.write_all(body) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "the request body can be sent: {e}"
        );
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| {
        panic!(
            "reading the answer failed ({e}); got so far: {}",
            String::from_utf8_lossy(&raw)
        )
    });
    parse_response(&raw)
}

/// `method path` with `Connection: close` (and `Accept` when given) on
/// any stream, the Unix socket or TCP, and the whole answer.
pub fn request(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> HttpResponse {
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .expect("the request head can be sent");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| {
        panic!(
            "reading the answer failed ({e}); got so far: {}",
            String::from_utf8_lossy(&raw)
        )
    });
    parse_response(&raw)
}

/// `GET path` on the Unix socket.
pub fn get(socket: &Path, path: &str, accept: Option<&str>) -> HttpResponse {
    let stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("a read timeout can be set");
    request(stream, "GET", path, accept)
}

/// POST a JSON-RPC text and return the parsed JSON answer.
pub fn rpc_raw(socket: &Path, body: &str) -> Value {
    post(socket, body.as_bytes()).json()
}

/// Call `method` with named `params` (id 1) and return the whole answer
/// object (`result` or `error`).
pub fn rpc_call(socket: &Path, method: &str, params: Value) -> Value {
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    rpc_raw(socket, &request.to_string())
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text_of = || String::from_utf8_lossy(raw).into_owned();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("the answer has no end of headers: {}", text_of()));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest).unwrap_or_else(|| panic!("bad chunked body: {}", text_of()))
    } else if let Some(length) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        rest[..length.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
