//! `rpc.discover`: the OpenRPC 1.2.6 document `holdfast_api::openrpc`
//! derives from the wire types, plus what only the daemon knows: each
//! loaded chain's parameters as a JSON Schema (`params.CHAIN`, referenced
//! from `x-chain-params` of `job.submit` and `job.plan`), built from the
//! registry at call time for generated clients and forms.

use holdfast_workflow::{Chain, ParamKind};
use serde_json::{Map, Value, json};

use super::RpcServer;

/// The named parameters `method` takes, or None for a method that takes
/// none by name. The named-parameter check (`named_params`) reads the same
/// table the document is made from, so what is described and what is
/// accepted cannot drift.
pub(super) fn param_names(method: &str) -> Option<Vec<&'static str>> {
    holdfast_api::openrpc::param_names(method)
}

/// The JSON Schema of one chain's parameters.
pub fn params_schema(chain: &Chain) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for spec in chain.params.values() {
        let mut schema = match spec.kind {
            ParamKind::String => json!({"type": "string"}),
            ParamKind::Int => json!({"type": "integer"}),
            ParamKind::Float => json!({"type": "number"}),
            ParamKind::Bool => json!({"type": "boolean"}),
            ParamKind::Date => json!({"type": "string", "format": "date"}),
            ParamKind::DateTime => json!({"type": "string", "format": "date-time"}),
            ParamKind::Json => json!({}),
        };
        if let Value::Object(map) = &mut schema {
            if let Some(d) = &spec.description {
                map.insert("description".into(), json!(d));
            }
            if let Some(d) = &spec.default {
                map.insert("default".into(), d.clone());
            }
            if let Some(values) = &spec.allowed {
                map.insert("enum".into(), json!(values));
            }
            if let Some(p) = &spec.pattern {
                map.insert("pattern".into(), json!(format!("^(?:{p})$")));
            }
            if let Some(min) = &spec.min {
                map.insert("minimum".into(), min.clone());
            }
            if let Some(max) = &spec.max {
                map.insert("maximum".into(), max.clone());
            }
        }
        if spec.required && spec.default.is_none() {
            required.push(json!(spec.name));
        }
        properties.insert(spec.name.clone(), schema);
    }
    json!({
        "type": "object",
        "title": format!("{} parameters", chain.name),
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

pub(super) fn handle(server: &RpcServer) -> Value {
    let registry = server.engine.registry.borrow().clone();
    let mut document = holdfast_api::openrpc::document(env!("CARGO_PKG_VERSION"));
    let mut chain_params = Map::new();
    for entry in registry.entries.values() {
        if let Some(chain) = &entry.chain {
            let name = format!("params.{}", chain.name);
            document
                .components
                .schemas
                .insert(name.clone(), params_schema(chain));
            chain_params.insert(
                chain.name.clone(),
                json!({"$ref": format!("#/components/schemas/{name}")}),
            );
        }
    }
    for method in &mut document.methods {
        if matches!(
            method.get("name").and_then(Value::as_str),
            Some("job.submit" | "job.plan")
        ) {
            method.insert("x-chain-params".into(), Value::Object(chain_params.clone()));
        }
    }
    // Strings, numbers and maps with string keys: serializing cannot fail.
    serde_json::to_value(document).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use holdfast_api::rpc::HoldfastServer;

    use super::*;

    /// The document lists exactly the methods the server registers:
    /// calls, subscriptions and their unsubscribe methods.
    #[test]
    fn every_method_of_the_trait_is_in_the_document() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = RpcServer::for_tests(dir.path());
        let document = handle(&server);
        let described: BTreeSet<String> = document["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .map(|m| m["name"].as_str().expect("name").to_string())
            .collect();
        let registered: BTreeSet<String> = server
            .into_rpc()
            .method_names()
            .map(str::to_string)
            .collect();
        assert_eq!(described, registered);
        assert!(described.contains("job.unwatch"));
    }
}
