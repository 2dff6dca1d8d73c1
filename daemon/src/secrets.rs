//! Secret parameter values at rest. A job's secret values are kept out of
//! its `params` column (which holds `***` for them) and stored sealed with
//! ChaCha20-Poly1305 in `job_secrets`, under a key that lives in a file of
//! its own beside the database (`secrets.key`, 0600, made at first start).
//! A copy of the database alone (a backup, a stolen file, `strings`) does
//! not reveal them; whoever can read the key file too, root or the daemon's
//! user, can.
//!
//! The job id is the associated data, so a sealed value cannot be moved to
//! another job's row.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde_json::{Map, Value};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// The first byte of a sealed value: the format, so it can change.
const FORMAT: u8 = 1;

/// Why secrets cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the secrets key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the secrets key {path}: {source}")]
    CreateKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the secrets key {path} is refused: {why}; whoever can replace or read it can read every \
         secret parameter, so make it a regular file owned by the daemon's user (uid {uid}) with \
         mode 0600, or restore it from a backup"
    )]
    UnsafeKey {
        path: PathBuf,
        why: String,
        uid: u32,
    },
    #[error("the secrets key {path} is not {KEY_BYTES} bytes; restore it from a backup")]
    BadKey { path: PathBuf },
    #[error("no randomness from the kernel: {0}")]
    Random(String),
    #[error(
        "the secret parameters of job {job_id} cannot be opened (another secrets key, or a \
         damaged row); submit the job again with its secrets"
    )]
    Open { job_id: u64 },
}

/// Seals and opens secret values with the daemon's key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The key at `path`, made (32 random bytes, mode 0600, never replaced)
    /// when there is none.
    pub fn open_or_create(path: &Path) -> Result<Sealer, SecretsError> {
        let key = match read_key(path)? {
            Some(key) => key,
            None => create_key(path)?,
        };
        if key.len() != KEY_BYTES {
            return Err(SecretsError::BadKey {
                path: path.to_path_buf(),
            });
        }
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `values` sealed for job `job_id`: format byte, nonce, ciphertext.
    pub fn seal(&self, job_id: u64, values: &Map<String, Value>) -> Result<Vec<u8>, SecretsError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| SecretsError::Random(e.to_string()))?;
        let plain = Value::Object(values.clone()).to_string();
        let aad = job_id.to_le_bytes();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Open { job_id })?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The values [`Sealer::seal`] sealed for job `job_id`.
    pub fn open(&self, job_id: u64, sealed: &[u8]) -> Result<Map<String, Value>, SecretsError> {
        let bad = || SecretsError::Open { job_id };
        let (&format, rest) = sealed.split_first().ok_or_else(bad)?;
        if format != FORMAT || rest.len() < NONCE_BYTES {
            return Err(bad());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let aad = job_id.to_le_bytes();
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| bad())?;
        match serde_json::from_slice(&plain) {
            Ok(Value::Object(values)) => Ok(values),
            _ => Err(bad()),
        }
    }
}

/// The key file's bytes, opened without following a symlink (`O_NOFOLLOW`)
/// and without blocking on a FIFO (`O_NONBLOCK`); refused unless it is a
/// regular file owned by the daemon's uid that neither its group nor others
/// can read or write (0600). None when there is none yet.
fn read_key(path: &Path) -> Result<Option<Vec<u8>>, SecretsError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = nix::unistd::Uid::effective().as_raw();
    let unsafe_key = |why: String| SecretsError::UnsafeKey {
        path: path.to_path_buf(),
        why,
        uid,
    };
    let read_error = |source| SecretsError::ReadKey {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(unsafe_key("it is a symbolic link".into()));
        }
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    if !meta.file_type().is_file() {
        return Err(unsafe_key("it is not a regular file".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_key(format!("it is owned by uid {}", meta.uid())));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o7077 != 0 {
        return Err(unsafe_key(format!("it is mode {mode:04o}")));
    }
    let mut key = Vec::with_capacity(KEY_BYTES);
    // One byte more than a key, to tell a longer file.
    (&mut file)
        .take(KEY_BYTES as u64 + 1)
        .read_to_end(&mut key)
        .map_err(read_error)?;
    Ok(Some(key))
}

/// Writes a new random key with `O_EXCL` and mode 0600, synced, so two
/// daemons can never make two keys and a crash never leaves half of one.
fn create_key(path: &Path) -> Result<Vec<u8>, SecretsError> {
    let mut key = vec![0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| SecretsError::Random(e.to_string()))?;
    let error = |source| SecretsError::CreateKey {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(&key).map_err(error)?;
    file.sync_all().map_err(error)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(error)?;
    }
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sealed_values_open_for_their_job_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealer = Sealer::open_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut values = Map::new();
        values.insert("db_password".into(), Value::from("REALKEY-123"));
        let sealed = sealer.seal(7, &values).unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"REALKEY"),
            "the sealed bytes hold the value in clear"
        );
        assert_eq!(sealer.open(7, &sealed).unwrap(), values);
        assert!(sealer.open(8, &sealed).is_err(), "moved to another job");
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(sealer.open(7, &damaged).is_err());

        // The same key next time; another key cannot open.
        let again = Sealer::open_or_create(&path).unwrap();
        assert_eq!(again.open(7, &sealed).unwrap(), values);
        let other = Sealer::open_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.open(7, &sealed).is_err());
    }

    #[test]
    fn a_key_that_is_not_the_daemons_private_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |path: &Path, why: &str| match Sealer::open_or_create(path) {
            Err(e @ SecretsError::UnsafeKey { .. }) => {
                assert!(e.to_string().contains(why), "{e}");
            }
            other => panic!("{} accepted or wrongly refused: {other:?}", path.display()),
        };
        let target = dir.path().join("target.key");
        std::fs::write(&target, [1u8; KEY_BYTES]).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        refused(&link, "symbolic link");
        // A FIFO is refused at once rather than waited on.
        let fifo = dir.path().join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        refused(&fifo, "not a regular file");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        refused(&target, "mode 0640");
        if nix::unistd::Uid::effective().is_root() {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
            nix::unistd::chown(&target, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            refused(&target, "owned by uid 65534");
        }
    }

    #[test]
    fn a_short_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Sealer::open_or_create(&path),
            Err(SecretsError::BadKey { .. })
        ));
    }
}
