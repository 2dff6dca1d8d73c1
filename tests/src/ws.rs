//! A hand-written WebSocket client over the Unix socket (RFC 6455, text
//! frames only), so tests send JSON-RPC messages no library client would
//! send and see every frame the daemon answers with, or that it sends none.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// How long a frame that is owed may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One WebSocket connection to the daemon.
#[derive(Debug)]
pub struct RawWs {
    stream: UnixStream,
}

impl RawWs {
    /// Connect and upgrade; panics unless the daemon answers 101.
    pub fn connect(socket: &Path) -> RawWs {
        let mut stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("a read timeout can be set");
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .expect("the upgrade can be sent");
        // Byte by byte up to the end of the head, so no frame is read
        // with it.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream
                .read_exact(&mut byte)
                .expect("the upgrade is answered");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "the upgrade is accepted: {head}"
        );
        RawWs { stream }
    }

    /// Send `text` as one masked text frame.
    pub fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // A zero mask: the payload goes as it is.
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).expect("a frame can be sent");
    }

    /// Send `bytes` as they are: a frame's head alone, a broken frame.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("bytes can be sent");
    }

    /// Send `bytes` unless the daemon stops reading for `patience`: false
    /// then (the connection is left with part of them written).
    pub fn send_bytes_within(&mut self, bytes: &[u8], patience: Duration) -> bool {
        self.stream
            .set_write_timeout(Some(patience))
            .expect("a write timeout can be set");
        let sent = match self.stream.write_all(bytes) {
            Ok(()) => true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) => panic!("cannot write to the daemon: {e}"),
        };
        self.stream
            .set_write_timeout(None)
            .expect("a write timeout can be cleared");
        sent
    }

    /// The next text message from the daemon (control frames skipped);
    /// panics when none comes within the read timeout or the connection
    /// closes.
    pub fn recv(&mut self) -> String {
        self.next_message()
            .unwrap_or_else(|| panic!("the daemon closed the WebSocket"))
    }

    /// Every message the daemon sends until it closes the connection (a
    /// close frame or the end of the stream); panics when the read timeout
    /// passes first.
    pub fn recv_until_closed(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_message()).collect()
    }

    /// The next text message, or None once the daemon closed.
    fn next_message(&mut self) -> Option<String> {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            match self.stream.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => panic!("the daemon sends no frame: {e}"),
            }
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).expect("a frame length");
                    u64::from(u16::from_be_bytes(n))
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).expect("a frame length");
                    u64::from_be_bytes(n)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).expect("a frame that fits")];
            self.stream
                .read_exact(&mut payload)
                .expect("the frame's payload");
            match opcode {
                0x8 => return None,
                0x9 | 0xa => continue,
                _ => message.extend_from_slice(&payload),
            }
            if fin {
                return Some(String::from_utf8(message).expect("a text message"));
            }
        }
    }

    /// The next message, as JSON.
    pub fn recv_json(&mut self) -> Value {
        let text = self.recv();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Send `text` and read the next message as JSON.
    pub fn call_raw(&mut self, text: &str) -> Value {
        self.send(text);
        self.recv_json()
    }
}
