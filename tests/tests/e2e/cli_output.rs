//! How `hfctl` draws, as the terminal conventions say: colour only on a
//! terminal that supports it and only when the environment allows it
//! (`NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`, `TERM=dumb`), checked with a
//! pipe and with a real pseudo-terminal (`script`); trees, bars and charts
//! in ASCII when the locale is not UTF-8.

use std::process::Command;

use holdfast_api::JobState;
use holdfast_tests::{TestDaemon, bin_path, eventually, hfctl_command, run_with_deadline};

use crate::watch_view::Tmux;

use std::time::Duration;

const WORK: &str = r#"
[process.p]
mode = "serial"
[process.p.activity.a]
shell = "true"
[process.p.activity.b]
shell = "true"
"#;

const ESCAPE: &str = "\x1b[";

/// `hfctl list` through a pipe, with `env` added to the test's own
/// environment (which has no NO_COLOR, CLICOLOR or CLICOLOR_FORCE).
fn piped(daemon: &TestDaemon, env: &[(&str, &str)]) -> String {
    let mut cmd = hfctl_command(daemon.socket());
    for name in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CI"] {
        cmd.env_remove(name);
    }
    cmd.env("TERM", "xterm-256color");
    cmd.envs(env.iter().copied()).arg("list");
    let output = run_with_deadline(cmd, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `hfctl list` on a pseudo-terminal (`script` runs it on one and copies
/// what it printed), with `env` set.
fn on_a_terminal(daemon: &TestDaemon, env: &[(&str, &str)]) -> String {
    let hfctl = format!(
        "{} --socket {} list",
        bin_path("hfctl").display(),
        daemon.socket().display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &hfctl, "/dev/null"]);
    // (`CI` set means a CI log viewer that renders colour, to anstream:
    // the matrix below is a user's terminal; CI is checked on its own.)
    for name in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CI"] {
        cmd.env_remove(name);
    }
    cmd.env("TERM", "xterm-256color");
    cmd.envs(env.iter().copied());
    let output = run_with_deadline(cmd, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("succeeded"), "the list was printed: {text:?}");
    text
}

/// Proves colour follows the conventions: none through a pipe, none with
/// `NO_COLOR`, `CLICOLOR=0` or `TERM=dumb` on a terminal, colour on a
/// terminal otherwise and through a pipe with `CLICOLOR_FORCE=1`.
#[test]
fn colour_follows_the_terminal_and_the_environment() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script (util-linux)");
        return;
    }
    let daemon = TestDaemon::start(&[("work.toml", WORK)]);
    let id = daemon.submit("work", &[]);
    assert_eq!(daemon.wait_done(id).state, JobState::Succeeded);

    let pipe = piped(&daemon, &[]);
    assert!(
        pipe.contains("succeeded") && !pipe.contains(ESCAPE),
        "{pipe:?}"
    );
    let forced = piped(&daemon, &[("CLICOLOR_FORCE", "1")]);
    assert!(forced.contains(ESCAPE), "CLICOLOR_FORCE=1: {forced:?}");
    let forced_but_no = piped(&daemon, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(
        !forced_but_no.contains(ESCAPE),
        "NO_COLOR wins over CLICOLOR_FORCE: {forced_but_no:?}"
    );

    let tty = on_a_terminal(&daemon, &[]);
    assert!(tty.contains(ESCAPE), "a terminal: {tty:?}");
    for env in [("NO_COLOR", "1"), ("CLICOLOR", "0"), ("TERM", "dumb")] {
        let text = on_a_terminal(&daemon, &[env]);
        assert!(!text.contains(ESCAPE), "{}={}: {text:?}", env.0, env.1);
    }
    // Under CI (the variable set), a terminal gets colour even with
    // TERM=dumb, as anstream decides for CI log viewers; NO_COLOR still
    // wins there.
    let ci = on_a_terminal(&daemon, &[("CI", "true"), ("TERM", "dumb")]);
    assert!(ci.contains(ESCAPE), "CI=true TERM=dumb: {ci:?}");
    let ci = on_a_terminal(&daemon, &[("CI", "true"), ("NO_COLOR", "1")]);
    assert!(!ci.contains(ESCAPE), "CI=true NO_COLOR=1: {ci:?}");
    // An empty NO_COLOR does not count (no-color.org).
    let empty = on_a_terminal(&daemon, &[("NO_COLOR", "")]);
    assert!(empty.contains(ESCAPE), "NO_COLOR=\"\": {empty:?}");
}

/// Proves the tree of `hfctl status` and the chart of `hfctl timeline`
/// are drawn in ASCII when the locale is not UTF-8, and with box-drawing
/// characters when it is.
#[test]
fn trees_and_charts_are_ascii_outside_a_utf8_locale() {
    let daemon = TestDaemon::start(&[("work.toml", WORK)]);
    let id = daemon.submit("work", &[]);
    assert_eq!(daemon.wait_done(id).state, JobState::Succeeded);
    let run = |locale: &str, command: &str| -> String {
        let mut cmd = hfctl_command(daemon.socket());
        cmd.env("LC_ALL", locale).args([command, &id.to_string()]);
        let output = run_with_deadline(cmd, Duration::from_secs(30));
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let utf8 = run("C.UTF-8", "status");
    assert!(utf8.contains("└─ p") && utf8.contains("├─ a"), "{utf8}");
    for locale in ["C", "POSIX", "en_US.ISO-8859-1"] {
        let ascii = run(locale, "status");
        assert!(
            ascii.contains("`- p") && ascii.contains("|- a") && ascii.contains("`- b"),
            "LC_ALL={locale}: {ascii}"
        );
        assert!(ascii.is_ascii(), "LC_ALL={locale}: {ascii}");
    }
    let chart = run("C", "timeline");
    assert!(chart.is_ascii(), "{chart}");
    assert!(
        chart
            .lines()
            .any(|l| l.starts_with("p.a") && l.contains('|') && l.contains('#')),
        "{chart}"
    );
    let chart = run("C.UTF-8", "timeline");
    assert!(chart.contains('█') && chart.contains('│'), "{chart}");
}

const ALPHA: &str = r#"
[process.p.activity.a]
shell = "true"
"#;

/// Proves bash completion, loaded from the file the package installs and
/// typed at a real terminal (bash in tmux), offers the loaded chains after
/// `hfctl submit`, the newest job ids after `hfctl status`, and the job
/// states after `hfctl list --state`.
#[test]
fn bash_completion_offers_chains_jobs_and_states() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: no tmux");
        return;
    }
    let daemon = TestDaemon::start(&[("alpha-etl.toml", ALPHA), ("beta-load.toml", ALPHA)]);
    let first = daemon.submit("alpha-etl", &[]);
    let second = daemon.submit("beta-load", &[]);
    daemon.wait_done(second);
    let docs = tempfile::tempdir().expect("tempdir");
    let generated = Command::new(bin_path("hfctl"))
        .arg("--generate-docs")
        .arg(docs.path())
        .status()
        .expect("hfctl --generate-docs");
    assert!(generated.success());
    let bin_dir = bin_path("hfctl")
        .parent()
        .expect("a directory")
        .to_path_buf();
    let shell = format!(
        "env -i PATH={}:/usr/bin:/bin TERM=xterm HOME={} HOLDFAST_SOCKET={} \
         bash --norc --noprofile",
        bin_dir.display(),
        docs.path().display(),
        daemon.socket().display()
    );
    let tmux = Tmux::start(&shell).expect("tmux starts");
    let source = format!(
        "source {}",
        docs.path().join("completions/bash/hfctl.bash").display()
    );
    tmux.tmux(&["send-keys", &source, "Enter"]);
    let offered = |typed: &str, expected: &[&str]| {
        tmux.tmux(&["send-keys", "clear", "Enter"]);
        tmux.tmux(&["send-keys", typed, "Tab", "Tab"]);
        eventually(Duration::from_secs(20), typed, || {
            let screen = tmux.screen();
            if expected.iter().all(|e| screen.contains(e)) {
                Ok(())
            } else {
                Err(screen)
            }
        });
        tmux.tmux(&["send-keys", "C-c"]);
    };
    offered("hfctl submit ", &["alpha-etl", "beta-load"]);
    offered("hfctl status ", &[&first.to_string(), &second.to_string()]);
    offered(
        "hfctl list --state ",
        &["queued", "running", "succeeded", "failed", "cancelled"],
    );
    // One candidate is completed on the line.
    tmux.tmux(&["send-keys", "clear", "Enter"]);
    tmux.tmux(&["send-keys", "hfctl submit be", "Tab"]);
    eventually(Duration::from_secs(20), "beta-load completed", || {
        let screen = tmux.screen();
        if screen.contains("hfctl submit beta-load") {
            Ok(())
        } else {
            Err(screen)
        }
    });
}
