//! User names of the uids that connect, for a caller's `user`: what
//! `user:NAME` in an `allow` list and group member lists are matched
//! against, and what the audit and `submitted_by` show.
//!
//! A look-up can go to LDAP or SSSD and take seconds when they are unwell,
//! so it runs on the blocking pool from the connection's own task (never
//! in the accept loop), and a name is reused for [`NAME_TTL`], as nscd and
//! SSSD cache it: a client that connects a thousand times looks its name
//! up once. The price is the cache's: a uid renamed, or deleted and given
//! to someone else, keeps its old name for up to a minute here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{DIRECTORY_MISSING_TTL as MISSING_TTL, DIRECTORY_TTL as NAME_TTL};

/// Names kept at most; past it the cache starts again empty.
const NAMES_KEPT: usize = 4096;

/// What is known of one uid.
#[derive(Clone)]
struct Known {
    /// None: the user database has no such uid.
    name: Option<String>,
    at: Instant,
}

#[derive(Default)]
pub struct UserNames(Mutex<HashMap<u32, Known>>);

impl UserNames {
    /// The name of `uid`, or `uid:N` when it has none.
    pub async fn name(&self, uid: u32) -> String {
        let now = Instant::now();
        let cached = self.0.lock().ok().and_then(|map| map.get(&uid).cloned());
        if let Some(known) = &cached {
            let ttl = if known.name.is_some() {
                NAME_TTL
            } else {
                MISSING_TTL
            };
            if now.duration_since(known.at) < ttl {
                return shown(uid, known.name.clone());
            }
        }
        let looked_up = tokio::task::spawn_blocking(move || {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).map(|u| u.map(|u| u.name))
        })
        .await;
        let name = match looked_up {
            Ok(Ok(name)) => name,
            // The database could not answer (a directory server down): the
            // name known before, if any, rather than none.
            Ok(Err(_)) | Err(_) => return shown(uid, cached.and_then(|known| known.name)),
        };
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= NAMES_KEPT {
                map.clear();
            }
            map.insert(
                uid,
                Known {
                    name: name.clone(),
                    at: now,
                },
            );
        }
        shown(uid, name)
    }
}

fn shown(uid: u32, name: Option<String>) -> String {
    name.unwrap_or_else(|| format!("uid:{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_looked_up_and_kept() {
        let names = UserNames::default();
        let uid = nix::unistd::getuid().as_raw();
        let expected = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid:{uid}"), |u| u.name);
        assert_eq!(names.name(uid).await, expected);
        assert_eq!(names.name(uid).await, expected, "from the cache");
        // A uid no database knows (the largest a uid_t holds but -1).
        assert_eq!(
            names.name(u32::MAX - 1).await,
            format!("uid:{}", u32::MAX - 1)
        );
    }
}
