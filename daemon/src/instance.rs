//! The installation's identity: a random id kept in the state directory
//! (`instance-id`) and sent with every journal entry as `HF_INSTANCE`, so
//! that `journalctl HF_JOB_ID=1` can be narrowed to one database's job 1.

use std::io::Write;
use std::path::Path;

/// The file in the state directory that holds the id.
const FILE: &str = "instance-id";

/// The state directory's id: read from `instance-id`, or made (32 hex
/// digits) and saved there on first start. Where it cannot be saved (a
/// read-only state directory that has none yet), an id derived from the
/// directory's path stands in, stable from one start to the next.
pub fn load_or_create(state_dir: &Path) -> String {
    let path = state_dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if valid(id) {
            return id.to_string();
        }
    }
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if save(&path, &id).is_ok() {
            return id;
        }
    }
    from_path(state_dir)
}

/// 32 lowercase hex digits.
fn valid(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Written next to the file and renamed into place, so a crash leaves
/// either no file or a whole one.
fn save(path: &Path, id: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// A stand-in id from the state directory's path (FNV-1a, twice over, for
/// 32 hex digits).
fn from_path(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = state_dir.as_os_str().as_bytes();
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path());
        assert!(valid(&first), "{first}");
        assert_eq!(load_or_create(dir.path()), first);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(load_or_create(other.path()), first);
    }

    #[test]
    fn the_stand_in_is_stable_and_valid() {
        let id = from_path(Path::new("/var/lib/holdfast"));
        assert!(valid(&id), "{id}");
        assert_eq!(id, from_path(Path::new("/var/lib/holdfast")));
        assert_ne!(id, from_path(Path::new("/srv/holdfast")));
    }
}
