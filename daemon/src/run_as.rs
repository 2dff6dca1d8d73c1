//! Running activities as another user, and the per-activity resource caps.
//!
//! A chain (through `[defaults]`) or an activity may name a `user` and
//! `group`. Only users listed in the settings' `run_as_allowed` may be named,
//! `root` only if listed explicitly, and only a daemon running as root can
//! switch: otherwise the chain is refused when it is loaded, never run as the
//! daemon's own user by surprise. A system-mode daemon running as root runs
//! activities that name no user as `run_as_default` (`holdfast`), never as
//! root unless that is allowed and asked for. A `group` must be one of the
//! user's own groups or listed in `run_as_groups` (root's group only if
//! listed), checked at load and again before every spawn.
//! (The per-activity caps are in [`crate::caps`].)

use std::ffi::CString;
use std::path::PathBuf;

use holdfast_api::LoadError;
use holdfast_workflow::{Activity, Chain};
use nix::unistd::{Gid, Group, Uid, User};

use crate::settings::{Mode, Settings};

/// Look-ups of the user database under way at once for attempts about to
/// start.
pub const LOOKUPS_AT_ONCE: usize = 4;

/// Look-ups under way at once for everything else (reloads, reprocesses'
/// checks, `workflow.get`, notification `exec` hooks), in turns of their
/// own: any client can start some of these, and they never take a turn
/// from an attempt.
pub const OTHER_LOOKUPS_AT_ONCE: usize = 2;

static ATTEMPT_LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOOKUPS_AT_ONCE);
static OTHER_LOOKUPS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(OTHER_LOOKUPS_AT_ONCE);

/// Whose turns a look-up takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookUpFor {
    /// An attempt about to start.
    Attempt,
    /// Anything else.
    Other,
}

/// Run `look_up`, which asks the user database (NSS: files, LDAP, SSSD),
/// on the blocking pool in one of the turns of `whose` ([`LOOKUPS_AT_ONCE`]
/// for attempts, [`OTHER_LOOKUPS_AT_ONCE`] for the rest). A database that
/// hangs holds that many threads; whatever else waits for it waits for a
/// turn without a thread, and nothing waits on the engine's task or a
/// runtime worker. A look-up whose caller went away keeps its turn until
/// it returns. Err when `look_up` panicked.
pub async fn look_up_in_turn<T: Send + 'static>(
    whose: LookUpFor,
    look_up: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let turns = match whose {
        LookUpFor::Attempt => &ATTEMPT_LOOKUPS,
        LookUpFor::Other => &OTHER_LOOKUPS,
    };
    let turn = turns.acquire().await.ok();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        look_up()
    })
    .await
}

/// Who an activity runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Who an attempt is to run as, as the engine names it: the executor asks
/// the user database ([`Request::resolve`]) on a blocking thread just before
/// the start, because a look-up can wait seconds on LDAP or SSSD and the
/// engine's turn must not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub user: String,
    pub group: Option<String>,
    /// The settings' `run_as_groups`.
    pub run_as_groups: Vec<String>,
}

impl Request {
    /// The request for `activity`, or None when it runs as the daemon's own
    /// user.
    pub fn for_activity(activity: &Activity, settings: &Settings) -> Option<Request> {
        user_for(activity, settings).map(|user| Request {
            user: user.to_string(),
            group: activity.group.clone(),
            run_as_groups: settings.run_as_groups.clone(),
        })
    }

    /// [`resolve`] this request: it blocks on the user database.
    pub fn resolve(&self) -> Result<Identity, RunAsError> {
        resolve(&self.user, self.group.as_deref(), &self.run_as_groups)
    }
}

/// Why an activity cannot run as who it names.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error("cannot look up user {user:?}: {source}")]
    LookUpUser {
        user: String,
        source: nix::errno::Errno,
    },
    #[error("user {user:?} does not exist on this host")]
    NoSuchUser { user: String },
    #[error("cannot look up group {group:?}: {source}")]
    LookUpGroup {
        group: String,
        source: nix::errno::Errno,
    },
    #[error("group {group:?} does not exist on this host")]
    NoSuchGroup { group: String },
    #[error("user name {user:?} contains a NUL byte")]
    NulInName { user: String },
    #[error("cannot list the groups of {user:?}: {source}")]
    ListGroups {
        user: String,
        source: nix::errno::Errno,
    },
    #[error(
        "group {group:?} (gid 0) is root's; a run-as activity gets it only when the daemon's \
         run_as_groups setting lists it"
    )]
    RootGroup { group: String },
    #[error(
        "user {user:?} has root's group (gid 0) among its groups; a run-as activity gets it \
         only when the daemon's run_as_groups setting lists that group ({group:?}), so list it \
         or take the user out of the group"
    )]
    RootGroupMember { user: String, group: String },
    #[error(
        "group {group:?} is not one of user {user:?}'s groups; name one of them, or list the \
         group in the daemon's run_as_groups setting"
    )]
    NotUsersGroup { user: String, group: String },
    /// The user or group database could not be read for lack of file
    /// descriptors: this says nothing about the account, and passes.
    #[error("cannot look up user {user:?}: the daemon is out of file descriptors")]
    OutOfFiles { user: String },
    /// A check at load or at a resume did not get an answer in time (LDAP
    /// or SSSD hanging): this says nothing about the account either.
    #[error(
        "cannot look up user {user:?}: the user database did not answer within {}",
        humantime::format_duration(*waited)
    )]
    NoAnswer {
        user: String,
        waited: std::time::Duration,
    },
    #[error(
        "cannot look up user {user:?}: the user database has not answered earlier look-ups \
         (it is not asked again until one returns)"
    )]
    NotAsked { user: String },
}

/// [`resolve`] through [`crate::user_database::ask_within`]: for the checks at load and at a
/// resume, which must not wait long on a hung database.
pub fn resolve_within(
    user: &str,
    group: Option<&str>,
    run_as_groups: &[String],
    wait: std::time::Duration,
) -> Result<Identity, RunAsError> {
    let asked = (
        user.to_string(),
        group.map(str::to_string),
        run_as_groups.to_vec(),
    );
    let answer = crate::user_database::ask_within(wait, move || {
        let (user, group, groups) = asked;
        resolve(&user, group.as_deref(), &groups)
    });
    match answer {
        Ok(result) => result,
        Err(crate::user_database::Unanswered::GaveUp(waited)) => Err(RunAsError::NoAnswer {
            user: user.to_string(),
            waited,
        }),
        Err(crate::user_database::Unanswered::NotAsked) => Err(RunAsError::NotAsked {
            user: user.to_string(),
        }),
    }
}

/// True when this process cannot open a file right now for lack of file
/// descriptors (EMFILE, ENFILE).
fn out_of_files() -> bool {
    std::fs::File::open("/dev/null")
        .is_err_and(|e| crate::executor::is_out_of_files(e.raw_os_error()))
}

/// Look up `user` (and `group`, else the user's primary group) with its
/// supplementary groups. A `group` must be one of the user's own (primary
/// or supplementary, as the group database says now) or listed in
/// `run_as_groups`; gid 0 only if listed, whether named in `group` or
/// given by the group database to a user other than root. Called at load
/// and again before every spawn, so a membership removed since the load
/// counts.
pub fn resolve(
    user: &str,
    group: Option<&str>,
    run_as_groups: &[String],
) -> Result<Identity, RunAsError> {
    let resolved = look_up(user, group, run_as_groups);
    // glibc reads a user or group database it cannot open for lack of file
    // descriptors as "no such entry" (or a shorter group list): while they
    // are out, no answer is believed, and the caller tries again later.
    if out_of_files() {
        return Err(RunAsError::OutOfFiles {
            user: user.to_string(),
        });
    }
    resolved
}

/// [`resolve`]'s lookups and checks.
fn look_up(
    user: &str,
    group: Option<&str>,
    run_as_groups: &[String],
) -> Result<Identity, RunAsError> {
    let account = User::from_name(user)
        .map_err(|source| RunAsError::LookUpUser {
            user: user.to_string(),
            source,
        })?
        .ok_or_else(|| RunAsError::NoSuchUser {
            user: user.to_string(),
        })?;
    let cname = CString::new(user).map_err(|_| RunAsError::NulInName {
        user: user.to_string(),
    })?;
    let own = nix::unistd::getgrouplist(&cname, account.gid).map_err(|source| {
        RunAsError::ListGroups {
            user: user.to_string(),
            source,
        }
    })?;
    // Root's group reaches a user other than root only by choice, even
    // when the group database gives it.
    if !account.uid.is_root() && own.iter().any(|g| g.as_raw() == 0) {
        let name = Group::from_gid(Gid::from_raw(0))
            .ok()
            .flatten()
            .map_or_else(|| "root".to_string(), |g| g.name);
        if !run_as_groups.contains(&name) {
            return Err(RunAsError::RootGroupMember {
                user: user.to_string(),
                group: name,
            });
        }
    }
    let gid = match group {
        None => account.gid,
        Some(name) => {
            let gid = Group::from_name(name)
                .map_err(|source| RunAsError::LookUpGroup {
                    group: name.to_string(),
                    source,
                })?
                .ok_or_else(|| RunAsError::NoSuchGroup {
                    group: name.to_string(),
                })?
                .gid;
            let listed = run_as_groups.iter().any(|g| g == name);
            if gid.as_raw() == 0 && !listed {
                return Err(RunAsError::RootGroup {
                    group: name.to_string(),
                });
            }
            if !listed && !own.contains(&gid) {
                return Err(RunAsError::NotUsersGroup {
                    user: user.to_string(),
                    group: name.to_string(),
                });
            }
            gid
        }
    };
    let mut groups: Vec<u32> = own.into_iter().map(Gid::as_raw).collect();
    if !groups.contains(&gid.as_raw()) {
        groups.push(gid.as_raw());
    }
    Ok(Identity {
        name: user.to_string(),
        uid: account.uid.as_raw(),
        gid: gid.as_raw(),
        groups,
        home: account.dir,
    })
}

fn switching() -> bool {
    Uid::effective().is_root()
}

/// The user an activity runs as, if not the daemon's own.
pub fn user_for<'a>(activity: &'a Activity, settings: &'a Settings) -> Option<&'a str> {
    default_user(activity.user.as_deref(), settings)
}

/// Who something that names `user` (or none) runs as, if not the daemon's
/// own user: the activities of a chain and its rules' `exec` hooks alike.
pub fn default_user<'a>(user: Option<&'a str>, settings: &'a Settings) -> Option<&'a str> {
    match user {
        Some(user) => Some(user),
        None if settings.mode == Mode::System && switching() => settings.run_as_default.as_deref(),
        None => None,
    }
}

/// Whether this daemon may run something as `user`, which the file names
/// (`named`) or which is `run_as_default`.
pub fn check_user(user: &str, named: bool, settings: &Settings) -> Result<(), String> {
    if named && !switching() {
        return Err(format!(
            "holdfastd runs as uid {} and cannot switch to {user:?}; run the daemon as root \
             or remove user",
            Uid::effective()
        ));
    }
    if named && !settings.run_as_allowed.iter().any(|u| u == user) {
        return Err(format!(
            "user {user:?} is not in the daemon's run_as_allowed setting"
        ));
    }
    Ok(())
}

/// True when an activity started with `identity` (`None`: the daemon's
/// own user) runs with uid 0.
pub fn identity_is_root(identity: Option<&Identity>) -> bool {
    identity.map_or_else(|| Uid::effective().is_root(), |id| id.uid == 0)
}

/// Whether [`check_chain`] would ask the user database about `chain`: an
/// activity runs as a user other than the daemon's own.
pub fn looks_up_users(chain: &Chain, settings: &Settings) -> bool {
    chain
        .activities
        .iter()
        .any(|activity| user_for(activity, settings).is_some())
}

/// What [`check_chain`] found.
#[derive(Debug, Default)]
pub struct ChainCheck {
    pub errors: Vec<LoadError>,
    /// Some errors are the user database's answer (no such user or group,
    /// a look-up that failed, a group list without the group), which can
    /// change without the file changing.
    pub from_database: bool,
    /// Some errors are the file's or the settings' alone (a user not in
    /// `run_as_allowed`, a daemon that cannot switch, `group` without
    /// `user`, root's group not listed): no answer of the database helps.
    pub permanent: bool,
    /// Per activity (as `chain.activities`): whether it runs with uid 0,
    /// as the database answered now (false where it did not answer).
    pub runs_as_root: Vec<bool>,
}

impl ChainCheck {
    /// Refused only for what the user database answered: worth checking
    /// again later.
    pub fn unconfirmed(&self) -> bool {
        self.from_database && !self.permanent
    }
}

/// Whether `error` is the user database's answer rather than the file's or
/// the settings' (see [`ChainCheck::from_database`]).
pub fn from_database(error: &RunAsError) -> bool {
    !matches!(
        error,
        RunAsError::NulInName { .. } | RunAsError::RootGroup { .. }
    )
}

/// Check, when a chain is loaded, that every activity can run as who it
/// names on this daemon. Errors name the file, the position of the `user`
/// or `group` key at fault (in the activity or in `[defaults]`) and the
/// activity.
/// With a `wait`, each look-up waits at most that long
/// ([`resolve_within`]: at load and at a resume); without, as long as the
/// database takes (a reprocess's check, in turns of its own).
pub fn check_chain(
    chain: &Chain,
    settings: &Settings,
    wait: Option<std::time::Duration>,
) -> ChainCheck {
    let mut check = ChainCheck::default();
    let error = |activity: &Activity, key: &str, message: String| {
        let at = holdfast_workflow::setting_position(chain, activity, key);
        LoadError {
            file: chain.file.display().to_string(),
            line: at.map(|(line, _)| line),
            column: at.map(|(_, column)| column),
            message: format!("{}: {message}", activity.path),
        }
    };
    for activity in &chain.activities {
        let Some(user) = user_for(activity, settings) else {
            check.runs_as_root.push(Uid::effective().is_root());
            if activity.group.is_some() {
                check.permanent = true;
                check.errors.push(error(
                    activity,
                    "group",
                    "group is set without user; name the user too".into(),
                ));
            }
            continue;
        };
        check.runs_as_root.push(false);
        let named = activity.user.is_some();
        if named && !switching() {
            check.permanent = true;
            check.errors.push(error(
                activity,
                "user",
                format!(
                    "runs as {user:?}, but holdfastd runs as uid {} and cannot switch users; \
                     run the daemon as root or remove user",
                    Uid::effective()
                ),
            ));
            continue;
        }
        if named && !settings.run_as_allowed.iter().any(|u| u == user) {
            check.permanent = true;
            check.errors.push(error(
                activity,
                "user",
                format!("user {user:?} is not in the daemon's run_as_allowed setting"),
            ));
            continue;
        }
        let resolved = match wait {
            Some(wait) => resolve_within(
                user,
                activity.group.as_deref(),
                &settings.run_as_groups,
                wait,
            ),
            None => resolve(user, activity.group.as_deref(), &settings.run_as_groups),
        };
        match resolved {
            Ok(identity) => {
                if let Some(root) = check.runs_as_root.last_mut() {
                    *root = identity.uid == 0;
                }
            }
            Err(e) => {
                if from_database(&e) {
                    check.from_database = true;
                } else {
                    check.permanent = true;
                }
                let key = match e {
                    RunAsError::LookUpGroup { .. }
                    | RunAsError::NoSuchGroup { .. }
                    | RunAsError::RootGroup { .. }
                    | RunAsError::NotUsersGroup { .. } => "group",
                    _ => "user",
                };
                check.errors.push(error(activity, key, e.to_string()));
            }
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves() {
        let id = resolve("root", None, &[]).expect("root exists");
        assert_eq!(id.uid, 0);
        assert!(resolve("no-such-user-here", None, &[]).is_err());
    }

    #[test]
    fn root_group_only_when_listed() {
        let Ok(Some(root)) = Group::from_gid(Gid::from_raw(0)) else {
            return;
        };
        // Named explicitly, gid 0 is refused even for root itself.
        assert!(matches!(
            resolve("root", Some(&root.name), &[]),
            Err(RunAsError::RootGroup { .. })
        ));
        let id = resolve("root", Some(&root.name), std::slice::from_ref(&root.name))
            .expect("listed in run_as_groups");
        assert_eq!(id.gid, 0);
    }
}
