//! Simulated attempts (`hfctl submit --simulate`): nothing is run; the
//! attempt waits its stand-in's duration, reports its outputs and ends
//! with its exit code, and can be stopped like a real one.

use std::sync::Arc;

use holdfast_api::AttemptState;
use tokio::sync::{mpsc, oneshot};

use super::end::stopped_as;
use super::logs::{LogHub, LogSink};
use super::{AttemptEnd, AttemptSpec, ControlMessage, ExecEvent, KillReason};

/// A simulated attempt: wait `duration` (or until stopped), report the
/// stand-in's outputs, end with its exit code. The log says what happened.
pub(super) async fn run_simulated(
    spec: &AttemptSpec,
    simulate: holdfast_workflow::Simulate,
    events: &mpsc::Sender<ExecEvent>,
    kill: oneshot::Receiver<KillReason>,
    hub: &LogHub,
) -> AttemptEnd {
    let sink = Arc::new(LogSink::new(
        spec.log_path.clone(),
        spec.log_max_bytes,
        hub.register(spec.key),
    ));
    let note = format!(
        "simulated: would run {:?}; ends with exit code {} after {}",
        spec.argv,
        simulate.exit_code,
        humantime::format_duration(simulate.duration)
    );
    // The simulated run starts, and can be cancelled, while its note waits
    // for the log writer.
    let ((), stopped) = tokio::join!(sink.note(&note), async {
        tokio::select! {
            () = tokio::time::sleep(simulate.duration) => None,
            reason = kill => reason.ok(),
        }
    });
    let (state, exit_code, error) = match stopped {
        Some(reason) => {
            let (state, error) = stopped_as(reason);
            (state, None, Some(error))
        }
        None if simulate.exit_code == 0 => (AttemptState::Succeeded, Some(0), None),
        None => (
            AttemptState::Failed,
            Some(simulate.exit_code),
            Some(format!("simulated exit code {}", simulate.exit_code)),
        ),
    };
    if stopped.is_none() && !simulate.outputs.is_empty() {
        let _ = events
            .send(ExecEvent::Control {
                key: spec.key,
                message: ControlMessage::Output(simulate.outputs),
                offset: 0,
                held: None,
            })
            .await;
    }
    AttemptEnd {
        state,
        exit_code,
        signal: None,
        error,
        log_bytes: sink.written(),
        log_dropped: sink.dropped(),
        transient: false,
        log_error: sink.create_error(),
        error_tail: (state != AttemptState::Succeeded)
            .then(|| sink.tail())
            .flatten(),
        resources: None,
    }
}
