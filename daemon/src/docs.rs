//! holdfastd's man page (section 8) and shell completions, rendered from the
//! clap definition that parses its command line, so they cannot drift from
//! it. `holdfastd --generate-docs DIR` writes them; packaging/build-deb runs
//! it. What clap does not know (signals, files, environment) is added here.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};

/// Extra man page sections: (heading, [(term, text)]); an empty term is a
/// plain paragraph.
type Section = (&'static str, &'static [(&'static str, &'static str)]);

const SECTIONS: &[Section] = &[
    (
        "DESCRIPTION",
        &[(
            "",
            "holdfastd keeps chains (workflow definitions), jobs, activities and their attempts in \
             one SQLite database, runs activities as child processes (each in its own process \
             group, and in its own cgroup where the daemon owns a delegated cgroup v2 subtree) \
             and answers JSON-RPC 2.0 on a Unix socket; hfctl(1) is its client. It is \
             normally run by systemd as holdfast.service, as the holdfast user, in system mode.",
        )],
    ),
    (
        "SIGNALS",
        &[
            (
                "SIGTERM, SIGINT",
                "Stop accepting work, send SIGTERM to every running activity's process group, \
                 SIGKILL what is left after kill_grace, record the attempts as interrupted (they \
                 resume at the next start) and exit.",
            ),
            (
                "SIGHUP",
                "Re-read the workflow and tenant files (as hfctl reload does, without its \
                 answer). systemctl reload holdfast runs hfctl reload instead, which waits for \
                 the reload and fails when a file is broken.",
            ),
        ],
    ),
    (
        "SYSTEMD",
        &[
            (
                "Readiness",
                "With NOTIFY_SOCKET set, READY=1 is sent once the socket is served and unfinished \
                 jobs are recovered (on a read-only state directory: once reads are served; jobs \
                 resume when it is writable); STATUS= carries the running and queued counts.",
            ),
            (
                "Watchdog",
                "With WatchdogSec= set, WATCHDOG=1 is sent each time the engine loop answers a \
                 probe, so a wedged engine is restarted.",
            ),
            (
                "Delegate=yes",
                "The cgroup setting auto uses the service's delegated cgroup: the daemon moves to \
                 its holdfastd/ leaf and runs each attempt in attempt-JOB-INDEX-N with the caps \
                 the granted controllers can enforce; hfctl info shows what was granted.",
            ),
            (
                "Socket activation",
                "A listening socket passed with LISTEN_FDS (holdfast.socket) is served instead \
                 of binding the socket path, and is left in place at exit.",
            ),
            (
                "Journal",
                "When stderr is the journal stream (JOURNAL_STREAM) and the journal socket \
                 answers, log lines go to the journal natively with the fields HF_JOB_ID, \
                 HF_CHAIN, HF_PROCESS, HF_ACTIVITY, HF_ATTEMPT and HF_ERROR_ID and \
                 SYSLOG_IDENTIFIER=holdfastd; for example journalctl -u holdfast HF_JOB_ID=42. \
                 Otherwise they go to stderr.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "HOLDFAST_CONFIG, HOLDFAST_SOCKET, HOLDFAST_STATE_DIR, HOLDFAST_WORKFLOWS_DIR, HOLDFAST_TENANTS_DIR",
                "The same as the options of the same names.",
            ),
            (
                "HOLDFAST_LOG",
                "journal or stderr: where log lines go, instead of deciding from JOURNAL_STREAM.",
            ),
            (
                "RUST_LOG",
                "Log filter (for example debug, or info,holdfastd=trace); overrides -v.",
            ),
        ],
    ),
    (
        "FILES",
        &[
            (
                "/etc/holdfast/holdfast.toml",
                "Settings; every key is optional (system mode).",
            ),
            (
                "/etc/holdfast/workflows.d/*.toml",
                "Chains, one per file; changes are picked up by themselves, and on SIGHUP.",
            ),
            (
                "/etc/holdfast/tenants.d/*.toml",
                "Tenants (parameter sets).",
            ),
            (
                "/var/lib/holdfast/",
                "The database (holdfast.db) and attempt logs (logs/).",
            ),
            (
                "/run/holdfast/holdfast.sock",
                "The socket: mode 0660, group holdfast. Members of the group may submit and read.",
            ),
            (
                "/usr/share/doc/holdfast/examples/",
                "Example settings, chains and a tenant.",
            ),
        ],
    ),
    (
        "SEE ALSO",
        &[(
            "",
            "hfctl(1), systemd.service(5), systemd.socket(5), journalctl(1)",
        )],
    ),
];

/// The directory of `holdfastd --generate-docs DIR`, the packaging step's
/// entry. It is kept out of the clap definition so that no man page or
/// completion mentions it.
pub fn requested() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(dir), None) if flag == "--generate-docs" => Some(dir.into()),
        _ => None,
    }
}

/// Write `man/holdfastd.8` and `completions/{bash,zsh,fish}/` under `dir`.
pub fn generate(dir: &Path) -> std::io::Result<()> {
    let command = crate::Args::command();
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    // The `.TH` line: a date mandoc can read (the day of
    // `SOURCE_DATE_EPOCH`, which packaging/build-deb sets to the
    // changelog's date so that a rebuild makes the same page; else today),
    // the version and the manual.
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    let man = clap_mangen::Man::new(command.clone())
        .section("8")
        .date(when.format("%Y-%m-%d").to_string())
        .source(format!("HoldFast {}", env!("CARGO_PKG_VERSION")))
        .manual("HoldFast Manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    let (description, rest) = SECTIONS.split_at(1);
    render_sections(&mut page, description)?;
    man.render_options_section(&mut page)?;
    render_sections(&mut page, rest)?;
    man.render_version_section(&mut page)?;
    std::fs::write(man_dir.join(man.get_filename()), page)?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let out = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&out)?;
        clap_complete::generate_to(shell, &mut command.clone(), "holdfastd", &out)?;
    }
    Ok(())
}

fn render_sections(out: &mut Vec<u8>, sections: &[Section]) -> std::io::Result<()> {
    let mut roff = Roff::new();
    for (heading, items) in sections {
        roff.control("SH", [*heading]);
        for (i, (term, text)) in items.iter().enumerate() {
            if term.is_empty() {
                // A paragraph break, except right after the heading.
                if i > 0 {
                    roff.control("PP", []);
                }
            } else {
                roff.control("TP", []);
                roff.text([bold(*term)]);
            }
            roff.text([roman(*text)]);
        }
    }
    roff.to_writer(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_the_man_page_and_completions() {
        let dir = tempfile::tempdir().expect("tempdir");
        super::generate(dir.path()).expect("generate");
        let page = std::fs::read_to_string(dir.path().join("man/holdfastd.8")).expect("page");
        assert!(page.contains(".TH holdfastd 8"), "{page}");
        assert!(page.contains("\\-\\-state\\-dir"), "{page}");
        assert!(page.contains("SIGHUP"), "{page}");
        assert!(
            !page.contains("generate\\-docs"),
            "hidden flag leaked: {page}"
        );
        for file in [
            "bash/holdfastd.bash",
            "zsh/_holdfastd",
            "fish/holdfastd.fish",
        ] {
            let path = dir.path().join("completions").join(file);
            assert!(path.is_file(), "{} missing", path.display());
        }
    }
}
