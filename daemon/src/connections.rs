//! Connection profiles at work: the check at submission (every connection
//! the target's activities use resolves, through the tenant's mapping, to a
//! loaded profile whose `allow` admits the caller) and, at each attempt's
//! start, the `HF_CONN_<NAME>_<FIELD>` environment with the secret fields
//! read then, so an edited profile or secret file reaches the next attempt
//! without touching a chain.

use std::path::PathBuf;

use holdfast_api::FieldError;
use holdfast_workflow::connection::env_name;
use holdfast_workflow::params::value_as_env;
use holdfast_workflow::tenant::Tenant;
use holdfast_workflow::{Activity, Chain};

use crate::engine::{Caller, SubmitError};
use crate::registry::Registry;

/// Why an attempt cannot be given its connections. Messages name the
/// connection, the profile and where a secret was looked for, never a
/// secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "connection {used}: no profile {profile:?} is loaded; add connections.d/{profile}.toml \
         or fix it (see `hfctl connections`)"
    )]
    Missing { used: String, profile: String },
    #[error("connection {used} (profile {profile}): {field}: {message}")]
    Secret {
        used: String,
        profile: String,
        field: String,
        message: String,
    },
    #[error(
        "the job's tenant {0} is no longer loaded, so its connection profiles are unknown; \
         restore tenants.d/{0}.toml"
    )]
    TenantGone(String),
    #[error(
        "{name} would be set by two connections (names and fields that upper-case alike, \
         like erp-a.host and erp.a_host); rename a field or a connection"
    )]
    Clash { name: String },
}

/// What one attempt gets from its connections.
#[derive(Debug, Default)]
pub struct AttemptConnections {
    /// `HF_CONN_<NAME>_<FIELD>` variables, `..._KIND` included.
    pub env: Vec<(String, String)>,
    /// The secret values among them, for the attempt's output masking.
    pub secrets: Vec<String>,
}

/// The connections of `activity` for a job of `tenant`, resolved against
/// the registry as it is now, secret fields read now. A simulated attempt
/// starts no process and gets none (nothing is read).
pub fn for_attempt(
    registry: &Registry,
    activity: &Activity,
    tenant: Option<&str>,
    simulated: bool,
) -> Result<AttemptConnections, ConnectionError> {
    let mut out = AttemptConnections::default();
    if activity.connections.is_empty() || simulated {
        return Ok(out);
    }
    let tenant = match tenant {
        Some(name) => Some(
            registry
                .tenant(name)
                .ok_or_else(|| ConnectionError::TenantGone(name.to_string()))?,
        ),
        None => None,
    };
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    for used in &activity.connections {
        let profile = tenant.map_or(used.as_str(), |t| t.connection_profile(used));
        let connection = registry
            .connection(profile)
            .ok_or_else(|| ConnectionError::Missing {
                used: used.clone(),
                profile: profile.to_string(),
            })?;
        out.env
            .push((env_name(used, "kind"), connection.kind.clone()));
        for (field, value) in &connection.fields {
            out.env.push((env_name(used, field), value_as_env(value)));
        }
        for (field, source) in &connection.secrets {
            let value =
                source
                    .read(credentials.as_deref())
                    .map_err(|message| ConnectionError::Secret {
                        used: used.clone(),
                        profile: profile.to_string(),
                        field: field.clone(),
                        message,
                    })?;
            let value = value_as_env(&value);
            out.env.push((env_name(used, field), value.clone()));
            out.secrets.push(value);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    if let Some((name, _)) = out.env.iter().find(|(name, _)| !names.insert(name)) {
        return Err(ConnectionError::Clash { name: name.clone() });
    }
    Ok(out)
}

/// The connection names the activities `included` of `chain` use, sorted.
pub fn used_by(chain: &Chain, included: &[bool]) -> std::collections::BTreeSet<String> {
    chain
        .activities
        .iter()
        .zip(included)
        .filter(|(_, included)| **included)
        .flat_map(|(activity, _)| activity.connections.iter().cloned())
        .collect()
}

/// The submission check: each connection the target uses resolves to a
/// loaded profile (else a field error on `connections`, since a profile may
/// be added later without touching the chain) whose `allow` admits the
/// caller (else PERMISSION_DENIED).
pub fn check_submit(
    registry: &Registry,
    chain: &Chain,
    included: &[bool],
    tenant: Option<&Tenant>,
    caller: &Caller,
    problems: &mut Vec<FieldError>,
) -> Result<(), SubmitError> {
    for used in used_by(chain, included) {
        let profile = tenant.map_or(used.as_str(), |t| t.connection_profile(&used));
        let Some(connection) = registry.connection(profile) else {
            problems.push(FieldError {
                field: "connections".into(),
                message: format!(
                    "chain {} uses connection {used}, and no profile {profile:?} is loaded; \
                     add connections.d/{profile}.toml (see `hfctl connections`)",
                    chain.name
                ),
            });
            continue;
        };
        if !crate::access::may_submit_chain(caller, &connection.allow) {
            return Err(SubmitError::PermissionDenied(format!(
                "connection {profile} (used by chain {} as {used}) may be used only by {}",
                chain.name,
                connection.allow.join(", ")
            )));
        }
    }
    Ok(())
}

/// The check of a reprocess (`job.retry`): the profiles' `allow` as they
/// are now, through the job's tenant; a profile missing now is left to the
/// attempt's start, which says so.
pub fn check_reprocess(
    registry: &Registry,
    chain: &Chain,
    included: &[bool],
    tenant: Option<&str>,
    caller: &Caller,
) -> Result<(), SubmitError> {
    let tenant = tenant.and_then(|name| registry.tenant(name)).map(|t| &**t);
    check_submit(registry, chain, included, tenant, caller, &mut Vec::new())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use holdfast_workflow::connection::parse_connection;

    use super::*;
    use crate::registry::ConnectionEntry;

    fn registry(profiles: &[(&str, &str)]) -> Registry {
        let mut registry = Registry::default();
        for (name, text) in profiles {
            let file = Path::new("/c").join(format!("{name}.toml"));
            registry.connections.insert(
                name.to_string(),
                ConnectionEntry {
                    name: name.to_string(),
                    file: file.clone(),
                    connection: Some(Arc::new(parse_connection(&file, text).unwrap())),
                    errors: Vec::new(),
                },
            );
        }
        registry
    }

    fn activity(connections: &str) -> Activity {
        let source =
            format!("[process.p.activity.a]\ncommand = [\"true\"]\nconnections = {connections}\n");
        holdfast_workflow::parse_chain(Path::new("c.toml"), &source)
            .unwrap()
            .activities
            .remove(0)
    }

    #[test]
    fn fields_become_variables_and_secrets_are_listed() {
        let registry = registry(&[(
            "erp",
            "[connection]\nkind = \"pg\"\nhost = \"db\"\nport = 5432\npassword = \"pw\"\n",
        )]);
        let got = for_attempt(&registry, &activity("[\"erp\"]"), None, false).unwrap();
        assert_eq!(
            got.env,
            [
                ("HF_CONN_ERP_KIND".to_string(), "pg".to_string()),
                ("HF_CONN_ERP_HOST".to_string(), "db".to_string()),
                ("HF_CONN_ERP_PORT".to_string(), "5432".to_string()),
                ("HF_CONN_ERP_PASSWORD".to_string(), "pw".to_string()),
            ]
        );
        assert_eq!(got.secrets, ["pw"]);
        let simulated = for_attempt(&registry, &activity("[\"erp\"]"), None, true).unwrap();
        assert!(simulated.env.is_empty());
    }

    #[test]
    fn names_that_upper_case_alike_are_refused() {
        let registry = registry(&[
            ("erp", "[connection]\nkind = \"x\"\na_host = \"one\"\n"),
            ("erp-a", "[connection]\nkind = \"x\"\nhost = \"two\"\n"),
        ]);
        let error =
            for_attempt(&registry, &activity("[\"erp\", \"erp-a\"]"), None, false).unwrap_err();
        assert!(
            matches!(&error, ConnectionError::Clash { name } if name == "HF_CONN_ERP_A_HOST"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_profile_is_named() {
        let error = for_attempt(&registry(&[]), &activity("[\"erp\"]"), None, false).unwrap_err();
        assert!(error.to_string().contains("no profile \"erp\""), "{error}");
    }
}
