//! Real Unix users and groups for the end-to-end tests of access rules and
//! run-as: creating them once per test process, running `hfctl` as one of
//! them, and a system-mode `holdfastd` (socket 0660, `socket_group`) that
//! they can reach.
//!
//! The accounts are made with `groupadd`/`useradd --system`, all named
//! `hft-...`, and kept: a later run reuses them (and adds a missing group
//! membership), so the machine's account files change only once.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Group, User};
use serde_json::Value;

use crate::command::{HFCTL_TIMEOUT, bin_path, pid_of, run_with_deadline, wait_child};
use crate::daemon::{TestDaemon, wait_for_ready};

/// `HOLDFAST_USERS_TEST=required`: a machine where the accounts cannot be
/// made fails the tests instead of skipping them.
pub const REQUIRED_ENV: &str = "HOLDFAST_USERS_TEST";
/// Group that owns the system-mode daemon's socket.
pub const SOCKET_GROUP: &str = "hft-sock";
/// The settings' `operator_groups` entry.
pub const OPERATOR_GROUP: &str = "hft-ops";
/// Group named by chain `allow` lists and tenant `groups`.
pub const CHAIN_GROUP: &str = "hft-etl";
/// Supplementary group of the run-as user.
pub const EXTRA_GROUP: &str = "hft-data";
/// Supplementary group of [`privilege_account`], which a test takes away
/// and gives back.
pub const PRIVILEGE_GROUP: &str = "hft-priv-data";
/// The `PATH` given to commands run as a test user and to the system daemon.
pub const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Upper bound for the system daemon to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long account tools are retried while another process holds the
/// account files' lock.
const LOCK_PATIENCE: Duration = Duration::from_secs(20);
/// Where `hfctl` is copied when the build directory is closed to other
/// users (a checkout under a 0700 home).
const SHARED_BIN_DIR: &str = "/tmp/hft-users-bin";

/// One test account, as the account database has it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    pub home: PathBuf,
}

/// Every account the tests use.
#[derive(Debug)]
pub struct Accounts {
    /// In the socket group only.
    pub member: Account,
    /// In the socket group and the chain group.
    pub etl_member: Account,
    /// In the socket group and the operator group.
    pub operator: Account,
    /// In none of the test groups.
    pub outsider: Account,
    /// Activities run as this user; has a home and the extra group.
    pub run_as: Account,
}

/// True when `HOLDFAST_USERS_TEST=required`.
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "required")
}

/// The test accounts, made on first use. `Err` says why they cannot exist
/// on this machine (not root, a tool missing); a tool that fails panics.
pub fn accounts() -> Result<&'static Accounts, String> {
    preconditions()?;
    // `get_or_init` runs the closure once and makes concurrent callers wait
    // for it: the account tools, which lock /etc/passwd, never race each
    // other from this process.
    static ACCOUNTS: OnceLock<Accounts> = OnceLock::new();
    Ok(ACCOUNTS.get_or_init(create_accounts))
}

/// Why these tests cannot run here, if they cannot.
fn preconditions() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("they need root (useradd, and a daemon that switches users)".into());
    }
    for name in ["useradd", "groupadd", "usermod", "setpriv", "id"] {
        tool(name)?;
    }
    Ok(())
}

/// The absolute path of a system tool.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("{name} is missing"))
}

fn create_accounts() -> Accounts {
    for group in [SOCKET_GROUP, OPERATOR_GROUP, CHAIN_GROUP, EXTRA_GROUP] {
        account_tool("groupadd", &["--force", "--system", group]);
    }
    Accounts {
        member: ensure_user("hft-member", &[SOCKET_GROUP], false),
        etl_member: ensure_user("hft-etl-member", &[SOCKET_GROUP, CHAIN_GROUP], false),
        operator: ensure_user("hft-operator", &[SOCKET_GROUP, OPERATOR_GROUP], false),
        outsider: ensure_user("hft-outsider", &[], false),
        run_as: ensure_user("hft-runas", &[EXTRA_GROUP], true),
    }
}

/// The run-as user of the privilege tests alone (`hft-priv`, with a home
/// and [`PRIVILEGE_GROUP`]), so that a test changing its memberships races
/// no other test. Made on first use, like [`accounts`]; a membership a
/// failed run left removed is given back.
pub fn privilege_account() -> Result<&'static Account, String> {
    accounts()?;
    static ACCOUNT: OnceLock<Account> = OnceLock::new();
    Ok(ACCOUNT.get_or_init(|| {
        account_tool("groupadd", &["--force", "--system", PRIVILEGE_GROUP]);
        ensure_user("hft-priv", &[PRIVILEGE_GROUP], true)
    }))
}

/// A user of one privilege test alone, in no group but its own, without a
/// home; made on first use (after [`accounts`]).
pub fn lone_account(name: &str) -> Result<Account, String> {
    accounts()?;
    Ok(ensure_user(name, &[], false))
}

/// Remove `name` and its group, if they exist (made by [`lone_account`]).
pub fn remove_lone_account(name: &str) {
    if lookup(name).is_some() {
        account_tool("userdel", &[name]);
    }
}

/// Add `user` to `group`, or take it out, in the group database.
pub fn set_membership(user: &str, group: &str, member: bool) {
    if listed_in(group, user) == member {
        return;
    }
    let flag = if member { "--add" } else { "--delete" };
    account_tool("gpasswd", &[flag, user, group]);
    assert_eq!(
        listed_in(group, user),
        member,
        "gpasswd changed {user}'s membership of {group}"
    );
}

/// Make `name` (or reuse it) with exactly the test groups `groups` among
/// its supplementary groups, and a home directory when `home` is set.
fn ensure_user(name: &str, groups: &[&str], home: bool) -> Account {
    if lookup(name).is_none() {
        let mut args = vec!["--system", "--user-group", "--shell", "/usr/sbin/nologin"];
        args.push(if home {
            "--create-home"
        } else {
            "--no-create-home"
        });
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", joined.as_str()]);
        }
        args.push(name);
        account_tool("useradd", &args);
    }
    // A reused account may predate a group the tests now expect.
    for group in groups {
        if !listed_in(group, name) {
            account_tool("usermod", &["--append", "--groups", group, name]);
        }
    }
    for group in [SOCKET_GROUP, OPERATOR_GROUP, CHAIN_GROUP, EXTRA_GROUP] {
        assert!(
            groups.contains(&group) || !listed_in(group, name),
            "{name} is a member of {group}, which the tests need it not to be; \
             remove it with `gpasswd -d {name} {group}`"
        );
    }
    let account = lookup(name).unwrap_or_else(|| panic!("{name} exists after useradd"));
    if home && !account.home.is_dir() {
        // Reused from a run that made it without a home.
        fs::create_dir_all(&account.home)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", account.home.display()));
        nix::unistd::chown(
            &account.home,
            Some(nix::unistd::Uid::from_raw(account.uid)),
            Some(nix::unistd::Gid::from_raw(account.gid)),
        )
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", account.home.display()));
    }
    account
}

fn lookup(name: &str) -> Option<Account> {
    let user =
        User::from_name(name).unwrap_or_else(|e| panic!("cannot look up user {name}: {e}"))?;
    Some(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    })
}

/// The gid of a group the tests made.
pub fn group_id(name: &str) -> u32 {
    Group::from_name(name)
        .unwrap_or_else(|e| panic!("cannot look up group {name}: {e}"))
        .unwrap_or_else(|| panic!("group {name} does not exist"))
        .gid
        .as_raw()
}

fn listed_in(group: &str, user: &str) -> bool {
    Group::from_name(group)
        .unwrap_or_else(|e| panic!("cannot look up group {group}: {e}"))
        .is_some_and(|g| g.mem.iter().any(|m| m == user))
}

/// Held while this process changes the account database, and by a test
/// that needs it left alone for a while: `useradd` and friends replace
/// `/etc/passwd` and `/etc/group` by a rename, which undoes whatever a
/// test bound over them (`user_database.rs`).
static ACCOUNT_CHANGES: Mutex<()> = Mutex::new(());

/// Keep this process's tests from changing the account database until the
/// guard is dropped. Do not make or change accounts while holding it.
pub fn hold_account_database() -> MutexGuard<'static, ()> {
    ACCOUNT_CHANGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run an account tool, retrying while another process (another test
/// binary, an administrator) holds the account files' lock.
fn account_tool(name: &str, args: &[&str]) {
    let _changing = hold_account_database();
    let program = tool(name).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        let output = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        if output.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // useradd's "already exists" (exit 9): another process made it
        // between our lookup and our call; the caller checks what it is.
        if name == "useradd" && output.status.code() == Some(9) {
            return;
        }
        assert!(
            stderr.contains("lock") && Instant::now() < deadline,
            "{name} {args:?} failed with {}: {stderr}",
            output.status
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `hfctl` at a path every user may execute: the built binary when every
/// directory above it lets others through, else a copy in a root-owned
/// 0755 directory.
pub fn hfctl_for_everyone() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let built = bin_path("hfctl");
        if others_may_execute(&built) {
            return built;
        }
        let dir = Path::new(SHARED_BIN_DIR);
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot create {SHARED_BIN_DIR}: {e}"),
        }
        let meta = fs::symlink_metadata(dir)
            .unwrap_or_else(|e| panic!("cannot inspect {SHARED_BIN_DIR}: {e}"));
        assert!(
            meta.is_dir() && meta.uid() == 0,
            "{SHARED_BIN_DIR} must be a directory owned by root; remove it"
        );
        fs::set_permissions(dir, Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {SHARED_BIN_DIR}: {e}"));
        // Copy under a name of our own, then rename: a concurrent run never
        // executes a half-written file.
        let partial = dir.join(format!(".hfctl.{}", std::process::id()));
        fs::copy(&built, &partial)
            .unwrap_or_else(|e| panic!("cannot copy hfctl to {}: {e}", partial.display()));
        fs::set_permissions(&partial, Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", partial.display()));
        let copy = dir.join("hfctl");
        fs::rename(&partial, &copy)
            .unwrap_or_else(|e| panic!("cannot rename to {}: {e}", copy.display()));
        copy
    })
}

/// True when the file and every directory above it are open to others.
fn others_may_execute(path: &Path) -> bool {
    path.ancestors().all(|p| {
        p.as_os_str().is_empty()
            || fs::metadata(p).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
    })
}

impl Account {
    /// Run `hfctl --socket SOCKET ARGS...` as this user (its uid, primary
    /// gid and supplementary groups), in a small clean environment.
    pub fn hfctl<S: AsRef<OsStr>>(&self, socket: &Path, args: &[S]) -> Output {
        self.hfctl_in_groups(socket, None, args)
    }

    /// Like [`Account::hfctl`], but with exactly the supplementary groups
    /// `groups` (as `newgrp` or a service's `SupplementaryGroups=` would
    /// give), whatever the group database says; `None` for the user's own.
    pub fn hfctl_in_groups<S: AsRef<OsStr>>(
        &self,
        socket: &Path,
        groups: Option<&[u32]>,
        args: &[S],
    ) -> Output {
        let mut cmd = Command::new(tool("setpriv").unwrap_or_else(|e| panic!("{e}")));
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid));
        match groups {
            None => cmd.arg("--init-groups"),
            Some(list) => cmd.arg(format!(
                "--groups={}",
                list.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        };
        cmd.arg("--")
            .arg(hfctl_for_everyone())
            .arg("--socket")
            .arg(socket)
            .args(args)
            .env_clear()
            .env("PATH", STANDARD_PATH)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        run_with_deadline(cmd, HFCTL_TIMEOUT)
    }

    /// `hfctl --json ARGS...` as this user; requires success and parses
    /// what it printed.
    pub fn hfctl_json(&self, socket: &Path, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let output = self.hfctl(socket, &full);
        assert!(
            output.status.success(),
            "`hfctl {}` as {} failed with {}\nstdout: {}\nstderr: {}",
            full.join(" "),
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "`hfctl {}` as {} printed something that is not JSON ({e}):\n{}",
                full.join(" "),
                self.name,
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Submit `target` (with extra hfctl arguments) as this user; returns
    /// the new job's id.
    pub fn submit(&self, socket: &Path, target: &str, extra: &[&str]) -> u64 {
        let mut args = vec!["submit", target];
        args.extend_from_slice(extra);
        let answer = self.hfctl_json(socket, &args);
        answer["job_id"].as_u64().unwrap_or_else(|| {
            panic!(
                "`hfctl --json submit` as {} printed no job_id: {answer}",
                self.name
            )
        })
    }
}

/// A `holdfastd --system` in a [`TestDaemon`]'s directory, so other users
/// can reach it: system mode gives the socket mode 0660 and the settings'
/// `socket_group` (user mode makes it 0600 whatever `socket_group` says).
/// The directory is opened to 0711 so they can reach the socket inside it.
/// Everything else of `TestDaemon` (hfctl as root, submit, wait_for, logs)
/// works through `Deref`, except starting and stopping, which this type
/// owns.
pub struct SystemDaemon {
    child: Option<Child>,
    /// Where `READY=1` (and later status and watchdog messages) arrive.
    notify: UnixDatagram,
    daemon: TestDaemon,
}

impl SystemDaemon {
    /// Lay out the directory with this settings text, chain files and tenant
    /// files (`(name, text)`, `@DIR@` replaced), start the daemon and wait
    /// for `READY=1`.
    pub fn start(
        settings: &str,
        workflows: &[(&str, &str)],
        tenants: &[(&str, &str)],
    ) -> SystemDaemon {
        let daemon = TestDaemon::prepare(Some(settings), workflows);
        for (name, text) in tenants {
            daemon.write_tenant(name, text);
        }
        fs::set_permissions(daemon.dir(), Permissions::from_mode(0o711))
            .expect("the fixture directory can be opened to other users");
        let notify_path = daemon.dir().join("system-notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("the notify socket can be bound");
        let mut started = SystemDaemon {
            child: None,
            notify,
            daemon,
        };
        started.launch();
        started
    }

    /// Start the daemon in its directory and wait for `READY=1`.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        // Drop what a previous run left (a killed daemon's last status).
        self.notify
            .set_nonblocking(true)
            .expect("the notify socket can be made non-blocking");
        while self.notify.recv(&mut [0u8; 4096]).is_ok() {}
        self.notify
            .set_nonblocking(false)
            .expect("the notify socket can be made blocking");
        let daemon = &self.daemon;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(daemon.log_path())
            .expect("the daemon log file can be opened");
        let mut cmd = Command::new(bin_path("holdfastd"));
        cmd.arg("--system")
            .arg("--config")
            .arg(daemon.config_path())
            .arg("--socket")
            .arg(daemon.socket())
            .arg("--state-dir")
            .arg(daemon.state_dir())
            .arg("--workflows-dir")
            .arg(daemon.workflows_dir())
            .arg("--tenants-dir")
            .arg(daemon.tenants_dir())
            .arg("--connections-dir")
            .arg(daemon.connections_dir())
            .arg("-v")
            .env_clear()
            .env("PATH", STANDARD_PATH)
            .env("NOTIFY_SOCKET", daemon.dir().join("system-notify.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file can be shared"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("holdfastd can be spawned"));
        // A panic here drops `self`: the daemon is stopped and its log
        // printed.
        if let Err(e) = self.wait_ready() {
            panic!("holdfastd --system did not start: {e}");
        }
    }

    /// Kill the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        let _ = kill(pid_of(child.id()), Signal::SIGKILL);
        let _ = child.wait();
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let child = self.child.as_mut().expect("the daemon was spawned");
        let result = wait_for_ready(&self.notify, child);
        if matches!(child.try_wait(), Ok(Some(_))) {
            self.child = None;
        }
        result
    }
}

impl Deref for SystemDaemon {
    type Target = TestDaemon;

    fn deref(&self) -> &TestDaemon {
        &self.daemon
    }
}

impl Drop for SystemDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(pid_of(child.id()), Signal::SIGTERM);
            let (_, killed) = wait_child(&mut child, STOP_TIMEOUT);
            if killed {
                eprintln!("holdfastd --system ignored SIGTERM for {STOP_TIMEOUT:?} and was killed");
            }
        }
        // `daemon` is dropped next and prints the log if a test panicked.
    }
}
