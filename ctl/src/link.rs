//! The transport under a [`crate::daemon::Daemon`]: one-shot HTTP calls for
//! commands that only call, a WebSocket for those that subscribe (`--wait`,
//! `--follow`, `watch`, `events`, `logs -f`, `backup`). Both answer the same
//! generated `HoldfastClient` methods.

use holdfast_api::oneshot::OneShot;
use jsonrpsee::core::client::{
    BatchResponse, Client, ClientT, Error as ClientError, Subscription, SubscriptionClientT,
};
use jsonrpsee::core::params::BatchRequestBuilder;
use jsonrpsee::core::traits::ToRpcParams;
use serde::de::DeserializeOwned;

/// One connection to the daemon, of either kind.
#[derive(Debug)]
pub enum Link {
    /// Each call one HTTP `POST`, the protocol checked by the daemon in the
    /// same exchange; no subscriptions.
    OneShot(OneShot),
    /// A WebSocket, checked with `daemon.info` when it was opened.
    WebSocket(Client),
}

impl ClientT for Link {
    async fn notification<Params>(&self, method: &str, params: Params) -> Result<(), ClientError>
    where
        Params: ToRpcParams + Send,
    {
        match self {
            Link::OneShot(client) => client.notification(method, params).await,
            Link::WebSocket(client) => client.notification(method, params).await,
        }
    }

    async fn request<R, Params>(&self, method: &str, params: Params) -> Result<R, ClientError>
    where
        R: DeserializeOwned,
        Params: ToRpcParams + Send,
    {
        match self {
            Link::OneShot(client) => client.request(method, params).await,
            Link::WebSocket(client) => client.request(method, params).await,
        }
    }

    async fn batch_request<'a, R>(
        &self,
        batch: BatchRequestBuilder<'a>,
    ) -> Result<BatchResponse<'a, R>, ClientError>
    where
        R: DeserializeOwned + std::fmt::Debug + 'a,
    {
        match self {
            Link::OneShot(client) => client.batch_request(batch).await,
            Link::WebSocket(client) => client.batch_request(batch).await,
        }
    }
}

impl SubscriptionClientT for Link {
    async fn subscribe<'a, Notif, Params>(
        &self,
        subscribe_method: &'a str,
        params: Params,
        unsubscribe_method: &'a str,
    ) -> Result<Subscription<Notif>, ClientError>
    where
        Params: ToRpcParams + Send,
        Notif: DeserializeOwned,
    {
        match self {
            Link::OneShot(client) => {
                client
                    .subscribe(subscribe_method, params, unsubscribe_method)
                    .await
            }
            Link::WebSocket(client) => {
                client
                    .subscribe(subscribe_method, params, unsubscribe_method)
                    .await
            }
        }
    }

    async fn subscribe_to_method<Notif>(
        &self,
        method: &str,
    ) -> Result<Subscription<Notif>, ClientError>
    where
        Notif: DeserializeOwned,
    {
        match self {
            Link::OneShot(client) => client.subscribe_to_method(method).await,
            Link::WebSocket(client) => client.subscribe_to_method(method).await,
        }
    }
}
