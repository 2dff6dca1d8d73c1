//! Connection profiles (`connections.d/<name>.toml`): named sets of settings
//! for reaching a database or a service, some of them secret, that chains
//! use by name (`connections = ["erp"]`) and the daemon gives an activity
//! as `HF_CONN_<NAME>_<FIELD>` at each attempt's start.
//!
//! ```toml
//! [connection]
//! kind = "postgres"                    # free text, given as HF_CONN_ERP_KIND
//! host = "db.example.com"              # plain fields: strings, numbers, booleans
//! port = 5432
//! database = "erp"
//! user = "etl"
//! password_file = "/etc/holdfast/secrets/erp.pw"   # secret `password`
//! # password_credential = "erp"        # or a systemd credential
//! # password = "..."                   # or the value itself (still secret)
//! allow = ["group:etl"]                # who may submit chains using it
//! ```
//!
//! A field is secret when it is `password`, when it is written
//! `<field>_file = "/abs/path"` or `<field>_credential = "name"`, or when
//! its value is `{ file = "..." }` or `{ credential = "..." }` (see
//! [`crate::secret::SecretSource`]).

use std::path::{Path, PathBuf};

use holdfast_api::LoadError;
use indexmap::IndexMap;
use serde_json::Value;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::parse::{line_column, valid_name};
use crate::secret::SecretSource;

/// Keys of `[connection]` that are not fields.
const RESERVED: [&str; 3] = ["kind", "allow", "description"];

/// Field names that hold a secret even when written as a plain value.
const SECRET_NAMES: [&str; 1] = ["password"];

/// One connection profile, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The file stem: the profile's name.
    pub name: String,
    pub file: PathBuf,
    /// What it connects to (`postgres`, `sftp`, ...): free text.
    pub kind: String,
    pub description: Option<String>,
    /// Plain fields (`host`, `port`, ...), in file order; anyone who may
    /// see hosts (operators) may see them.
    pub fields: IndexMap<String, Value>,
    /// Secret fields by name (`password`), read at each attempt's start and
    /// never shown.
    pub secrets: IndexMap<String, SecretSource>,
    /// Who may submit chains that use it (`group:NAME`, `user:NAME`); empty
    /// means anyone who may submit the chain.
    pub allow: Vec<String>,
}

/// The environment variable an activity gets for `field` of the connection
/// it calls `connection`: `HF_CONN_<CONNECTION>_<FIELD>`, upper-cased, `-`
/// as `_`.
pub fn env_name(connection: &str, field: &str) -> String {
    format!("HF_CONN_{connection}_{field}")
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// Whether a file is a connection profile rather than a chain: it sits in a
/// directory named `connections.d`, or its text has a `[connection]` table
/// at the top.
pub fn is_connection_file(path: &Path, source: &str) -> bool {
    if path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "connections.d")
    {
        return true;
    }
    DeTable::parse(source).is_ok_and(|root| {
        root.get_ref()
            .iter()
            .any(|(k, _)| k.get_ref().as_ref() == "connection")
    })
}

/// Field names: a letter first, then lowercase letters, digits and `_`, so
/// that `HF_CONN_<NAME>_<FIELD>` is a plain variable name.
fn valid_field(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

struct Errors<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<LoadError>,
}

impl Errors<'_> {
    fn at(&mut self, offset: Option<usize>, message: impl Into<String>) {
        let (line, column) = match offset {
            Some(at) => {
                let (l, c) = line_column(self.source, at);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        self.list.push(LoadError {
            file: self.file.display().to_string(),
            line,
            column,
            message: message.into(),
        });
    }
}

/// Parse one connection file's text.
pub fn parse_connection(file: &Path, source: &str) -> Result<Connection, Vec<LoadError>> {
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let mut errors = Errors {
        file,
        source,
        list: Vec::new(),
    };
    if !valid_name(&name) {
        errors.at(
            None,
            format!(
                "invalid connection name {name:?} (the file name): use lowercase letters, \
                 digits, \"_\" and \"-\""
            ),
        );
    }
    let root = match DeTable::parse(source) {
        Ok(root) => root.into_inner(),
        Err(e) => {
            errors.at(e.span().map(|s| s.start), e.message());
            return Err(errors.list);
        }
    };
    let mut table = None;
    for (key, value) in root {
        if key.get_ref().as_ref() == "connection" {
            let span = value.span();
            match value.into_inner() {
                DeValue::Table(t) => table = Some(t),
                _ => errors.at(Some(span.start), "connection must be a table: [connection]"),
            }
        } else {
            errors.at(
                Some(key.span().start),
                format!(
                    "unknown key {:?} at the top level; a connection file holds one \
                     [connection] table",
                    key.get_ref()
                ),
            );
        }
    }
    let Some(table) = table else {
        if errors.list.is_empty() {
            errors.at(
                None,
                "no [connection] table; start the file with [connection] and kind = \"...\"",
            );
        }
        return Err(errors.list);
    };

    let mut kind = None;
    let mut description = None;
    let mut allow = Vec::new();
    let mut fields = IndexMap::new();
    let mut secrets: IndexMap<String, SecretSource> = IndexMap::new();
    for (key, value) in table {
        let at = Some(key.span().start);
        let key = key.get_ref().to_string();
        let value_at = Some(value.span().start);
        let value = match to_value(value) {
            Ok(v) => v,
            Err(message) => {
                errors.at(value_at, message);
                continue;
            }
        };
        match key.as_str() {
            "kind" => match value {
                toml::Value::String(s) if !s.is_empty() => kind = Some(s),
                _ => errors.at(
                    value_at,
                    "kind must be a non-empty string, like \"postgres\"",
                ),
            },
            "description" => match value {
                toml::Value::String(s) => description = Some(s),
                _ => errors.at(value_at, "description must be a string"),
            },
            "allow" => match value {
                toml::Value::Array(entries) => {
                    for entry in entries {
                        match entry.as_str().and_then(|e| e.split_once(':')) {
                            Some(("group" | "user", who)) if !who.is_empty() => {
                                allow.push(entry.as_str().unwrap_or_default().to_string())
                            }
                            _ => errors.at(
                                value_at,
                                format!(
                                    "allow entries are \"group:NAME\" or \"user:NAME\", got {entry}"
                                ),
                            ),
                        }
                    }
                }
                _ => errors.at(value_at, "allow must be an array like [\"group:etl\"]"),
            },
            _ => {
                let (field, source) = if let Some(field) = key.strip_suffix("_file") {
                    let source = match &value {
                        toml::Value::String(path) if Path::new(path).is_absolute() => {
                            Ok(SecretSource::File(PathBuf::from(path)))
                        }
                        _ => Err(format!("{key} must be an absolute path")),
                    };
                    (field, Some(source))
                } else if let Some(field) = key.strip_suffix("_credential") {
                    let table = toml::Value::Table(toml::Table::from_iter([(
                        "credential".to_string(),
                        value.clone(),
                    )]));
                    (field, Some(SecretSource::from_toml(&table)))
                } else if value.is_table() || SECRET_NAMES.contains(&key.as_str()) {
                    (key.as_str(), Some(SecretSource::from_toml(&value)))
                } else {
                    (key.as_str(), None)
                };
                if !valid_field(field) || RESERVED.contains(&field) {
                    errors.at(
                        at,
                        format!(
                            "invalid field name {field:?}: use lowercase letters, digits and \
                             \"_\", starting with a letter (kind, allow and description are \
                             taken)"
                        ),
                    );
                    continue;
                }
                if fields.contains_key(field) || secrets.contains_key(field) {
                    errors.at(at, format!("field {field} is given twice; keep one"));
                    continue;
                }
                match source {
                    Some(Ok(source)) => {
                        secrets.insert(field.to_string(), source);
                    }
                    Some(Err(message)) => errors.at(value_at, format!("{key}: {message}")),
                    None => match value {
                        toml::Value::String(_)
                        | toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_) => {
                            if let Ok(json) = crate::parse::toml_to_json(&value) {
                                fields.insert(field.to_string(), json);
                            }
                        }
                        _ => errors.at(
                            value_at,
                            format!("{key} must be a string, a number or a boolean"),
                        ),
                    },
                }
            }
        }
    }
    if kind.is_none() {
        errors.at(
            None,
            "[connection] has no kind; add kind = \"postgres\" (or what it connects to)",
        );
    }
    if !errors.list.is_empty() {
        return Err(errors.list);
    }
    Ok(Connection {
        name,
        file: file.to_path_buf(),
        kind: kind.unwrap_or_default(),
        description,
        fields,
        secrets,
        allow,
    })
}

/// A value of the spanned document as a plain TOML value.
fn to_value(value: toml::Spanned<DeValue<'_>>) -> Result<toml::Value, String> {
    use serde::Deserialize;
    toml::Value::deserialize(ValueDeserializer::from(value)).map_err(|e| e.message().to_string())
}

/// Read and parse one connection file.
pub fn load_connection(path: &Path) -> Result<Connection, Vec<LoadError>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![LoadError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        }]
    })?;
    parse_connection(path, &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Connection, Vec<LoadError>> {
        parse_connection(Path::new("/c/connections.d/erp.toml"), text)
    }

    #[test]
    fn parses_plain_and_secret_fields() {
        let c = parse(
            "[connection]\nkind = \"postgres\"\nhost = \"db\"\nport = 5432\n\
             password_file = \"/etc/pw\"\ntoken_credential = \"erp-token\"\n\
             pin = { file = \"/etc/pin\" }\nallow = [\"group:etl\"]\n",
        )
        .expect("valid");
        assert_eq!(c.name, "erp");
        assert_eq!(c.kind, "postgres");
        assert_eq!(c.fields["host"], Value::from("db"));
        assert_eq!(c.fields["port"], Value::from(5432));
        assert_eq!(c.secrets["password"], SecretSource::File("/etc/pw".into()));
        assert_eq!(
            c.secrets["token"],
            SecretSource::Credential("erp-token".into())
        );
        assert_eq!(c.secrets["pin"], SecretSource::File("/etc/pin".into()));
        assert_eq!(c.allow, ["group:etl"]);
    }

    #[test]
    fn a_plain_password_is_a_secret() {
        let c = parse("[connection]\nkind = \"x\"\npassword = \"hunter2\"\n").expect("valid");
        assert!(c.fields.is_empty());
        assert_eq!(
            c.secrets["password"],
            SecretSource::Value(Value::from("hunter2"))
        );
    }

    #[test]
    fn errors_have_positions() {
        let errors = parse(
            "[connection]\nkind = \"x\"\npassword_file = \"relative\"\n  Host = \"a\"\nport = [1]\n",
        )
        .expect_err("invalid");
        let at: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            at,
            [(Some(3), Some(17)), (Some(4), Some(3)), (Some(5), Some(8))],
            "{errors:?}"
        );
        let errors =
            parse("[connection]\nhost = \"a\"\npassword = \"b\"\npassword_file = \"/b\"\n")
                .expect_err("invalid");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].message.contains("given twice"), "{errors:?}");
        assert!(errors[1].message.contains("no kind"), "{errors:?}");
        let errors = parse("kind = \"x\"\n").expect_err("no table");
        assert_eq!(errors[0].line, Some(1));
    }

    #[test]
    fn env_names_are_upper_case() {
        assert_eq!(env_name("erp-afinia", "host"), "HF_CONN_ERP_AFINIA_HOST");
    }

    #[test]
    fn connection_files_are_told_from_chains() {
        assert!(is_connection_file(
            Path::new("/etc/holdfast/connections.d/erp.toml"),
            ""
        ));
        assert!(is_connection_file(
            Path::new("/tmp/erp.toml"),
            "[connection]\nkind = \"x\"\n"
        ));
        assert!(!is_connection_file(
            Path::new("/tmp/etl.toml"),
            "[process.p.activity.a]\ncommand = [\"true\"]\n"
        ));
    }
}
