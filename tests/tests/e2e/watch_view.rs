//! `hfctl watch`: the full-screen view driven in a real terminal (tmux),
//! its bars advancing with the activity's progress, the queue with why a
//! job waits, `q` quitting; and plain lines when stdout is no terminal.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use holdfast_api::{ActivityState, JobState};
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, bin_path, eventually, finish_child_output};

use crate::live_views::INTERRUPTED;
use crate::support::shown;

const STEP: Duration = Duration::from_secs(30);

/// Reports 20 %, then 60 % once `step` exists, then ends once `done` does.
const STEPS: &str = r#"
[chain]
concurrency = 1

[process.p.activity.steps]
shell = '''
echo "progress 20 first step" >&3
while [ ! -e @DIR@/step ]; do sleep 0.05; done
echo "progress 60 second step" >&3
while [ ! -e @DIR@/done ]; do sleep 0.05; done
'''
"#;

/// A tmux server of its own (one per use, so tests in parallel do not
/// share one), killed on drop.
pub(crate) struct Tmux {
    server: String,
}

impl Tmux {
    pub(crate) fn start(command: &str) -> Option<Tmux> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let server = format!(
            "hf-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let started = Command::new("tmux")
            .args(["-L", &server, "new-session", "-d", "-x", "120", "-y", "40"])
            .arg(command)
            .status()
            .ok()?;
        assert!(started.success(), "tmux new-session: {started}");
        Some(Tmux { server })
    }

    pub(crate) fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.server])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    pub(crate) fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).to_string()
    }

    pub(crate) fn alive(&self) -> bool {
        self.tmux(&["has-session"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The number of filled cells of the bar on the line that names `path`.
fn filled(screen: &str, path: &str) -> Result<usize, String> {
    screen
        .lines()
        .find(|l| l.contains(path))
        .map(|l| l.matches('█').count())
        .ok_or_else(|| format!("no line for {path}:\n{screen}"))
}

/// In a 120×40 tmux pane, `hfctl watch` shows the running activity with a
/// bar that fills as its progress goes from 20 % to 60 %, updated from the
/// subscription (nothing else changes the screen), a second job of the
/// chain in the queue with its wait reason, and exits on `q`.
#[test]
fn watch_in_a_terminal_shows_bars_advancing_and_the_queue() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux");
        return;
    }
    let daemon = TestDaemon::start(&[("steps.toml", STEPS)]);
    let first = daemon.submit("steps", &[]);
    daemon.wait_for(first, "at 20%", |job| {
        job.activities[0].progress.unwrap_or(0.0) >= 20.0
    });
    let second = daemon.submit("steps", &[]);
    let command = format!(
        "LC_ALL=C.UTF-8 NO_COLOR=1 {} --socket {} watch",
        bin_path("hfctl").display(),
        daemon.socket().display()
    );
    let tmux = Tmux::start(&command).expect("tmux starts");
    let (before, _) = eventually(STEP, "the bar at 20%", || {
        let screen = tmux.screen();
        if screen.contains("p.steps running 20% first step")
            && screen.contains(&format!("{second} steps chain_concurrency"))
        {
            filled(&screen, "p.steps running")
        } else {
            Err(screen)
        }
    });
    assert!(before > 0, "a fifth of the bar is filled");
    // Nothing happens while the activity waits for the step file, yet the
    // job's elapsed time moves: the view is drawn again every second.
    let job_line = |screen: &str| {
        screen
            .lines()
            .find(|l| {
                l.trim_start_matches(|c: char| c == '│' || c.is_whitespace())
                    .starts_with(&format!("{first} steps running"))
            })
            .map(str::to_string)
    };
    let (shown, _) = eventually(STEP, "the first job's line", || {
        let screen = tmux.screen();
        job_line(&screen).ok_or(screen)
    });
    eventually(STEP, "the elapsed time moving without events", || {
        let screen = tmux.screen();
        match job_line(&screen) {
            Some(line) if line != shown => Ok(()),
            _ => Err(format!("still {shown:?}\n{screen}")),
        }
    });
    std::fs::write(daemon.dir().join("step"), "").expect("the step file");
    let (after, _) = eventually(STEP, "the bar at 60%", || {
        let screen = tmux.screen();
        if screen.contains("p.steps running 60% second step") {
            filled(&screen, "p.steps running")
        } else {
            Err(screen)
        }
    });
    assert!(
        after >= before * 2,
        "the bar advanced: {before} then {after} cells\n{}",
        tmux.screen()
    );
    tmux.tmux(&["send-keys", "q"]);
    eventually(STEP, "hfctl watch quit on q", || {
        if tmux.alive() {
            Err(tmux.screen())
        } else {
            Ok(())
        }
    });
    std::fs::write(daemon.dir().join("done"), "").expect("the done file");
    for job in [first, second] {
        assert_eq!(daemon.wait_done(job).state, JobState::Succeeded);
    }
}

/// With stdout a pipe, `hfctl watch JOB` prints a line per change (the
/// activity's progress as it moves) and ends with the job.
#[test]
fn watch_without_a_terminal_prints_lines_until_the_job_ends() {
    let daemon = TestDaemon::start(&[("steps.toml", STEPS)]);
    let job_id = daemon.submit("steps", &[]);
    daemon.wait_for(job_id, "running", |job| {
        job.activities[0].state == ActivityState::Running
    });
    let mut watcher = daemon.hfctl_spawn(&["watch", &job_id.to_string()]);
    let stdout = watcher.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    // Until a line containing `needle` was printed.
    let mut wait_line = |needle: &str| {
        while !printed.iter().any(|l: &String| l.contains(needle)) {
            let line = lines
                .recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("no line with {needle:?}; printed {printed:#?}"));
            printed.push(line);
        }
    };
    wait_line("p.steps running 20% first step");
    std::fs::write(daemon.dir().join("step"), "").expect("the step file");
    wait_line("p.steps running 60% second step");
    std::fs::write(daemon.dir().join("done"), "").expect("the done file");
    wait_line(&format!("job {job_id} steps succeeded"));
    let output = finish_child_output(watcher, HFCTL_TIMEOUT);
    assert!(output.status.success(), "{}", shown(&output));
    let text = printed.join("\n");

    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {text}"))
    };
    assert!(
        at("p.steps running 20% first step") < at("p.steps running 60% second step"),
        "{text}"
    );
    assert!(
        at("p.steps running 60% second step") < at(&format!("job {job_id} steps succeeded")),
        "{text}"
    );
}

/// `hfctl watch JOB` outlives a kill -9 of the daemon: it says it lost the
/// daemon, connects again once it is back, and prints the job's end.
#[test]
fn watch_connects_again_after_the_daemon_is_killed() {
    let mut daemon = TestDaemon::start(&[("crash.toml", INTERRUPTED)]);
    let job_id = daemon.submit("crash", &[]);
    let running = daemon.wait_for(job_id, "attempt 1 running", |job| {
        job.activities[0].state == ActivityState::Running
    });
    let mut watcher = daemon.hfctl_spawn(&["watch", &job_id.to_string()]);
    let stdout = watcher.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed: Vec<String> = Vec::new();
    let mut wait_line = |needle: &str| {
        while !printed.iter().any(|l| l.contains(needle)) {
            let line = lines
                .recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("no line with {needle:?}; printed {printed:#?}"));
            printed.push(line);
        }
    };
    wait_line("p.a running");
    daemon.kill9();
    if let Some(pid) = running.activities[0].attempts[0].pid {
        // The old attempt's `sleep` outlives a daemon killed with SIGKILL.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-(pid as i32)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    daemon.launch();
    wait_line(&format!("job {job_id} crash failed"));
    let output = finish_child_output(watcher, HFCTL_TIMEOUT);
    assert!(output.status.success(), "{}", shown(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("connecting again"),
        "{}",
        shown(&output)
    );
}
