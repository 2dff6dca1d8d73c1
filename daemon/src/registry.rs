//! The registry: every workflow file of `workflows.d/`, tenant file of
//! `tenants.d/` and connection profile of `connections.d/`, loaded or broken. A broken file keeps the last good version
//! of its chain or tenant (if any) and carries its errors so `hfctl
//! workflows` and `hfctl tenants` can show them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_api::LoadError;
use holdfast_workflow::connection::{Connection, load_connection};
use holdfast_workflow::tenant::{Tenant, load_tenant};
use holdfast_workflow::{Chain, load_file, parse};

use crate::settings::Settings;

/// One chain name's entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub file: PathBuf,
    /// The chain jobs are submitted against: the current file if it is valid,
    /// else the last good version.
    pub chain: Option<Arc<Chain>>,
    /// Errors of the current file, if it is broken.
    pub errors: Vec<LoadError>,
    /// The file is refused (also) for what the user database answered
    /// about a user or group it names, which may change without the file
    /// changing: the engine reads it again every `run_as_recheck`.
    pub unconfirmed: bool,
    /// Per activity of `chain`: whether it runs with uid 0, as the user
    /// database answered when that version was loaded (`hfctl describe`
    /// says so without asking it again).
    pub runs_as_root: Arc<Vec<bool>>,
    /// The chain's `[notify.NAME]` rules, checked, of the same version as
    /// `chain`.
    pub notify: Arc<Vec<crate::notify::Rule>>,
}

/// One tenant file's entry.
#[derive(Debug, Clone)]
pub struct TenantEntry {
    pub name: String,
    pub file: PathBuf,
    /// The current file if valid, else the last good version.
    pub tenant: Option<Arc<Tenant>>,
    pub errors: Vec<LoadError>,
}

/// One connection profile file's entry.
#[derive(Debug, Clone)]
pub struct ConnectionEntry {
    pub name: String,
    pub file: PathBuf,
    /// The current file if valid, else the last good version.
    pub connection: Option<Arc<Connection>>,
    pub errors: Vec<LoadError>,
}

/// All chains, tenants and connection profiles by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// The last event id the engine had given out when it took this
    /// registry: a rule first loaded with it notifies what comes after.
    pub events_before: u64,
    pub entries: BTreeMap<String, Entry>,
    pub tenants: BTreeMap<String, TenantEntry>,
    pub connections: BTreeMap<String, ConnectionEntry>,
}

impl Registry {
    /// Whether a file is refused for what the user database answered
    /// ([`Entry::unconfirmed`]).
    pub fn has_unconfirmed(&self) -> bool {
        self.entries.values().any(|e| e.unconfirmed)
    }

    /// The submittable chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Arc<Chain>> {
        self.entries.get(name).and_then(|e| e.chain.as_ref())
    }

    pub fn loaded_count(&self) -> usize {
        self.entries.values().filter(|e| e.chain.is_some()).count()
    }

    pub fn broken_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !e.errors.is_empty())
            .count()
    }

    /// The usable tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(name).and_then(|e| e.tenant.as_ref())
    }

    /// The usable connection profile called `name`.
    pub fn connection(&self, name: &str) -> Option<&Arc<Connection>> {
        self.connections
            .get(name)
            .and_then(|e| e.connection.as_ref())
    }

    /// Names of parameters some loaded chain declares `secret`: a tenant's
    /// `[params]` value under such a name is shown as `***` wherever the
    /// tenant's values are shown (`tenant.list`, `foreach = "tenants"`
    /// items), even when the tenant file keeps it outside `[secrets]`.
    pub fn secret_param_names(&self) -> std::collections::BTreeSet<&str> {
        self.entries
            .values()
            .filter_map(|e| e.chain.as_ref())
            .flat_map(|c| {
                c.params
                    .values()
                    .filter(|p| p.secret)
                    .map(|p| p.name.as_str())
            })
            .collect()
    }

    /// Every Unix group this configuration names: chains' and connection
    /// profiles' `allow` entries (`group:NAME`) and tenants' `groups`.
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        let chains = self
            .entries
            .values()
            .filter_map(|e| e.chain.as_ref())
            .flat_map(|c| group_entries(&c.allow));
        let connections = self
            .connections
            .values()
            .filter_map(|e| e.connection.as_ref())
            .flat_map(|c| group_entries(&c.allow));
        let tenants = self
            .tenants
            .values()
            .filter_map(|e| e.tenant.as_ref())
            .flat_map(|t| t.groups.iter().map(String::as_str));
        chains.chain(connections).chain(tenants)
    }

    /// Tenants that may run `chain`, by name.
    pub fn tenants_for(&self, chain: &str) -> Vec<String> {
        self.tenants
            .values()
            .filter(|e| e.tenant.as_ref().is_some_and(|t| t.may_run(chain)))
            .map(|e| e.name.clone())
            .collect()
    }
}

/// The groups of an `allow` list's `group:NAME` entries.
fn group_entries(allow: &[String]) -> impl Iterator<Item = &str> {
    allow
        .iter()
        .filter_map(|entry| entry.strip_prefix("group:"))
}

/// Load chains from `workflows_dir` and tenants from `tenants_dir`.
pub fn load(settings: &Settings, previous: Option<&Registry>) -> Registry {
    let mut registry = load_dir(&settings.workflows_dir, previous, settings);
    registry.tenants = load_tenants(&settings.tenants_dir, previous);
    registry.connections = load_connections(&settings.connections_dir, previous);
    // The groups access decisions will need, asked for now rather than by
    // the first decision (which would wait for a database that hangs).
    crate::access::groups::GROUPS.look_up_ahead(
        settings
            .operator_groups
            .iter()
            .map(String::as_str)
            .chain(registry.group_names()),
    );
    registry
}

/// Every profile of `dir`, like tenants: a broken file keeps its last good
/// version and is logged once.
fn load_connections(dir: &Path, previous: Option<&Registry>) -> BTreeMap<String, ConnectionEntry> {
    let mut connections = BTreeMap::new();
    let Some(files) = files_of(dir, "connections") else {
        return previous.map(|p| p.connections.clone()).unwrap_or_default();
    };
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let before = previous.and_then(|p| p.connections.get(&name));
        let (connection, errors) = match load_connection(&file) {
            Ok(connection) => (Some(Arc::new(connection)), Vec::new()),
            Err(errors) => {
                if !before.is_some_and(|b| b.errors == errors) {
                    for error in &errors {
                        tracing::error!(file = %file.display(), "connection file rejected: {error}");
                    }
                }
                (before.and_then(|b| b.connection.clone()), errors)
            }
        };
        connections.insert(
            name.clone(),
            ConnectionEntry {
                name,
                file,
                connection,
                errors,
            },
        );
    }
    connections
}

/// The `*.toml` files of `dir`, sorted; a missing directory has none.
/// None when the directory is there but cannot be read (out of file
/// descriptors, an NFS error): then what was loaded from it stays, rather
/// than every chain, tenant or profile vanishing until the next reload.
fn files_of(dir: &Path, what: &str) -> Option<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(read) => read
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(parse::is_workflow_file_name)
            })
            .map(|e| e.path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the {what} directory; what was loaded from it stays");
            return None;
        }
    };
    files.sort();
    Some(files)
}

fn load_tenants(dir: &Path, previous: Option<&Registry>) -> BTreeMap<String, TenantEntry> {
    let mut tenants = BTreeMap::new();
    let Some(files) = files_of(dir, "tenants") else {
        return previous.map(|p| p.tenants.clone()).unwrap_or_default();
    };
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let before = previous.and_then(|p| p.tenants.get(&name));
        let entry = match load_tenant(&file) {
            Ok(tenant) => TenantEntry {
                name: name.clone(),
                file,
                tenant: Some(Arc::new(tenant)),
                errors: Vec::new(),
            },
            Err(errors) => {
                if !before.is_some_and(|b| b.errors == errors) {
                    for error in &errors {
                        tracing::error!(file = %file.display(), "tenant file rejected: {error}");
                    }
                }
                TenantEntry {
                    name: name.clone(),
                    file,
                    tenant: before.and_then(|b| b.tenant.clone()),
                    errors,
                }
            }
        };
        tenants.insert(name, entry);
    }
    tenants
}

/// Load every workflow file of `dir`. `previous` supplies last good versions
/// for files that are now broken. A missing directory is an empty registry.
fn load_dir(dir: &Path, previous: Option<&Registry>, settings: &Settings) -> Registry {
    let mut registry = Registry::default();
    let Some(files) = files_of(dir, "workflows") else {
        return Registry {
            entries: previous.map(|p| p.entries.clone()).unwrap_or_default(),
            ..Registry::default()
        };
    };
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        // A chain this daemon cannot run as its file asks (run-as users) is
        // refused like an invalid file.
        // So is a notification rule that cannot work here.
        // Refused only for what the user database answered, which the
        // engine checks again every `run_as_recheck`.
        let mut unconfirmed = false;
        let loaded = load_file(&file).and_then(|chain| {
            let run_as =
                crate::run_as::check_chain(&chain, settings, Some(settings.user_database_wait));
            let mut from_database = run_as.from_database;
            let mut permanent = run_as.permanent;
            let runs_as_root = run_as.runs_as_root;
            let mut errors = run_as.errors;
            let slurm = crate::executor::slurm::check_chain(&chain);
            permanent |= !slurm.is_empty();
            errors.extend(slurm);
            let checked = match crate::notify::rules::for_chain(&chain, settings) {
                Ok(rules) if errors.is_empty() => Ok((chain, rules, runs_as_root)),
                Ok(_) => Err(errors),
                Err(refused) => {
                    from_database |= refused.unconfirmed;
                    permanent |= !refused.unconfirmed;
                    errors.extend(refused.errors);
                    Err(errors)
                }
            };
            unconfirmed = from_database && !permanent;
            checked
        });
        match loaded {
            Ok((chain, rules, runs_as_root)) => {
                // A broken file listed under this name (its stem) steps
                // aside for the valid chain, keyed by its file instead.
                if let Some(existing) = registry.entries.get(&chain.name)
                    && existing.chain.is_none()
                    && existing.file != file
                    && let Some(broken) = registry.entries.remove(&chain.name)
                {
                    registry.entries.insert(
                        format!("{} ({})", broken.name, broken.file.display()),
                        broken,
                    );
                }
                if let Some(existing) = registry.entries.get(&chain.name) {
                    let error = LoadError {
                        file: file.display().to_string(),
                        line: None,
                        column: None,
                        message: format!(
                            "chain {:?} is already defined by {}",
                            chain.name,
                            existing.file.display()
                        ),
                    };
                    // Once, not again on every reload while it stays so.
                    let already = previous.is_some_and(|p| {
                        p.entries
                            .values()
                            .any(|e| e.file == file && e.errors == [error.clone()])
                    });
                    if !already {
                        tracing::error!(file = %file.display(), "{error}");
                    }
                    registry.entries.insert(
                        format!("{stem} (duplicate)"),
                        Entry {
                            name: stem,
                            file,
                            chain: None,
                            errors: vec![error],
                            unconfirmed: false,
                            runs_as_root: Arc::default(),
                            notify: Arc::default(),
                        },
                    );
                    continue;
                }
                registry.entries.insert(
                    chain.name.clone(),
                    Entry {
                        name: chain.name.clone(),
                        file,
                        chain: Some(Arc::new(chain)),
                        errors: Vec::new(),
                        unconfirmed: false,
                        runs_as_root: Arc::new(runs_as_root),
                        notify: Arc::new(rules),
                    },
                );
            }
            Err(errors) => {
                // Log a broken file once, not again on every reload while
                // it stays broken the same way.
                let already = previous
                    .and_then(|p| p.entries.values().find(|e| e.file == file))
                    .is_some_and(|e| e.errors == errors);
                if !already {
                    for error in &errors {
                        tracing::error!(file = %file.display(), "workflow file rejected: {error}");
                    }
                }
                let previous_entry =
                    previous.and_then(|p| p.entries.values().find(|e| e.file == file));
                let last_good = previous_entry.and_then(|e| e.chain.clone());
                let notify = previous_entry.map(|e| e.notify.clone()).unwrap_or_default();
                let runs_as_root = previous_entry
                    .map(|e| e.runs_as_root.clone())
                    .unwrap_or_default();
                let name = last_good.as_ref().map(|c| c.name.clone()).unwrap_or(stem);
                // Never hide a valid chain of the same name from another file.
                let key = if registry.entries.contains_key(&name) {
                    format!("{name} ({})", file.display())
                } else {
                    name.clone()
                };
                registry.entries.insert(
                    key,
                    Entry {
                        name,
                        file,
                        chain: last_good,
                        errors,
                        unconfirmed,
                        runs_as_root,
                        notify,
                    },
                );
            }
        }
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Mode, Overrides};

    /// The groups access decisions will need: chains' and connection
    /// profiles' `group:` entries and tenants' `groups`, not `user:` ones.
    #[test]
    fn the_groups_a_configuration_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (workflows, tenants, connections) = (
            dir.path().join("w"),
            dir.path().join("t"),
            dir.path().join("c"),
        );
        for d in [&workflows, &tenants, &connections] {
            std::fs::create_dir(d).expect("dir");
        }
        std::fs::write(
            workflows.join("one.toml"),
            "[chain]\nallow = [\"group:g-chain\", \"user:bob\"]\n\
             [process.p.activity.a]\ncommand = [\"true\"]\n",
        )
        .expect("a chain file");
        std::fs::write(tenants.join("acme.toml"), "groups = [\"g-tenant\"]\n")
            .expect("a tenant file");
        std::fs::write(
            connections.join("erp.toml"),
            "[connection]\nkind = \"postgres\"\nallow = [\"group:g-conn\"]\n",
        )
        .expect("a connection file");
        let settings = Settings::load(&Overrides {
            config: Some(dir.path().join("absent.toml")),
            socket: Some(dir.path().join("hf.sock")),
            state_dir: Some(dir.path().join("state")),
            workflows_dir: Some(workflows),
            tenants_dir: Some(tenants),
            connections_dir: Some(connections),
            mode: Some(Mode::User),
        })
        .expect("settings");
        let loaded = load(&settings, None);
        let mut names: Vec<&str> = loaded.group_names().collect();
        names.sort_unstable();
        assert_eq!(names, ["g-chain", "g-conn", "g-tenant"]);
    }

    #[test]
    fn a_directory_that_cannot_be_read_keeps_what_was_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let workflows = dir.path().join("w");
        std::fs::create_dir(&workflows).expect("workflows dir");
        std::fs::write(
            workflows.join("one.toml"),
            "[process.p.activity.a]\ncommand = [\"true\"]\n",
        )
        .expect("a chain file");
        let settings = Settings::load(&Overrides {
            config: Some(dir.path().join("absent.toml")),
            socket: Some(dir.path().join("hf.sock")),
            state_dir: Some(dir.path().join("state")),
            workflows_dir: Some(workflows.clone()),
            tenants_dir: None,
            connections_dir: None,
            mode: Some(Mode::User),
        })
        .expect("settings");
        let loaded = load(&settings, None);
        assert!(loaded.chain("one").is_some(), "the chain loads");

        // The directory is now a file: read_dir fails with ENOTDIR, which
        // is no "missing directory".
        std::fs::remove_dir_all(&workflows).expect("remove the dir");
        std::fs::write(&workflows, "not a directory").expect("a file in its place");
        let again = load(&settings, Some(&loaded));
        assert!(again.chain("one").is_some(), "the chain stays loaded");

        // A directory that is really gone has no chains.
        std::fs::remove_file(&workflows).expect("remove the file");
        assert!(load(&settings, Some(&again)).chain("one").is_none());
    }
}
