//! `connection.list`: every connection profile, loaded or broken, with the
//! chains that use it. Operators see its fields (hosts, ports, users);
//! everyone else sees names, kinds and which secret fields exist. No one
//! ever gets a secret's value: secrets are listed by name, as `***`.

use std::collections::BTreeSet;

use holdfast_api::ConnectionSummary;
use holdfast_workflow::params::MASK;
use jsonrpsee::core::RpcResult;
use serde_json::Value;

use super::RpcServer;
use crate::engine::Caller;
use crate::registry::Registry;

pub(super) fn list(server: &RpcServer, caller: &Caller) -> RpcResult<Vec<ConnectionSummary>> {
    let registry = server.engine.registry.borrow().clone();
    let operator = crate::access::is_operator(caller, &server.settings);
    Ok(registry
        .connections
        .values()
        .map(|entry| {
            let connection = entry.connection.as_deref();
            let secrets: Vec<String> = connection
                .map(|c| c.secrets.keys().cloned().collect())
                .unwrap_or_default();
            ConnectionSummary {
                name: entry.name.clone(),
                file: entry.file.display().to_string(),
                status: if entry.errors.is_empty() {
                    "loaded".into()
                } else {
                    "broken".into()
                },
                kind: connection.map(|c| c.kind.clone()),
                description: connection.and_then(|c| c.description.clone()),
                fields: connection.filter(|_| operator).map(|c| {
                    let mut shown = c
                        .fields
                        .clone()
                        .into_iter()
                        .collect::<serde_json::Map<_, _>>();
                    for name in &secrets {
                        shown.insert(name.clone(), Value::from(MASK));
                    }
                    shown
                }),
                secrets,
                allow: connection.map(|c| c.allow.clone()).unwrap_or_default(),
                used_by: used_by(&registry, &entry.name),
                errors: entry.errors.clone(),
            }
        })
        .collect())
}

/// The chains whose jobs would use profile `profile`: `chain` when a chain
/// uses that name and no tenant is given, `chain (tenant NAME)` when a
/// tenant that may run the chain maps the chain's name to it.
fn used_by(registry: &Registry, profile: &str) -> Vec<String> {
    let mut users = BTreeSet::new();
    for chain in registry.entries.values().filter_map(|e| e.chain.as_ref()) {
        let names: BTreeSet<&str> = chain
            .activities
            .iter()
            .flat_map(|a| a.connections.iter().map(String::as_str))
            .collect();
        for used in names {
            if used == profile {
                users.insert(chain.name.clone());
            }
            for tenant in registry.tenants.values().filter_map(|t| t.tenant.as_ref()) {
                if tenant.may_run(&chain.name)
                    && tenant.connections.contains_key(used)
                    && tenant.connection_profile(used) == profile
                {
                    users.insert(format!("{} (tenant {})", chain.name, tenant.name));
                }
            }
        }
    }
    users.into_iter().collect()
}
