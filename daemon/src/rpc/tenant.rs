//! `tenant.list`: every tenant file, loaded or broken.

use holdfast_api::TenantSummary;
use holdfast_workflow::params::MASK;
use jsonrpsee::core::RpcResult;

use super::RpcServer;

pub(super) fn list(server: &RpcServer) -> RpcResult<Vec<TenantSummary>> {
    let registry = server.engine.registry.borrow().clone();
    // A value a loaded chain declares secret is masked even when the
    // tenant file keeps it under [params] instead of [secrets].
    let secret = registry.secret_param_names();
    Ok(registry
        .tenants
        .values()
        .map(|entry| {
            let tenant = entry.tenant.as_deref();
            TenantSummary {
                name: entry.name.clone(),
                file: entry.file.display().to_string(),
                status: if entry.errors.is_empty() {
                    "loaded".into()
                } else {
                    "broken".into()
                },
                description: tenant.and_then(|t| t.description.clone()),
                chains: tenant.and_then(|t| t.chains.clone()),
                groups: tenant.map(|t| t.groups.clone()).unwrap_or_default(),
                // `[secrets]` are listed by name, never by value.
                params: tenant
                    .map(|t| {
                        let mut shown = t.params.clone();
                        for (name, value) in shown.iter_mut() {
                            if secret.contains(name.as_str()) {
                                *value = MASK.into();
                            }
                        }
                        for name in t.secrets.keys() {
                            shown.insert(name.clone(), MASK.into());
                        }
                        shown
                    })
                    .unwrap_or_default(),
                locked: tenant
                    .map(|t| t.locked.iter().cloned().collect())
                    .unwrap_or_default(),
                error: entry.errors.first().cloned(),
            }
        })
        .collect())
}
