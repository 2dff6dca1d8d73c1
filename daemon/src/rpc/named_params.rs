//! Refusing named parameters a method does not take, for every method at
//! once: an RPC middleware layer that checks each call's (and each batch
//! entry's) parameter names against the methods the `rpc.discover` document
//! describes, and answers -32602 naming the unknown ones. Without it the
//! generated parsing ignores unknown keys, so a typo such as `prority` would
//! be silently dropped. The same layer words jsonrpsee's bare "Internal
//! error" for a subscription method called over HTTP.

use std::collections::BTreeMap;

use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, MethodResponse, Notification, RpcServiceT,
};
use jsonrpsee::types::error::{INTERNAL_ERROR_CODE, INVALID_PARAMS_CODE};
use jsonrpsee::types::{ErrorObjectOwned, Request};
use serde::de::IgnoredAny;

use super::discover;

/// The layer's service: `S` with unknown named parameters refused before it
/// sees them.
#[derive(Clone)]
pub struct NamedParams<S> {
    inner: S,
}

impl<S> NamedParams<S> {
    pub fn new(inner: S) -> NamedParams<S> {
        NamedParams { inner }
    }
}

/// The parameter names of `request` that its method does not take, or
/// None when there are none (or the method takes its parameters some other
/// way: unknown methods, unsubscribe calls, parameters by position; those
/// are answered by the method as before).
fn unknown_names(request: &Request<'_>) -> Option<Vec<String>> {
    let declared = discover::param_names(&request.method)?;
    let params = request.params.as_ref()?;
    let given: BTreeMap<String, IgnoredAny> = serde_json::from_str(params.get()).ok()?;
    let unknown: Vec<String> = given
        .into_keys()
        .filter(|name| !declared.contains(&name.as_str()))
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}

/// The -32602 answer for `unknown` parameters of `method`.
fn refusal(method: &str, unknown: &[String]) -> ErrorObjectOwned {
    let declared = discover::param_names(method).unwrap_or_default();
    let takes = if declared.is_empty() {
        "it takes no parameters".to_string()
    } else {
        format!("it takes {}", declared.join(", "))
    };
    ErrorObjectOwned::owned(
        INVALID_PARAMS_CODE,
        format!(
            "unknown parameter{} {} for {method}; {takes}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        ),
        Some(serde_json::json!({ "unknown": unknown })),
    )
}

/// The -32602 answer to `request` when it names parameters its method does
/// not take: what this layer answers, for a call made without it (a
/// WebSocket call `ws_relay` makes itself).
pub fn refuse(request: &Request<'_>) -> Option<MethodResponse> {
    let unknown = unknown_names(request)?;
    Some(MethodResponse::error(
        request.id.clone(),
        refusal(&request.method, &unknown),
    ))
}

/// The subscription methods and their unsubscribe methods.
const SUBSCRIPTIONS: [&str; 8] = [
    "job.follow_logs",
    "job.unfollow_logs",
    "job.watch",
    "job.unwatch",
    "events.subscribe",
    "events.unsubscribe",
    "store.backup",
    "store.backup_cancel",
];

/// jsonrpsee answers a subscription method called over HTTP with a bare
/// -32603 "Internal error": say what the caller must do instead (the code
/// stays, as documented).
fn over_http(
    answer: MethodResponse,
    method: &str,
    id: jsonrpsee::types::Id<'static>,
) -> MethodResponse {
    let bare = answer.as_error_code() == Some(INTERNAL_ERROR_CODE)
        && answer
            .as_json()
            .get()
            .contains(r#""message":"Internal error""#);
    if !bare {
        return answer;
    }
    let extensions = answer.extensions().clone();
    MethodResponse::error(
        id,
        ErrorObjectOwned::owned::<()>(
            INTERNAL_ERROR_CODE,
            format!("{method} is a subscription method: call it over WebSocket, not HTTP"),
            None,
        ),
    )
    .with_extensions(extensions)
}

impl<S> RpcServiceT for NamedParams<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            match unknown_names(&request) {
                None if SUBSCRIPTIONS.contains(&request.method.as_ref()) => {
                    let (method, id) =
                        (request.method.to_string(), request.id.clone().into_owned());
                    let answer = inner.call(request).await;
                    over_http(answer, &method, id)
                }
                None => inner.call(request).await,
                Some(unknown) => {
                    MethodResponse::error(request.id, refusal(&request.method, &unknown))
                        .with_extensions(request.extensions)
                }
            }
        }
    }

    fn batch<'a>(
        &self,
        mut batch: Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        for entry in batch.iter_mut() {
            let refused = match entry {
                Ok(BatchEntry::Call(request)) => unknown_names(request)
                    .map(|unknown| (request.id(), refusal(&request.method, &unknown))),
                _ => None,
            };
            if let Some((id, error)) = refused {
                *entry = Err(BatchEntryErr::new(id, error));
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(notification)
    }
}

#[cfg(test)]
mod tests {

    use holdfast_api::rpc::HoldfastServer;

    use super::*;

    /// Every method the server registers takes its names from the
    /// `rpc.discover` table, so none escapes the check (unsubscribe calls
    /// take a subscription id and are left to jsonrpsee).
    #[test]
    fn every_method_of_the_trait_is_in_the_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = super::super::RpcServer::for_tests(dir.path());
        let module = server.into_rpc();
        let missing: Vec<&str> = module
            .method_names()
            .filter(|name| {
                !matches!(
                    *name,
                    "job.unwatch"
                        | "job.unfollow_logs"
                        | "store.backup_cancel"
                        | "events.unsubscribe"
                )
            })
            .filter(|name| discover::param_names(name).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "methods the rpc.discover table does not describe: {missing:?}"
        );
    }

    #[test]
    fn unknown_names_are_found_and_named() {
        let params = serde_json::value::to_raw_value(
            &serde_json::json!({"target": "c", "prority": 5, "params": {"x": 1}}),
        )
        .expect("raw");
        let request = Request::borrowed(
            "job.submit",
            Some(&*params),
            jsonrpsee::types::Id::Number(1),
        );
        assert_eq!(unknown_names(&request), Some(vec!["prority".to_string()]));
        let error = refusal("job.submit", &["prority".to_string()]);
        assert_eq!(error.code(), INVALID_PARAMS_CODE);
        assert!(error.message().contains("prority"), "{}", error.message());
    }
}
