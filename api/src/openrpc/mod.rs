//! The OpenRPC 1.2.6 document of the API (`rpc.discover`), derived from the
//! wire types: every schema comes from a Rust type through
//! `schemars::JsonSchema` (the `#[serde(...)]` attributes are honoured), so
//! the document cannot drift from what the daemon sends. `methods.rs` lists
//! the methods of the trait with their parameter, result and item types.
//!
//! Subscriptions, which OpenRPC has no notion of, are methods with an
//! `x-subscription` extension (the notification method, the unsubscribe
//! method and the schema of the notification's `params`); each unsubscribe
//! method is a method of its own (`x-unsubscribe` names its subscription).

mod methods;

use schemars::generate::{Contract, SchemaGenerator, SchemaSettings};
use schemars::transform::{RemoveRefSiblings, Transform};
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ErrorCode;

/// Makes the schema of one Rust type, a `$ref` into `components.schemas`
/// for a named type.
pub type Shape = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T` (a `$ref` for structs and enums).
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A parameter type as the trait declares it: `Option<T>` is an optional
/// parameter described by `T`'s schema, anything else a required one.
pub trait ParamType {
    const REQUIRED: bool;
    fn shape(generator: &mut SchemaGenerator) -> Schema;
}

impl<T: JsonSchema> ParamType for Option<T> {
    const REQUIRED: bool = false;
    fn shape(generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

macro_rules! required_params {
    ($($ty:ty),* $(,)?) => {$(
        impl ParamType for $ty {
            const REQUIRED: bool = true;
            fn shape(generator: &mut SchemaGenerator) -> Schema {
                generator.subschema_for::<$ty>()
            }
        }
    )*};
}

required_params!(
    u64,
    u32,
    i32,
    bool,
    String,
    Vec<u64>,
    Vec<String>,
    SubscriptionId
);

/// One named parameter of a method.
#[derive(Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub required: bool,
    pub shape: Shape,
    pub description: Option<&'static str>,
}

/// A parameter `name` of the trait's type `T`.
pub const fn p<T: ParamType>(name: &'static str) -> Param {
    Param {
        name,
        required: T::REQUIRED,
        shape: T::shape,
        description: None,
    }
}

impl Param {
    /// The same parameter with a description for people.
    pub const fn describe(self, text: &'static str) -> Param {
        Param {
            description: Some(text),
            ..self
        }
    }
}

/// An error a method can answer with, referenced from its `errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodError {
    /// -32602: a parameter missing, of the wrong type or unknown.
    InvalidParams,
    /// -32603: the store or a log file could not be read.
    Internal,
    /// An application code.
    App(ErrorCode),
}

/// The JSON-RPC codes every answer may carry, as `components.errors`
/// names them: (name, code, message).
const STANDARD_ERRORS: [(&str, i32, &str); 5] = [
    (
        "PARSE_ERROR",
        jsonrpsee::types::error::PARSE_ERROR_CODE,
        "parse error: the body is not JSON",
    ),
    (
        "INVALID_REQUEST",
        jsonrpsee::types::error::INVALID_REQUEST_CODE,
        "invalid request: not a JSON-RPC 2.0 request",
    ),
    (
        "METHOD_NOT_FOUND",
        jsonrpsee::types::error::METHOD_NOT_FOUND_CODE,
        "method not found",
    ),
    (
        "INVALID_PARAMS",
        jsonrpsee::types::error::INVALID_PARAMS_CODE,
        "invalid params: a parameter missing, of the wrong type, or not one the method takes",
    ),
    (
        "INTERNAL_ERROR",
        jsonrpsee::types::error::INTERNAL_ERROR_CODE,
        "internal error: the store or a log file could not be read",
    ),
];

/// Application codes with the message `components.errors` gives them.
const APP_ERRORS: [(ErrorCode, &str); 5] = [
    (
        ErrorCode::NotFound,
        "not found: a job, chain, activity, attempt, log or schedule that does not exist",
    ),
    (
        ErrorCode::InvalidParameters,
        "invalid parameters: the submission does not match the chain; data lists every bad field",
    ),
    (
        ErrorCode::PermissionDenied,
        "permission denied: the caller's credentials do not allow this",
    ),
    (
        ErrorCode::InvalidState,
        "invalid state: the object's state does not allow the call",
    ),
    (
        ErrorCode::Unavailable,
        "unavailable: the store cannot write or the daemon is stopping; try again later",
    ),
];

impl MethodError {
    /// The key under `components.errors`.
    pub fn name(self) -> &'static str {
        match self {
            MethodError::InvalidParams => "INVALID_PARAMS",
            MethodError::Internal => "INTERNAL_ERROR",
            MethodError::App(code) => code.name(),
        }
    }
}

/// What kind of method an entry is.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A call answered with its result.
    Call,
    /// A subscription: answered with a [`SubscriptionId`], then sends
    /// `notification`s carrying `item`s until it closes.
    Subscription {
        notification: &'static str,
        unsubscribe: &'static str,
        item: Shape,
        notification_params: Shape,
    },
    /// Ends the subscription `of`; takes the id by position.
    Unsubscribe { of: &'static str },
}

/// One method of the trait.
#[derive(Clone, Copy)]
pub struct MethodSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    pub result: Shape,
    pub errors: &'static [MethodError],
    pub kind: Kind,
}

impl MethodSpec {
    const fn call(
        name: &'static str,
        summary: &'static str,
        params: &'static [Param],
        result: Shape,
        errors: &'static [MethodError],
    ) -> MethodSpec {
        MethodSpec {
            name,
            summary,
            params,
            result,
            errors,
            kind: Kind::Call,
        }
    }

    /// A subscription whose notifications carry `T`s.
    const fn subscription<T: JsonSchema>(
        name: &'static str,
        summary: &'static str,
        params: &'static [Param],
        notification: &'static str,
        unsubscribe: &'static str,
        errors: &'static [MethodError],
    ) -> MethodSpec {
        MethodSpec {
            name,
            summary,
            params,
            result: schema::<SubscriptionId>,
            errors,
            kind: Kind::Subscription {
                notification,
                unsubscribe,
                item: schema::<T>,
                notification_params: schema::<Notification<T>>,
            },
        }
    }

    const fn unsubscribe(name: &'static str, of: &'static str) -> MethodSpec {
        MethodSpec {
            name,
            summary: "End a subscription; answers whether it was open.",
            params: methods::UNSUBSCRIBE_PARAMS,
            result: methods::UNSUBSCRIBE_RESULT,
            errors: &[MethodError::InvalidParams],
            kind: Kind::Unsubscribe { of },
        }
    }
}

/// Every method of the trait, subscriptions and unsubscribe calls
/// included.
pub fn methods() -> &'static [MethodSpec] {
    methods::METHODS
}

/// The named parameters `method` takes, or None for a method that does not
/// take its parameters by name (unsubscribe calls) or does not exist. The
/// daemon refuses other names with this list, so what is described and
/// what is accepted cannot drift.
pub fn param_names(method: &str) -> Option<Vec<&'static str>> {
    methods::METHODS
        .iter()
        .find(|m| m.name == method && !matches!(m.kind, Kind::Unsubscribe { .. }))
        .map(|m| m.params.iter().map(|p| p.name).collect())
}

/// A subscription id: the answer of a subscribe call and the
/// `subscription` of each of its notifications (an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionId(pub u64);

/// The `params` of a subscription's notification: an item, or the close
/// notification's message instead.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Notification_{T}")]
pub enum Notification<T> {
    Item {
        subscription: SubscriptionId,
        result: T,
    },
    /// The subscription has nothing more to send (`job 5 finished`, ...).
    Close {
        subscription: SubscriptionId,
        error: String,
    },
}

/// `info` of the document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiscoveryInfo {
    pub title: String,
    pub version: String,
    pub description: String,
}

/// `components` of the document.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiscoveryComponents {
    /// JSON Schemas by name: the wire types, and `params.CHAIN` for each
    /// loaded chain's parameters.
    pub schemas: Map<String, Value>,
    /// Error objects by name, `{code, message}`.
    pub errors: Map<String, Value>,
}

/// The answer of `rpc.discover`: an OpenRPC 1.2.6 document (see
/// <https://spec.open-rpc.org>).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Discovery {
    pub openrpc: String,
    pub info: DiscoveryInfo,
    /// OpenRPC method objects.
    pub methods: Vec<Map<String, Value>>,
    pub components: DiscoveryComponents,
}

/// A generator whose `$ref`s point into `components.schemas`, for JSON
/// Schema draft 7 (the dialect of the OpenRPC meta-schema), describing
/// what the daemon sends (a field always sent is required). Parameters use
/// the same generator: their types (numbers, strings, `JobState`, maps,
/// lists) read the same both ways.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
            s.contract = Contract::Serialize;
        })
        .into_generator()
}

/// A schema made by `shape`, as a JSON value, draft 7.
fn make(generator: &mut SchemaGenerator, shape: Shape) -> Value {
    let mut schema = shape(generator);
    RemoveRefSiblings::default().transform(&mut schema);
    schema.to_value()
}

/// An OpenRPC content descriptor.
fn descriptor(name: &str, required: bool, schema: Value, description: Option<&str>) -> Value {
    let mut d = json!({"name": name, "required": required, "schema": schema});
    if let Some(text) = description {
        d["description"] = json!(text);
    }
    d
}

fn method_object(generator: &mut SchemaGenerator, spec: &MethodSpec) -> Map<String, Value> {
    let params: Vec<Value> = spec
        .params
        .iter()
        .map(|p| {
            let schema = make(generator, p.shape);
            descriptor(p.name, p.required, schema, p.description)
        })
        .collect();
    let result = make(generator, spec.result);
    let errors: Vec<Value> = spec
        .errors
        .iter()
        .map(|e| json!({"$ref": format!("#/components/errors/{}", e.name())}))
        .collect();
    let structure = match spec.kind {
        Kind::Unsubscribe { .. } => "by-position",
        _ => "by-name",
    };
    let mut method = Map::new();
    method.insert("name".into(), json!(spec.name));
    method.insert("summary".into(), json!(spec.summary));
    method.insert("paramStructure".into(), json!(structure));
    method.insert("params".into(), json!(params));
    method.insert("result".into(), descriptor("result", true, result, None));
    method.insert("errors".into(), json!(errors));
    match spec.kind {
        Kind::Call => {}
        Kind::Subscription {
            notification,
            unsubscribe,
            item,
            notification_params,
        } => {
            let item = make(generator, item);
            let params = make(generator, notification_params);
            method.insert(
                "x-subscription".into(),
                json!({
                    "notification": notification,
                    "unsubscribe": unsubscribe,
                    "item": item,
                    "params": params,
                }),
            );
        }
        Kind::Unsubscribe { of } => {
            method.insert("x-unsubscribe".into(), json!(of));
        }
    }
    method
}

/// The document without the per-chain parameter schemas, which the daemon
/// adds from its registry at call time.
pub fn document(version: &str) -> Discovery {
    let mut generator = generator();
    let methods = methods::METHODS
        .iter()
        .map(|spec| method_object(&mut generator, spec))
        .collect();
    let mut errors = Map::new();
    for (name, code, message) in STANDARD_ERRORS {
        errors.insert(name.into(), json!({"code": code, "message": message}));
    }
    for (code, message) in APP_ERRORS {
        errors.insert(
            code.name().into(),
            json!({"code": code.code(), "message": message}),
        );
    }
    Discovery {
        openrpc: "1.2.6".into(),
        info: DiscoveryInfo {
            title: "HoldFast".into(),
            version: version.into(),
            description: format!(
                "HoldFast daemon JSON-RPC API, protocol {}",
                crate::PROTOCOL_VERSION
            ),
        },
        methods,
        components: DiscoveryComponents {
            schemas: generator.take_definitions(true),
            errors,
        },
    }
}

#[cfg(test)]
mod tests;
