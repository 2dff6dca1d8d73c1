//! Shell completion that offers values, through clap_complete's
//! environment-activated engine: the shell runs `COMPLETE=bash hfctl --
//! WORDS...` and hfctl answers with candidates. Fixed values (`--state`)
//! come from the clap definition; chain names and job ids are asked of the
//! daemon (the socket of `HOLDFAST_SOCKET`, else the one hfctl finds), with
//! a short deadline, and nothing is offered when it does not answer.
//!
//! The packaged bash and fish completion files only ask hfctl for its
//! completion function (`COMPLETE=bash hfctl`), so they always match the
//! installed hfctl.

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::CompletionCandidate;
use holdfast_api::rpc::HoldfastClient;

use crate::daemon::Daemon;

/// How long a completion waits for the daemon: a shell's Tab must not hang.
const DEADLINE: Duration = Duration::from_millis(1500);

/// Jobs offered for a job id: the newest ones.
const JOBS: u32 = 50;

/// Answer a completion request and exit, if this run is one.
pub fn if_requested() {
    clap_complete::CompleteEnv::with_factory(<crate::Whole as clap::CommandFactory>::command)
        .completer("hfctl")
        .complete();
}

/// The loaded chains whose names start with what was typed.
pub fn chains(current: &OsStr) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy().into_owned();
    ask(|daemon| async move {
        let chains = daemon.client.workflow_list().await.ok()?;
        Some(
            chains
                .into_iter()
                .filter(|c| c.name.starts_with(&typed))
                .map(|c| {
                    let help = c.description.unwrap_or(c.status);
                    CompletionCandidate::new(c.name).help(Some(help.into()))
                })
                .collect(),
        )
    })
}

/// The newest jobs whose ids start with what was typed, with their chain
/// and state as help.
pub fn jobs(current: &OsStr) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy().into_owned();
    ask(|daemon| async move {
        let list = (daemon.client)
            .job_list(None, None, Some(JOBS), None, None, None)
            .await
            .ok()?;
        Some(
            list.jobs
                .into_iter()
                .filter(|j| j.id.to_string().starts_with(&typed))
                .map(|j| {
                    let help = format!("{} {}", j.target, j.state.as_str());
                    CompletionCandidate::new(j.id.to_string()).help(Some(help.into()))
                })
                .collect(),
        )
    })
}

/// Run `question` against the daemon on a thread of its own (the caller
/// may already be inside hfctl's runtime), within [`DEADLINE`].
fn ask<F, Fut>(question: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(Daemon) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Vec<CompletionCandidate>>>,
{
    let socket = crate::socket::discover(
        std::env::var_os("HOLDFAST_SOCKET")
            .map(std::path::PathBuf::from)
            .as_deref(),
    );
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async move {
            tokio::time::timeout(DEADLINE, async move {
                let daemon = Daemon::one_shot(&socket).await.ok()?;
                question(daemon).await
            })
            .await
            .ok()
            .flatten()
        })
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default()
}
