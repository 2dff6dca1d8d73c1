//! When an attempt's pid reaches the engine.
//!
//! Reporting the pid the moment the child exists costs an engine turn and
//! a store commit of its own for every attempt; most attempts of a large
//! chain end within a millisecond or two. So the pid waits for the
//! attempt's first report: it goes just before the first control message,
//! with the attempt's end, or on its own once the attempt has run
//! [`START_REPORT_DELAY`], whichever comes first. A crash before it is
//! committed is covered as it always was: recovery finds an attempt's
//! processes by the `HF_*` markers in their environment.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{AttemptKey, ExecEvent};

/// How long a running attempt's pid may wait for a report to ride on.
pub const START_REPORT_DELAY: Duration = Duration::from_millis(20);

/// A started process, as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedPid {
    pub pid: u32,
    /// Clock ticks since boot (`start_time`).
    pub start_time: Option<u64>,
}

/// The pid of one attempt, until it has been reported.
pub struct StartReport {
    key: AttemptKey,
    pending: Mutex<Option<StartedPid>>,
    events: mpsc::Sender<ExecEvent>,
}

impl StartReport {
    pub fn new(key: AttemptKey, started: StartedPid, events: mpsc::Sender<ExecEvent>) -> Self {
        StartReport {
            key,
            pending: Mutex::new(Some(started)),
            events,
        }
    }

    /// Send the pid to the engine now, unless it went already. Anything
    /// the attempt sends after this reaches the engine after it (one
    /// channel, in order).
    pub async fn send(&self) {
        if let Some(StartedPid { pid, start_time }) = self.take() {
            let _ = self
                .events
                .send(ExecEvent::Started {
                    key: self.key,
                    pid,
                    start_time,
                })
                .await;
        }
    }

    /// The pid if it has not been sent: it then goes with the attempt's end.
    pub fn take(&self) -> Option<StartedPid> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }
}
