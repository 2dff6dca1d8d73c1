//! Tenant files (`tenants.d/<name>.toml`): a company's parameter values, the
//! chains it may run and the Unix groups that may submit for it.
//!
//! ```toml
//! description = "Afinia"
//! chains = ["nightly-etl"]     # omitted: every chain
//! groups = ["etl-afinia"]      # omitted: anyone who may submit
//! [params]
//! company = "AF"
//! region = { value = "north", locked = true }   # no submission overrides it
//! [secrets]                    # values never shown; see `crate::secret`
//! db_password = { file = "/etc/holdfast/secrets/afinia-db.pw" }
//! [connections]                # a chain's `erp` is this tenant's `erp-afinia`
//! erp = "erp-afinia"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use holdfast_api::LoadError;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::parse::{line_column, valid_name};
use crate::secret::SecretSource;
use indexmap::IndexMap;

/// One tenant, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// The file stem.
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    /// Chains this tenant may run; None means every chain.
    pub chains: Option<Vec<String>>,
    /// Unix groups whose members may submit for this tenant; empty means no
    /// restriction beyond the socket's own access rules.
    pub groups: Vec<String>,
    /// Parameter values. Keys a chain does not declare are ignored for that
    /// chain, since one tenant serves many chains.
    pub params: Map<String, Value>,
    /// Parameters of `params` written `{ value = ..., locked = true }`: a
    /// submission (or a schedule) that gives its own value is refused, for
    /// everyone, operators included.
    pub locked: BTreeSet<String>,
    /// Secret parameter values (`[secrets]`): read when a job is prepared,
    /// shown as `***` everywhere, and secret in every job they fill, whether
    /// or not the chain declares the parameter `secret`.
    pub secrets: IndexMap<String, SecretSource>,
    /// `[connections]`: the connection profile this tenant's jobs use for a
    /// name a chain uses. A name not listed is the profile of that name.
    pub connections: IndexMap<String, String>,
}

impl Tenant {
    pub fn may_run(&self, chain: &str) -> bool {
        self.chains
            .as_ref()
            .is_none_or(|chains| chains.iter().any(|c| c == chain || c == "*"))
    }

    /// The profile this tenant's jobs use for the connection a chain calls
    /// `used`: its `[connections]` mapping, else the profile of that name.
    pub fn connection_profile<'a>(&'a self, used: &'a str) -> &'a str {
        self.connections.get(used).map_or(used, String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    description: Option<String>,
    chains: Option<Vec<String>>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    secrets: toml::Table,
    #[serde(default)]
    connections: IndexMap<String, String>,
}

fn error(file: &Path, source: &str, offset: Option<usize>, message: String) -> LoadError {
    let (line, column) = match offset {
        Some(at) => {
            let (l, c) = line_column(source, at);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    LoadError {
        file: file.display().to_string(),
        line,
        column,
        message,
    }
}

/// Parse one tenant file's text.
pub fn parse_tenant(file: &Path, source: &str) -> Result<Tenant, Vec<LoadError>> {
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let mut errors = Vec::new();
    if !valid_name(&name) {
        errors.push(error(
            file,
            source,
            None,
            format!(
                "invalid tenant name {name:?} (the file name): use lowercase letters, digits, \"_\" and \"-\""
            ),
        ));
    }
    let raw: RawTenant = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().replace("field", "key");
            errors.push(error(file, source, e.span().map(|s| s.start), message));
            return Err(errors);
        }
    };
    let (plain, locked) = unwrap_locked(raw.params, &mut |message| {
        errors.push(error(file, source, None, format!("[params] {message}")))
    });
    // The same conversion chain files use, so a TOML date (`day =
    // 2024-01-01`) means the same in both.
    let params = match crate::parse::toml_to_json(&toml::Value::Table(plain)) {
        Ok(Value::Object(map)) => map,
        Ok(_) => Map::new(),
        Err(message) => {
            errors.push(error(file, source, None, format!("[params]: {message}")));
            Map::new()
        }
    };
    let mut secrets = IndexMap::new();
    for (name, value) in &raw.secrets {
        if params.contains_key(name) {
            errors.push(error(
                file,
                source,
                None,
                format!("{name} is in both [params] and [secrets]; keep it in [secrets] only"),
            ));
        }
        match SecretSource::from_toml(value) {
            Ok(secret) => {
                secrets.insert(name.clone(), secret);
            }
            Err(message) => errors.push(error(
                file,
                source,
                None,
                format!("[secrets] {name}: {message}"),
            )),
        }
    }
    for (used, profile) in &raw.connections {
        if !valid_name(used) || !valid_name(profile) {
            errors.push(error(
                file,
                source,
                None,
                format!(
                    "[connections] {used} = {profile:?}: connection names use lowercase \
                     letters, digits, \"_\" and \"-\""
                ),
            ));
        }
    }
    for chain in raw.chains.iter().flatten() {
        if chain != "*" && !valid_name(chain) {
            errors.push(error(
                file,
                source,
                None,
                format!("invalid chain name {chain:?} in chains"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Tenant {
        name,
        file: file.to_path_buf(),
        description: raw.description,
        chains: raw.chains,
        groups: raw.groups,
        params,
        locked,
        secrets,
        connections: raw.connections,
    })
}

/// `[params]` with every `name = { value = ..., locked = true }` replaced by
/// its value, and the names whose `locked` is true. A table is read this
/// way only when it has a `locked` key and no key but `value` and
/// `locked`: any other table is a `json` parameter's value.
fn unwrap_locked(
    params: toml::Table,
    problem: &mut dyn FnMut(String),
) -> (toml::Table, BTreeSet<String>) {
    let mut plain = toml::Table::new();
    let mut locked = BTreeSet::new();
    for (name, value) in params {
        let wrapped = value.as_table().is_some_and(|table| {
            table.contains_key("locked") && table.keys().all(|k| k == "value" || k == "locked")
        });
        if !wrapped {
            plain.insert(name, value);
            continue;
        }
        let toml::Value::Table(mut table) = value else {
            continue;
        };
        match table.remove("locked") {
            Some(toml::Value::Boolean(true)) => {
                locked.insert(name.clone());
            }
            Some(toml::Value::Boolean(false)) => {}
            _ => problem(format!("{name}: locked is true or false")),
        }
        match table.remove("value") {
            Some(value) => {
                plain.insert(name, value);
            }
            None => problem(format!(
                "{name}: a locked parameter needs its value: {name} = {{ value = ..., locked = true }}"
            )),
        }
    }
    (plain, locked)
}

/// Read and parse one tenant file.
pub fn load_tenant(path: &Path) -> Result<Tenant, Vec<LoadError>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![LoadError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        }]
    })?;
    parse_tenant(path, &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_tenant() {
        let t = parse_tenant(
            Path::new("/t/afinia.toml"),
            "description = \"Afinia\"\nchains = [\"nightly-etl\"]\ngroups = [\"etl\"]\n[params]\ncompany = \"AF\"\nlimit = 5\n",
        )
        .expect("valid");
        assert_eq!(t.name, "afinia");
        assert!(t.may_run("nightly-etl"));
        assert!(!t.may_run("other"));
        assert_eq!(t.params.get("limit"), Some(&Value::from(5)));
    }

    #[test]
    fn unknown_key_has_a_position() {
        let errors = parse_tenant(Path::new("/t/x.toml"), "description = \"x\"\nbogus = 1\n")
            .expect_err("unknown key");
        assert_eq!(errors[0].line, Some(2));
        assert_eq!(errors[0].column, Some(1));
    }

    #[test]
    fn secrets_are_kept_apart_from_params() {
        let t = parse_tenant(
            Path::new("/t/x.toml"),
            "[params]\nhost = \"db\"\n[secrets]\npw = { file = \"/etc/pw\" }\npin = \"1234\"\n",
        )
        .expect("valid");
        assert!(!t.params.contains_key("pw"));
        assert_eq!(t.secrets["pw"], SecretSource::File("/etc/pw".into()));
        assert_eq!(t.secrets["pin"], SecretSource::Value(Value::from("1234")));
        let errors = parse_tenant(
            Path::new("/t/x.toml"),
            "[params]\npw = \"a\"\n[secrets]\npw = \"b\"\nkey = { path = \"/x\" }\n",
        )
        .expect_err("duplicate and bad source");
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn connections_map_names_to_profiles() {
        let t = parse_tenant(
            Path::new("/t/afinia.toml"),
            "[connections]\nerp = \"erp-afinia\"\n",
        )
        .expect("valid");
        assert_eq!(t.connections["erp"], "erp-afinia");
        assert!(parse_tenant(Path::new("/t/x.toml"), "[connections]\nerp = \"../x\"\n").is_err());
    }

    #[test]
    fn locked_values_are_unwrapped() {
        let t = parse_tenant(
            Path::new("/t/afinia.toml"),
            "[params]\ncompany = { value = \"afinia\", locked = true }\nregion = { value = \"n\", locked = false }\nshape = { value = 1 }\n",
        )
        .expect("valid");
        assert_eq!(t.params["company"], Value::from("afinia"));
        assert_eq!(t.params["region"], Value::from("n"));
        assert!(t.locked.contains("company") && !t.locked.contains("region"));
        // Without `locked`, a table is a json parameter's value.
        assert_eq!(t.params["shape"], serde_json::json!({"value": 1}));
        let errors = parse_tenant(
            Path::new("/t/x.toml"),
            "[params]\na = { locked = true }\nb = { value = 1, locked = \"yes\" }\n",
        )
        .expect_err("no value, locked not a bool");
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn no_chains_means_every_chain() {
        let t = parse_tenant(Path::new("/t/x.toml"), "").expect("valid");
        assert!(t.may_run("anything"));
    }
}
