//! `holdfastd`: the HoldFast daemon. Parses flags, resolves settings, opens
//! the store, loads workflows, binds the socket, recovers unfinished jobs,
//! then runs the engine and the RPC server until SIGTERM. On a read-only
//! state directory it serves reads and holds the engine back until the
//! directory is writable, then starts it.

mod access;
mod caps;
mod cgroup;
mod connections;
mod docs;
mod engine;
mod executor;
mod instance;
mod logging;
mod mask;
mod metrics;
mod notify;
mod registry;
mod retention;
mod rpc;
mod run_as;
mod secret_files;
mod secrets;
mod settings;
mod store;
mod systemd;
mod user_database;
mod watcher;

use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

use crate::settings::{Mode, Overrides, Settings};

/// HoldFast batch-workflow daemon.
#[derive(Debug, Parser)]
#[command(name = "holdfastd", version, about)]
struct Args {
    /// Settings file (default /etc/holdfast/holdfast.toml, or the user's config dir).
    #[arg(long, env = "HOLDFAST_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Socket to listen on.
    #[arg(long, env = "HOLDFAST_SOCKET", value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
    /// Directory for the database and logs.
    #[arg(long, env = "HOLDFAST_STATE_DIR", value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Directory of workflow files.
    #[arg(long, env = "HOLDFAST_WORKFLOWS_DIR", value_name = "DIR")]
    workflows_dir: Option<std::path::PathBuf>,
    /// Directory of tenant files.
    #[arg(long, env = "HOLDFAST_TENANTS_DIR", value_name = "DIR")]
    tenants_dir: Option<std::path::PathBuf>,
    /// Directory of connection profiles.
    #[arg(long, env = "HOLDFAST_CONNECTIONS_DIR", value_name = "DIR")]
    connections_dir: Option<std::path::PathBuf>,
    /// Use system paths (the default when run as root).
    #[arg(long, conflicts_with = "user")]
    system: bool,
    /// Use the user's paths (the default when not root).
    #[arg(long)]
    user: bool,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    if let Some(dir) = docs::requested() {
        return match docs::generate(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "holdfastd: cannot write the docs under {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    // Before any thread exists: take what systemd passed out of the
    // environment, so activities do not inherit it.
    let systemd = systemd::Systemd::from_env();
    logging::init(args.verbose);
    // The settings come first: they say how many threads the runtime has.
    let settings = match Settings::load(&overrides(args)) {
        Ok(settings) => settings,
        Err(e) => return failed(&anyhow::Error::from(e)),
    };
    // One worker is the current-thread scheduler on this thread: the same
    // single thread for every task, without the multi-thread scheduler's
    // queues and a main thread of its own (less CPU a request, measured in
    // BENCHMARKS.md).
    let mut builder = if settings.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(settings.worker_threads);
        b
    };
    let runtime = match builder.enable_all().thread_name("holdfastd").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("holdfastd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(settings, systemd));
    // A blocking task still under way (a look-up in a user database that
    // hangs) must not keep a stopped daemon from exiting.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// How long a stopped daemon waits for its blocking tasks before it exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Say why the daemon cannot go on, in one line wherever it goes: the
/// journal gets it as a log entry, a terminal or file as plain text.
fn failed(e: &anyhow::Error) -> ExitCode {
    if logging::to_journal() {
        tracing::error!("{e:#}");
    } else {
        eprintln!("holdfastd: {e:#}");
    }
    ExitCode::FAILURE
}

/// What the command line (and its `HOLDFAST_*` variables) sets over the
/// settings file.
fn overrides(args: Args) -> Overrides {
    Overrides {
        config: args.config,
        socket: args.socket,
        state_dir: args.state_dir,
        workflows_dir: args.workflows_dir,
        tenants_dir: args.tenants_dir,
        connections_dir: args.connections_dir,
        mode: if args.system {
            Some(Mode::System)
        } else if args.user {
            Some(Mode::User)
        } else {
            None
        },
    }
}

async fn run(mut settings: Settings, mut systemd: systemd::Systemd) -> anyhow::Result<()> {
    // Signals are taken before anything is started, so a stop that arrives
    // while the daemon starts (even right after READY=1) waits for the loop below
    // and stops it gracefully, instead of killing it with its activities
    // left running.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // Socket activation: serve the socket holdfast.socket passed, whatever
    // path the settings name.
    let activated = systemd.take_listener()?;
    if let Some(path) = activated
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf))
    {
        settings.socket = path;
    }
    let settings = Arc::new(settings);
    let notifier = systemd.notifier();
    let private = settings.mode == Mode::User;
    // 0700 whatever the umask: the database and the logs hold every job's
    // parameters and output.
    if let Err(error) = store::private::create_dir(&settings.logs_dir()) {
        // On a read-only file system (see below) what is there is served
        // as it is.
        if !store::read_only::on_read_only_file_system(&settings.database()) {
            return Err(error).with_context(|| {
                format!(
                    "cannot create state directory {}",
                    settings.state_dir.display()
                )
            });
        }
    }
    if private {
        let _ =
            std::fs::set_permissions(&settings.state_dir, std::fs::Permissions::from_mode(0o700));
    }
    // Everything created from here on (the socket, the database, its WAL,
    // attempt logs, and what activities create) is private unless made
    // otherwise: a socket bound under a loose umask could be connected to
    // by anyone until its chmod. The socket's directory is made with its
    // own mode so group members can still reach the socket.
    store::private::restrict_umask();
    // One daemon per state directory, taken before the socket is bound and
    // before anything touches the database: a second daemon (even on another
    // socket) stops here, naming the first one's pid. On a read-only file
    // system without a lock file there is none yet; it is taken before the
    // engine starts.
    let mut state_lock = store::lock::acquire(&settings.state_dir)?;
    if state_lock.is_some() {
        store::Store::remove_stale_snapshots(&settings.state_dir);
    }
    let instance = instance::load_or_create(&settings.state_dir);
    logging::set_instance(&instance);
    tracing::info!(
        HF_INSTANCE = %instance,
        state_dir = %settings.state_dir.display(),
        "instance {instance} of state directory {}",
        settings.state_dir.display()
    );

    // Bind first: a second daemon must stop here, before it touches the
    // first one's jobs. (With socket activation systemd runs only one.)
    // A user-mode daemon is private to its user unless the settings name a
    // socket_group to share it with (whose members must also be able to
    // reach the socket's directory).
    let shared = settings.socket_group.is_some();
    let socket_mode = if private && !shared { 0o600 } else { 0o660 };
    let owns_socket_file = activated.is_none();
    let listener = match activated {
        Some(listener) => {
            tracing::info!(socket = %settings.socket.display(), "serving the socket passed by systemd");
            listener.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(listener)?
        }
        None => rpc::socket::bind(
            &settings.socket,
            socket_mode,
            settings.socket_group.as_deref(),
            (settings.user_database_wait, settings.run_as_recheck),
            private && !shared,
        )?,
    };

    let database = settings.database();
    store::private::warn_if_open(&[
        &settings.state_dir,
        &settings.logs_dir(),
        &database,
        &database.with_extension("db-wal"),
        &database.with_extension("db-shm"),
        &settings.secrets_key(),
    ]);

    // On a read-only file system the store opens for reads only and the
    // engine is held back: nothing it does could be recorded. The socket
    // serves reads, and the engine starts (recovery included) once the
    // state directory is writable.
    let store = store::Store::open_at_start(&settings.database())?;
    // Before the engine starts, so what recovery ends is counted on top.
    metrics::global().seed(&store);
    let registry = registry::load(&settings, None);
    tracing::info!(
        chains = registry.loaded_count(),
        broken = registry.broken_count(),
        tenants = registry.tenants.len(),
        dir = %settings.workflows_dir.display(),
        "workflows loaded"
    );
    let held = store.is_read_only().then(|| {
        format!(
            "state directory {} is on a read-only file system; holdfastd serves reads only until it is writable",
            settings.state_dir.display()
        )
    });
    let (handle, wiring) = engine::wire(registry, held);
    let mut phase = match handle.held() {
        None => Phase::Running(start_engine(&settings, &store, wiring, &handle, &notifier)?),
        Some(reason) => {
            tracing::warn!(
                state_dir = %settings.state_dir.display(),
                "the state directory is on a read-only file system: serving reads only; submissions and other changes are refused until it is writable, then the engine starts by itself"
            );
            notifier.status(&reason);
            Phase::Held(wiring)
        }
    };

    let _metrics_listener = match settings.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen for metrics on {addr}: {e}; change metrics_listen or free the port"
                )
            })?;
            tracing::info!(%addr, "serving /metrics over TCP");
            Some(AbortOnDrop(tokio::spawn(metrics::listen(
                listener,
                handle.clone(),
            ))))
        }
        None => None,
    };
    let _metrics_textfile = settings.metrics_textfile.clone().map(|path| {
        AbortOnDrop(tokio::spawn(metrics::textfile(
            path,
            settings.metrics_textfile_interval,
            handle.clone(),
        )))
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rpc::RpcServer {
        engine: handle.clone(),
        store: store.clone(),
        settings: settings.clone(),
        started_at: store::now_ms(),
    };
    let server_task = tokio::spawn(rpc::socket::serve(listener, server, async {
        let _ = stop_rx.await;
    }));

    tracing::info!(socket = %settings.socket.display(), mode = settings.mode.as_str(), pid = std::process::id(), read_only = store.is_read_only(), "holdfastd ready");
    match handle.held() {
        Some(reason) => notifier.ready_with(&reason),
        None => notifier.ready(&handle.counts().await),
    }
    let _heartbeat = systemd.start_heartbeat(handle.clone());

    let sighup_reloads = systemd::SighupReloads::start(handle.clone(), notifier.clone());
    let writable_store = store.clone();
    let until_writable = async move { writable_store.until_writable().await };
    tokio::pin!(until_writable);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                if let Phase::Held(_) = phase {
                    tracing::info!("SIGHUP: the workflows are read again when the engine starts");
                    continue;
                }
                tracing::info!("SIGHUP: reloading workflows");
                sighup_reloads.ask();
            }
            () = &mut until_writable, if matches!(phase, Phase::Held(_)) => {
                tracing::info!(state_dir = %settings.state_dir.display(), "the state directory is writable again: starting the engine");
                if state_lock.is_none() {
                    state_lock = store::lock::acquire(&settings.state_dir)?;
                }
                if let Err(error) = store::private::create_dir(&settings.logs_dir()) {
                    tracing::warn!(%error, dir = %settings.logs_dir().display(), "cannot create the log directory");
                }
                // Read on the blocking pool (it can wait on the user
                // database), while this loop still sees SIGTERM.
                let previous = handle.registry.borrow().clone();
                let reading = settings.clone();
                let read = run_as::look_up_in_turn(run_as::LookUpFor::Other, move || registry::load(&reading, Some(&previous)));
                let registry = tokio::select! {
                    read = read => read.map_err(|e| anyhow::anyhow!("reading the workflows failed: {e}"))?,
                    _ = terminate.recv() => break,
                    _ = interrupt.recv() => break,
                };
                phase = match phase {
                    Phase::Held(wiring) => {
                        wiring.set_registry(registry);
                        let running = start_engine(&settings, &store, wiring, &handle, &notifier)?;
                        notifier.status("state directory writable again: engine started");
                        tracing::info!("engine started: submissions are accepted again");
                        Phase::Running(running)
                    }
                    running @ Phase::Running(_) => running,
                };
            }
        }
    }

    tracing::info!("stopping");
    sighup_reloads.stop();
    notifier.stopping();
    let _ = stop_tx.send(());
    if let Phase::Running(running) = phase {
        // Interrupt running activities (each gets SIGTERM, then SIGKILL after
        // the kill grace) and record them; bounded so systemd's stop timeout
        // is met.
        let grace = settings.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(grace, handle.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("activities did not stop in time; exiting anyway");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), server_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), running.engine).await;
        // After the last write: the WAL goes into the database, so a copy
        // of `holdfast.db` alone (or a lost `-wal`) has every job.
        match store.checkpoint().await {
            Ok(()) => tracing::debug!("database checkpointed"),
            Err(error) => {
                tracing::warn!(%error, "cannot checkpoint the database at stop; its -wal file holds the newest changes, keep it with the database")
            }
        }
        // Last: the next start tells this stop from a crash.
        if let Err(error) = store::clean_stop::mark(&settings.state_dir) {
            tracing::warn!(%error, "cannot record the clean stop; the next start will take it for a crash");
        }
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), server_task).await;
    }
    // A socket passed by systemd stays: holdfast.socket keeps listening on it.
    if owns_socket_file {
        let _ = std::fs::remove_file(&settings.socket);
    }
    tracing::info!("stopped");
    // The lock is released last, once nothing more is written.
    drop(state_lock);
    Ok(())
}

/// Whether the engine runs: exactly one of the two, and only ever from
/// held to running.
enum Phase {
    /// The state directory is read-only: the engine's side of its channels,
    /// kept for when it is writable.
    Held(engine::Wiring),
    Running(Running),
}

/// What runs once the engine does.
struct Running {
    engine: tokio::task::JoinHandle<()>,
    _watcher: Option<watcher::Watcher>,
}

/// Start the engine on a writable store: recover unfinished jobs, run its
/// loop, and start what goes with it (retention, the workflow watcher).
fn start_engine(
    settings: &Arc<Settings>,
    store: &store::Store,
    wiring: engine::Wiring,
    handle: &engine::EngineHandle,
    notifier: &systemd::Notifier,
) -> anyhow::Result<Running> {
    notifier.watchdog();
    notifier.status("recovering unfinished jobs");
    let (engine, commands, exec) = engine::Engine::start(settings.clone(), store.clone(), wiring)?;
    let engine = tokio::spawn(engine.run(commands, exec));
    // `hfctl info` shows whether slurmctld answers; ask once now, so the
    // first client does not see "not checked yet".
    if executor::slurm::available() {
        executor::slurm::refresh_ping();
    }
    notify::start(
        store.clone(),
        settings.notify.clone(),
        handle.registry.clone(),
        handle.notifier.clone(),
    );
    retention::start(
        store.clone(),
        settings.logs_dir(),
        retention::Policy {
            retention: settings.retention,
            retention_jobs: settings.retention_jobs,
            audit_retention: settings.audit_retention,
        },
    );
    let watcher = watcher::start(
        &[
            &settings.workflows_dir,
            &settings.tenants_dir,
            &settings.connections_dir,
        ],
        handle.clone(),
    );
    Ok(Running {
        engine,
        _watcher: watcher,
    })
}

/// A task stopped when its handle goes out of scope.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
