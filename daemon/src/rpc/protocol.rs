//! The protocol check of one-shot HTTP calls: a request that carries
//! `HoldFast-Protocol` with another number than ours is refused before
//! anything reads its body (so the call is never carried out), and every
//! HTTP answer names our protocol in the same header, so a client can tell
//! a daemon that checked from one that predates the header.

use holdfast_api::PROTOCOL_VERSION;
use holdfast_api::oneshot::{PROTOCOL_HEADER, PROTOCOL_MISMATCH_CODE};
use jsonrpsee::server::{HttpBody, HttpResponse};

/// The JSON-RPC code for a request that is not a valid request.
const INVALID_REQUEST: i32 = -32600;

/// The answer that refuses a request whose protocol header is not ours, or
/// `None` when it may go on (no header, or our number).
pub fn refusal(headers: &http::HeaderMap) -> Option<HttpResponse> {
    let value = headers.get(PROTOCOL_HEADER)?;
    let theirs = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let (status, body) = match theirs {
        Some(n) if n == PROTOCOL_VERSION => return None,
        Some(n) => (
            http::StatusCode::PRECONDITION_FAILED,
            error_body(
                PROTOCOL_MISMATCH_CODE,
                &format!(
                    "this daemon speaks protocol {PROTOCOL_VERSION}, the request protocol {n}; \
                     the call was not carried out"
                ),
                Some(PROTOCOL_VERSION),
            ),
        ),
        None => (
            http::StatusCode::BAD_REQUEST,
            error_body(
                INVALID_REQUEST,
                &format!("Invalid request: {PROTOCOL_HEADER} must be a protocol number"),
                None,
            ),
        ),
    };
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(PROTOCOL_HEADER, ours());
    Some(response)
}

/// Name our protocol on an answer.
pub fn stamp(response: &mut HttpResponse) {
    response.headers_mut().insert(PROTOCOL_HEADER, ours());
}

fn ours() -> http::HeaderValue {
    http::HeaderValue::from(PROTOCOL_VERSION)
}

fn error_body(code: i32, message: &str, protocol: Option<u32>) -> String {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(protocol) = protocol {
        error["data"] = serde_json::json!({ "protocol": protocol });
    }
    serde_json::json!({ "jsonrpc": "2.0", "error": error, "id": null }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            PROTOCOL_HEADER,
            http::HeaderValue::from_str(value).expect("a header value"),
        );
        headers
    }

    #[test]
    fn only_another_number_is_refused() {
        assert!(refusal(&http::HeaderMap::new()).is_none());
        assert!(refusal(&with(&PROTOCOL_VERSION.to_string())).is_none());
        let other = refusal(&with(&(PROTOCOL_VERSION + 1).to_string())).expect("refused");
        assert_eq!(other.status(), http::StatusCode::PRECONDITION_FAILED);
        assert_eq!(
            other.headers().get(PROTOCOL_HEADER),
            Some(&http::HeaderValue::from(PROTOCOL_VERSION))
        );
        let garbage = refusal(&with("two")).expect("refused");
        assert_eq!(garbage.status(), http::StatusCode::BAD_REQUEST);
    }
}
