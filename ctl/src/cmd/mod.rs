//! One module per command, each with its clap arguments and a `run`
//! function; what they share (global flags, the connection) lives here.

use std::path::PathBuf;

use crate::daemon::Daemon;
use crate::error::Error;
use crate::output::Palette;

pub mod audit;
pub mod backup;
pub mod cancel;
pub mod connections;
pub mod cron;
pub mod describe;
pub mod emit;
pub mod events;
pub mod info;
pub mod list;
pub mod logs;
pub mod notifications;
pub mod ps;
pub mod reload;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod schedules;
pub mod stats;
pub mod status;
pub mod submit;
pub mod tenants;
pub mod timeline;
pub mod validate;
pub mod wait;
pub mod watch;
pub mod workflows;

/// What every command gets from the global flags.
pub struct Context {
    /// `--socket` or `HOLDFAST_SOCKET`; discovery happens only for commands
    /// that talk to the daemon.
    pub socket: Option<PathBuf>,
    /// `--json`: one JSON document on stdout for scripts.
    pub json: bool,
    pub palette: Palette,
}

impl Context {
    pub fn socket(&self) -> PathBuf {
        crate::socket::discover(self.socket.as_deref())
    }

    /// Connect for calls only: each call one HTTP exchange that also
    /// checks the protocol.
    pub async fn connect(&self) -> Result<Daemon, Error> {
        Daemon::one_shot(&self.socket()).await
    }

    /// Connect for subscriptions (a WebSocket) and check the protocol.
    pub async fn connect_subscribing(&self) -> Result<Daemon, Error> {
        Daemon::connect(&self.socket()).await
    }
}
