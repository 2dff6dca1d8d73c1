//! Where a secret value comes from: written in a configuration file, read
//! from a file of its own, or from a systemd credential. Tenant files use
//! these for `[secrets]`; reading happens when a job is prepared, so a
//! changed file reaches the next job without a reload.
//!
//! ```toml
//! [secrets]
//! db_password = { file = "/etc/holdfast/secrets/afinia-db.pw" }
//! api_token = { credential = "afinia-api" }    # $CREDENTIALS_DIRECTORY/afinia-api
//! pin = "1234"                                 # in the file itself
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Longest secret read from a file or credential, in bytes. A secret is a
/// password or a key, not a data set, and it travels in an environment
/// variable.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// One secret value's source.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// The value, written in the configuration file itself.
    Value(Value),
    /// The contents of a file (one trailing newline removed).
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`, which
    /// `LoadCredential=` or `LoadCredentialEncrypted=` provide.
    Credential(String),
}

impl SecretSource {
    /// Reads a TOML value: `{ file = "..." }`, `{ credential = "..." }`, or
    /// any other value, which is the secret itself.
    pub fn from_toml(value: &toml::Value) -> Result<SecretSource, String> {
        if let toml::Value::Table(table) = value {
            let mut keys = table.keys().map(String::as_str);
            return match (keys.next(), keys.next()) {
                (Some("file"), None) => match &table["file"] {
                    toml::Value::String(path) if Path::new(path).is_absolute() => {
                        Ok(SecretSource::File(PathBuf::from(path)))
                    }
                    _ => Err("file must be an absolute path".to_string()),
                },
                (Some("credential"), None) => match &table["credential"] {
                    toml::Value::String(name)
                        if !name.is_empty() && !name.contains('/') && name != ".." =>
                    {
                        Ok(SecretSource::Credential(name.clone()))
                    }
                    _ => Err("credential must be a credential's name (no \"/\")".to_string()),
                },
                _ => Err(
                    "a secret is a value, { file = \"/path\" } or { credential = \"name\" }"
                        .to_string(),
                ),
            };
        }
        match value {
            toml::Value::String(text) => Ok(SecretSource::Value(Value::String(text.clone()))),
            _ => Err("a secret's value is a string (write it in quotes)".to_string()),
        }
    }

    /// The secret's value now. Errors say where it was looked for, never
    /// what it is.
    pub fn read(&self, credentials_dir: Option<&Path>) -> Result<Value, String> {
        let path = match self {
            SecretSource::Value(value) => return Ok(value.clone()),
            SecretSource::File(path) => path.clone(),
            SecretSource::Credential(name) => match credentials_dir {
                Some(dir) => dir.join(name),
                None => {
                    return Err(format!(
                        "credential {name:?}: no $CREDENTIALS_DIRECTORY; give the service \
                         LoadCredential={name}:PATH (or LoadCredentialEncrypted=)"
                    ));
                }
            },
        };
        read_secret_file(&path).map(Value::String)
    }
}

/// `O_NONBLOCK` on Linux (all architectures HoldFast builds for).
const O_NONBLOCK: i32 = 0o4000;

/// A secret file's text without its trailing newline, refused when it is
/// larger than [`MAX_SECRET_BYTES`] or not UTF-8.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO (or a device) would otherwise block the daemon in
    // open or read; only a regular file is accepted.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "secret file {} is not a regular file",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "secret file {} is larger than {MAX_SECRET_BYTES} bytes",
            path.display()
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("secret file {} is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Result<SecretSource, String> {
        let table: toml::Table = toml::from_str(&format!("x = {text}")).expect("toml");
        SecretSource::from_toml(&table["x"])
    }

    #[test]
    fn sources_are_read_from_toml() {
        assert_eq!(
            source("\"s3cr3t\""),
            Ok(SecretSource::Value(Value::from("s3cr3t")))
        );
        assert_eq!(
            source("{ file = \"/etc/pw\" }"),
            Ok(SecretSource::File(PathBuf::from("/etc/pw")))
        );
        assert_eq!(
            source("{ credential = \"erp\" }"),
            Ok(SecretSource::Credential("erp".into()))
        );
        assert!(source("{ file = \"relative\" }").is_err());
        assert!(source("1234").is_err(), "not a string");
        assert!(source("{ credential = \"../x\" }").is_err());
        assert!(source("{ file = \"/a\", credential = \"b\" }").is_err());
    }

    #[test]
    fn files_and_credentials_are_read_without_the_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("erp"), "hunter2\n").expect("write");
        let file = SecretSource::File(dir.path().join("erp"));
        assert_eq!(file.read(None), Ok(Value::from("hunter2")));
        let credential = SecretSource::Credential("erp".into());
        assert_eq!(
            credential.read(Some(dir.path())),
            Ok(Value::from("hunter2"))
        );
        let missing = credential.read(None).expect_err("no credentials directory");
        assert!(missing.contains("LoadCredential=erp"), "{missing}");
        let absent = SecretSource::File(dir.path().join("nope"))
            .read(None)
            .expect_err("missing file");
        assert!(absent.contains("cannot read secret file"), "{absent}");
    }
}
