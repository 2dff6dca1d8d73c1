//! The JSON-RPC 2.0 envelope rules jsonrpsee does not keep, applied in front
//! of it to every message: ids that are valid JSON-RPC numbers but not
//! unsigned 64-bit integers, invalid id types, notifications (carried out,
//! never answered), bodies that are not a request object, and `params` of
//! the wrong type.
//!
//! jsonrpsee's `Id` is `null`, a string or a `u64`: a request with any other
//! id is taken for a notification and neither run nor answered, and a
//! notification is not run at all. So each request whose id jsonrpsee cannot
//! hold, and each notification, is forwarded with a string id of our own
//! (a token), and the answer is given back its original id (or dropped, for
//! a notification).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use jsonrpsee::server::http::response;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use serde_json::value::RawValue;
use tower::Service;

/// The error type of jsonrpsee's HTTP service.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One JSON-RPC message object, its members kept as written.
type Object = BTreeMap<String, Box<RawValue>>;

/// The standard code for a message that is JSON but not a valid request.
const INVALID_REQUEST: i32 = -32600;

/// Tokens handed out so far (never reused while the daemon runs).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);
/// Starts every token; a control character, which no client's string id
/// is expected to carry.
const TOKEN_PREFIX: &str = "\u{1}holdfast-front-";

/// What to do with one incoming message.
#[derive(Debug)]
pub enum Front {
    /// Not for the envelope rules (not JSON, an empty batch): jsonrpsee
    /// answers it as it is.
    Unchanged,
    /// Answer with this JSON text and call nothing.
    Answer(String),
    /// Call jsonrpsee with `body`, then put its answer through `restore`.
    Forward { body: String, restore: Restore },
}

/// How to turn jsonrpsee's answer to a forwarded message into the answer the
/// client is owed.
#[derive(Debug, Default)]
pub struct Restore {
    /// Token → the original id as written, or `None` for a notification.
    ids: BTreeMap<String, Option<Box<RawValue>>>,
    /// Answers decided in front of jsonrpsee, for the other entries of a
    /// batch.
    answered: Vec<String>,
    batch: bool,
}

/// The error object for an invalid request, with `id` as written.
fn invalid_request(id: Option<&RawValue>, why: &str) -> String {
    let id = id.map_or("null", RawValue::get);
    let message = serde_json::to_string(&format!("Invalid request: {why}"))
        .unwrap_or_else(|_| "\"Invalid request\"".to_string());
    format!(
        r#"{{"jsonrpc":"2.0","error":{{"code":{INVALID_REQUEST},"message":{message}}},"id":{id}}}"#
    )
}

fn new_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}",
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
    )
}

/// The JSON type of a raw value, from its first character.
fn first_char(raw: &RawValue) -> u8 {
    raw.get().bytes().next().unwrap_or(b'n')
}

/// Whether jsonrpsee holds `id` as written: `null`, a `u64`, a string not
/// written like one of our tokens (which would take the answer of the
/// message that token was given to, so it gets a token too). None when
/// it is no valid id at all (not a string, a number or null).
fn id_held(id: &RawValue) -> Option<bool> {
    match first_char(id) {
        b'n' => Some(true),
        b'-' | b'0'..=b'9' => Some(id.get().parse::<u64>().is_ok()),
        b'"' => Some(
            serde_json::from_str::<String>(id.get()).is_ok_and(|id| !id.starts_with(TOKEN_PREFIX)),
        ),
        _ => None,
    }
}

/// One entry (a single message or a member of a batch): the answer decided
/// here, or the entry to forward.
/// With `always_token` (a batch member) the entry gets a token whatever its
/// id, so that every forwarded message can be matched with its answer.
fn prepare_entry(
    raw: &RawValue,
    restore: &mut Restore,
    always_token: bool,
) -> Result<String, String> {
    let Ok(mut object) = serde_json::from_str::<Object>(raw.get()) else {
        return Err(invalid_request(None, "a request is a JSON object"));
    };
    let valid_id = match object.get("id").map(|id| id_held(id)) {
        None => None,
        Some(Some(held)) => Some(held),
        Some(None) => {
            return Err(invalid_request(
                None,
                "the id is a string, a number or null",
            ));
        }
    };
    let mut changed = always_token;
    if let Some(params) = object.get("params") {
        match first_char(params) {
            b'{' | b'[' => {}
            b'n' => {
                // `params: null` means no params: as `{}`, so the method
                // names the field it is missing.
                if let Ok(empty) = RawValue::from_string("{}".to_string()) {
                    object.insert("params".to_string(), empty);
                }
                changed = true;
            }
            _ => {
                return Err(invalid_request(
                    object.get("id").map(AsRef::as_ref),
                    "params is an object or an array",
                ));
            }
        }
    }
    if changed || valid_id != Some(true) {
        let token = new_token();
        let original = object.remove("id");
        let token_json = serde_json::to_string(&token).unwrap_or_default();
        let Ok(token_raw) = RawValue::from_string(token_json) else {
            return Err(invalid_request(original.as_deref(), "internal id"));
        };
        object.insert("id".to_string(), token_raw);
        restore.ids.insert(token, original);
    }
    Ok(serde_json::to_string(&object).unwrap_or_default())
}

/// The two members of a single request the rules look at, borrowed from
/// the message. A message that names either twice fails to read as this
/// and takes the full path (which keeps the last, as jsonrpsee does).
#[derive(serde::Deserialize)]
struct Members<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// A member that is there, `null` included (serde's `Option` would read
/// `null` as absent, and a request with `"id": null` is no notification).
fn present<'de: 'a, 'a, D>(member: D) -> Result<Option<&'a RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue as serde::Deserialize>::deserialize(member).map(Some)
}

/// Whether a single request object is one the rules leave as it is: an id
/// jsonrpsee holds (`null`, a `u64`, a string not written like a token)
/// and `params` absent, an object or an array. What almost every client
/// sends, so it is told without building the message's members; anything
/// else takes `prepare_entry`, which decides the same for these.
fn plain_request(text: &str) -> bool {
    let Ok(members) = serde_json::from_str::<Members<'_>>(text) else {
        return false;
    };
    members.id.and_then(id_held) == Some(true)
        && members
            .params
            .is_none_or(|params| matches!(first_char(params), b'{' | b'['))
}

/// Apply the envelope rules to one incoming message (an HTTP body or a
/// WebSocket text frame).
pub fn prepare(message: &[u8]) -> Front {
    let Ok(raw) = serde_json::from_slice::<&RawValue>(message) else {
        return Front::Unchanged;
    };
    let mut restore = Restore::default();
    match first_char(raw) {
        b'{' if plain_request(raw.get()) => Front::Unchanged,
        b'{' => match prepare_entry(raw, &mut restore, false) {
            Err(answer) => Front::Answer(answer),
            Ok(_) if restore.ids.is_empty() => Front::Unchanged,
            Ok(body) => Front::Forward { body, restore },
        },
        b'[' => {
            let Ok(entries) = serde_json::from_str::<Vec<Box<RawValue>>>(raw.get()) else {
                return Front::Unchanged;
            };
            if entries.is_empty() {
                return Front::Unchanged;
            }
            restore.batch = true;
            let mut forward = Vec::new();
            for entry in &entries {
                match prepare_entry(entry, &mut restore, true) {
                    Ok(body) => forward.push(body),
                    Err(answer) => restore.answered.push(answer),
                }
            }
            if forward.is_empty() {
                return Front::Answer(format!("[{}]", restore.answered.join(",")));
            }
            Front::Forward {
                body: format!("[{}]", forward.join(",")),
                restore,
            }
        }
        _ => Front::Answer(invalid_request(None, "a request is a JSON object")),
    }
}

/// The first token among the ids of jsonrpsee's `answer` (a single answer
/// or a batch of them): which forwarded message it answers. `None` for an
/// answer to a message left unchanged, and for subscription notifications.
pub fn answer_token(answer: &[u8]) -> Option<String> {
    let token_of = |object: &Object| {
        object
            .get("id")
            .filter(|id| first_char(id) == b'"')
            .and_then(|id| serde_json::from_str::<String>(id.get()).ok())
            .filter(|id| id.starts_with(TOKEN_PREFIX))
    };
    match answer.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => token_of(&serde_json::from_slice::<Object>(answer).ok()?),
        Some(b'[') => serde_json::from_slice::<Vec<Object>>(answer)
            .ok()?
            .iter()
            .find_map(token_of),
        _ => None,
    }
}

impl Restore {
    /// The tokens this message's entries were forwarded with.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.ids.keys().map(String::as_str)
    }

    /// The answer owed to the client from jsonrpsee's `answer`: original ids
    /// back in place, notifications' answers left out. `None` when nothing
    /// is to be sent (only notifications).
    pub fn restore(self, answer: &[u8]) -> Option<String> {
        let restore_one = |object: Object| -> Option<String> {
            let mut object = object;
            let token = object
                .get("id")
                .and_then(|id| serde_json::from_str::<String>(id.get()).ok());
            if let Some(original) = token.and_then(|t| self.ids.get(&t)) {
                let original = original.as_ref()?;
                object.insert("id".to_string(), original.clone());
            }
            serde_json::to_string(&object).ok()
        };
        if self.batch {
            let Ok(objects) = serde_json::from_slice::<Vec<Object>>(answer) else {
                // Not a batch answer (a batch refused as a whole): as it is.
                return Some(String::from_utf8_lossy(answer).into_owned());
            };
            let mut answers: Vec<String> = objects.into_iter().filter_map(restore_one).collect();
            answers.extend(self.answered.iter().cloned());
            return (!answers.is_empty()).then(|| format!("[{}]", answers.join(",")));
        }
        match serde_json::from_slice::<Object>(answer) {
            Ok(object) => restore_one(object),
            Err(_) => Some(String::from_utf8_lossy(answer).into_owned()),
        }
    }
}

/// Serve one HTTP request through jsonrpsee's `service` with the envelope
/// rules applied to a `POST` body: a message answered in front gets 200
/// with that answer, one that only held notifications 204 with no body.
/// Anything else (a WebSocket upgrade, `GET`) goes to `service` as it is.
pub async fn serve_http<S>(
    mut service: S,
    request: HttpRequest,
    max_bytes: u32,
) -> Result<HttpResponse, BoxError>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError>,
{
    if request.method() != http::Method::POST {
        return service.call(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let body = match Limited::new(body, max_bytes as usize).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Ok(response::too_large(max_bytes)),
        Err(e) => return Err(e),
    };
    let (body, restore) = match prepare(&body) {
        Front::Unchanged => (body, None),
        Front::Answer(answer) => return Ok(response::ok_response(answer)),
        Front::Forward { body, restore } => (body.into_bytes().into(), Some(restore)),
    };
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    let answer = service
        .call(HttpRequest::from_parts(
            parts,
            HttpBody::new(http_body_util::Full::new(body)),
        ))
        .await?;
    let Some(restore) = restore else {
        return Ok(answer);
    };
    if answer.status() != http::StatusCode::OK {
        return Ok(answer);
    }
    let (mut parts, body) = answer.into_parts();
    let body = body.collect().await?.to_bytes();
    let Some(text) = restore.restore(&body) else {
        return Ok(http::Response::builder()
            .status(http::StatusCode::NO_CONTENT)
            .body(HttpBody::empty())?);
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(HttpResponse::from_parts(parts, HttpBody::from(text)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn forwarded(message: &str) -> (Value, Restore) {
        match prepare(message.as_bytes()) {
            Front::Forward { body, restore } => (
                serde_json::from_str(&body).expect("forwarded JSON"),
                restore,
            ),
            other => panic!("{message} is not forwarded: {other:?}"),
        }
    }

    fn answered(message: &str) -> Value {
        match prepare(message.as_bytes()) {
            Front::Answer(answer) => serde_json::from_str(&answer).expect("answer JSON"),
            other => panic!("{message} is not answered in front: {other:?}"),
        }
    }

    #[test]
    fn ids_jsonrpsee_cannot_hold_come_back_as_written() {
        for id in ["-7", "1.5", "18446744073709551616", "1e3"] {
            let message = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"daemon.info"}}"#);
            let (body, restore) = forwarded(&message);
            let token = body["id"].as_str().expect("a token id").to_string();
            let answer = json!({"jsonrpc": "2.0", "result": 1, "id": token}).to_string();
            let restored = restore.restore(answer.as_bytes()).expect("an answer");
            assert!(restored.contains(&format!(r#""id":{id}"#)), "{restored}");
        }
    }

    #[test]
    fn plain_requests_are_left_to_jsonrpsee() {
        for message in [
            r#"{"jsonrpc":"2.0","id":7,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"m","params":{}}"#,
            "not json",
            "[]",
        ] {
            assert!(
                matches!(prepare(message.as_bytes()), Front::Unchanged),
                "{message}"
            );
        }
    }

    #[test]
    fn invalid_ids_bodies_and_params_are_invalid_requests() {
        for message in [
            r#"{"jsonrpc":"2.0","id":true,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":[],"method":"m"}"#,
            "1",
            r#""x""#,
            "null",
        ] {
            let answer = answered(message);
            assert_eq!(answer["error"]["code"], -32600, "{message}: {answer}");
            assert_eq!(answer["id"], Value::Null, "{message}: {answer}");
        }
        let answer = answered(r#"{"jsonrpc":"2.0","id":3,"method":"m","params":5}"#);
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        assert_eq!(answer["id"], 3, "{answer}");
    }

    /// The quick test for a plain request decides as the full rules do,
    /// for every kind of id and `params`, and for a member named twice.
    #[test]
    fn the_quick_path_decides_as_the_full_rules() {
        let token_like = serde_json::to_string(&format!("{TOKEN_PREFIX}7")).expect("json");
        let ids = [
            None,
            Some("null".to_string()),
            Some("0".into()),
            Some("18446744073709551615".into()),
            Some("18446744073709551616".into()),
            Some("-1".into()),
            Some("1.5".into()),
            Some("1e3".into()),
            Some(r#""abc""#.into()),
            Some(r#""\u0001holdfast-front-1""#.into()),
            Some(token_like),
            Some("true".into()),
            Some("[1]".into()),
            Some("{}".into()),
        ];
        let params = [
            None,
            Some("{}"),
            Some("[]"),
            Some("null"),
            Some("5"),
            Some(r#""x""#),
        ];
        let mut plain = 0;
        for id in &ids {
            for param in &params {
                let mut message = String::from(r#"{"jsonrpc":"2.0","method":"m""#);
                if let Some(id) = id {
                    message.push_str(&format!(r#","id":{id}"#));
                }
                if let Some(param) = param {
                    message.push_str(&format!(r#","params":{param}"#));
                }
                // The second names the id twice: the quick test leaves it
                // to the full rules (which keep the last).
                for (message, once) in [
                    (format!("{message}}}"), true),
                    (format!(r#"{message},"id":2}}"#), id.is_none()),
                ] {
                    let raw: Box<RawValue> = serde_json::from_str(&message).expect("json");
                    let mut restore = Restore::default();
                    let full =
                        prepare_entry(&raw, &mut restore, false).is_ok() && restore.ids.is_empty();
                    if once {
                        assert_eq!(plain_request(&message), full, "{message}");
                    } else {
                        assert!(!plain_request(&message), "{message}");
                    }
                    assert_eq!(
                        matches!(prepare(message.as_bytes()), Front::Unchanged),
                        full,
                        "{message}"
                    );
                    plain += usize::from(full);
                }
            }
        }
        // Not every case fell back: the quick path was taken.
        assert!(plain >= 10, "{plain} plain requests");
    }

    #[test]
    fn notifications_are_run_and_not_answered() {
        let (body, restore) = forwarded(r#"{"jsonrpc":"2.0","method":"m"}"#);
        let token = body["id"].as_str().expect("a token id").to_string();
        let answer = json!({"jsonrpc": "2.0", "result": 1, "id": token}).to_string();
        assert_eq!(restore.restore(answer.as_bytes()), None);

        let (body, restore) = forwarded(
            r#"[{"jsonrpc":"2.0","method":"m"},{"jsonrpc":"2.0","method":"m","params":[]}]"#,
        );
        let answers: Vec<Value> = body
            .as_array()
            .expect("a batch")
            .iter()
            .map(|e| json!({"jsonrpc": "2.0", "result": 1, "id": e["id"]}))
            .collect();
        let answer = Value::Array(answers).to_string();
        assert_eq!(restore.restore(answer.as_bytes()), None);
    }

    #[test]
    fn answers_are_matched_to_forwarded_messages_by_token() {
        let (body, restore) = forwarded(r#"{"jsonrpc":"2.0","id":-7,"method":"m"}"#);
        let token = body["id"].as_str().expect("a token id").to_string();
        assert_eq!(restore.tokens().collect::<Vec<_>>(), [token.as_str()]);
        let answer = json!({"jsonrpc": "2.0", "result": 1, "id": token}).to_string();
        assert_eq!(answer_token(answer.as_bytes()), Some(token.clone()));
        let batch = json!([{"jsonrpc": "2.0", "result": 1, "id": 3},
                           {"jsonrpc": "2.0", "result": 1, "id": token}])
        .to_string();
        assert_eq!(answer_token(batch.as_bytes()), Some(token));
        for other in [
            r#"{"jsonrpc":"2.0","result":1,"id":"a client's own string"}"#,
            r#"{"jsonrpc":"2.0","method":"job.changed","params":{"subscription":"x","result":1}}"#,
            r#"[{"jsonrpc":"2.0","result":1,"id":1}]"#,
            "not json",
        ] {
            assert_eq!(answer_token(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn a_string_id_like_a_token_is_relayed_under_a_token_of_its_own() {
        let (body, _) = forwarded(r#"{"jsonrpc":"2.0","id":-7,"method":"m"}"#);
        let token = body["id"].as_str().expect("a token id").to_string();
        let imitation = json!({"jsonrpc": "2.0", "id": token, "method": "m"}).to_string();
        let (body, restore) = forwarded(&imitation);
        let own = body["id"].as_str().expect("a token id").to_string();
        assert_ne!(own, token, "{body}");
        let answer = json!({"jsonrpc": "2.0", "result": 1, "id": own}).to_string();
        let restored: Value =
            serde_json::from_str(&restore.restore(answer.as_bytes()).expect("an answer"))
                .expect("JSON");
        assert_eq!(restored["id"], json!(token), "{restored}");
    }

    #[test]
    fn a_batch_keeps_answers_decided_in_front() {
        let (body, restore) = forwarded(
            r#"[{"jsonrpc":"2.0","id":1,"method":"m"},{"jsonrpc":"2.0","id":true,"method":"m"},5]"#,
        );
        assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
        let answer = r#"[{"jsonrpc":"2.0","result":1,"id":1}]"#;
        let restored: Value =
            serde_json::from_str(&restore.restore(answer.as_bytes()).expect("answers"))
                .expect("JSON");
        let codes: Vec<&Value> = restored
            .as_array()
            .expect("a batch answer")
            .iter()
            .map(|a| &a["error"]["code"])
            .collect();
        assert_eq!(codes, [&Value::Null, &json!(-32600), &json!(-32600)]);
    }
}
