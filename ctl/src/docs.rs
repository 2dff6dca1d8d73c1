//! hfctl's man pages (hfctl.1 and one hfctl-COMMAND.1 per command) and its
//! bash, zsh and fish completions, rendered from the clap definition that
//! parses its command line, so they cannot drift from it.
//! `hfctl --generate-docs DIR` writes them; packaging/build-deb runs it. What
//! clap does not know (exit codes, environment, files) is added here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

/// The directory of `hfctl --generate-docs DIR`, the packaging step's entry.
/// It is kept out of the clap definition so that no man page or completion
/// mentions it.
pub fn requested() -> Option<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(dir), None) if flag == "--generate-docs" => Some(dir.into()),
        _ => None,
    }
}

/// Extra sections of hfctl.1: (heading, [(term, text)]).
type Section = (&'static str, &'static [(&'static str, &'static str)]);

/// The exit codes, as documented at the top of main.rs (keep the two in step).
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Success (with --wait or --follow: the job succeeded, alerts or not).",
    ),
    (
        "1",
        "Any other error (a job that could not be cancelled, a workflow file that does not validate, a lost connection, ...).",
    ),
    ("2", "Usage error (bad flags or arguments)."),
    ("3", "No daemon answers on the socket."),
    ("4", "With --wait or --follow: the job ended failed."),
    ("5", "With --wait or --follow: the job ended cancelled."),
    ("6", "NOT_FOUND: no such job, chain, activity or log."),
    ("7", "PERMISSION_DENIED, or the socket may not be opened."),
    ("8", "INVALID_PARAMETERS: one line per bad field follows."),
    ("9", "The daemon speaks another protocol version."),
    (
        "10",
        "INVALID_STATE: the job's state does not allow the call.",
    ),
    ("11", "UNAVAILABLE: the daemon cannot do this now."),
];

const SECTIONS: &[Section] = &[
    ("EXIT STATUS", EXIT_STATUS),
    (
        "ENVIRONMENT",
        &[
            ("HOLDFAST_SOCKET", "The daemon's socket, as --socket."),
            (
                "NO_COLOR",
                "When set and not empty, no colours (it wins over CLICOLOR_FORCE).",
            ),
            ("CLICOLOR", "0: no colours, even on a terminal."),
            (
                "CLICOLOR_FORCE",
                "When set and not 0: colours even when stdout is not a terminal.",
            ),
            ("TERM", "dumb: no colours."),
            (
                "LC_ALL, LC_CTYPE, LANG",
                "The first that is set names the character set: trees, bars and charts use box-drawing characters with UTF-8, ASCII otherwise.",
            ),
        ],
    ),
    (
        "FILES",
        &[
            (
                "/run/holdfast/holdfast.sock",
                "The system daemon's socket (mode 0660, group holdfast: members of the group may use hfctl).",
            ),
            (
                "$XDG_RUNTIME_DIR/holdfast/holdfast.sock",
                "A user-mode daemon's socket; used when it exists and no socket is given.",
            ),
        ],
    ),
    ("SEE ALSO", &[("", "holdfastd(8), journalctl(1)")]),
];

/// Write `man/` and `completions/{bash,zsh,fish}/` under `dir`.
pub fn run(dir: &Path) -> ExitCode {
    match generate(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hfctl: cannot write the docs under {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: &Path) -> std::io::Result<()> {
    let command = crate::Whole::command();
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    // One page per visible command (hfctl-submit.1, ...), then hfctl.1 again
    // with the sections clap does not know.
    let mut built = command.clone().disable_help_subcommand(true);
    built.build();
    write_pages(&built, &man_dir)?;
    let man = titled(Man::new(built));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    render_sections(&mut page, SECTIONS)?;
    man.render_version_section(&mut page)?;
    std::fs::write(man_dir.join(man.get_filename()), page)?;

    // bash and fish: a file that asks the installed hfctl for its
    // completion function each time the shell loads it, so it always
    // matches that hfctl and offers chain names and job ids from the
    // daemon (complete.rs). zsh: clap's generated script, with fixed values.
    let completions = dir.join("completions");
    for shell in ["bash", "fish"] {
        std::fs::create_dir_all(completions.join(shell))?;
    }
    std::fs::write(
        completions.join("bash").join("hfctl.bash"),
        "# hfctl's bash completion: hfctl writes the completion function itself\n\
         # (COMPLETE=bash hfctl), which asks it for chain names and job ids.\n\
         eval \"$(COMPLETE=bash hfctl 2>/dev/null)\"\n",
    )?;
    std::fs::write(
        completions.join("fish").join("hfctl.fish"),
        "# hfctl's fish completion: hfctl writes it (COMPLETE=fish hfctl).\n\
         COMPLETE=fish hfctl 2>/dev/null | source\n",
    )?;
    let out = completions.join(Shell::Zsh.to_string());
    std::fs::create_dir_all(&out)?;
    clap_complete::generate_to(Shell::Zsh, &mut command.clone(), "hfctl", &out)?;
    Ok(())
}

/// A page for `command` and one for each of its visible subcommands.
fn write_pages(command: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    titled(Man::new(command.clone())).generate_to(dir)?;
    Ok(())
}

/// The `.TH` line every page carries: a date mandoc can read (the day of
/// `SOURCE_DATE_EPOCH`, which packaging/build-deb sets to the changelog's
/// date so that a rebuild makes the same pages; else today), the version
/// and the manual.
fn titled(man: Man) -> Man {
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    man.date(when.format("%Y-%m-%d").to_string())
        .source(format!("HoldFast {}", env!("CARGO_PKG_VERSION")))
        .manual("HoldFast Manual")
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
    fn writes_a_page_per_command_and_completions() {
        let dir = tempfile::tempdir().expect("tempdir");
        super::generate(dir.path()).expect("generate");
        let man = dir.path().join("man");
        let page = std::fs::read_to_string(man.join("hfctl.1")).expect("hfctl.1");
        assert!(page.contains("EXIT STATUS"), "{page}");
        assert!(!page.contains("generate\\-docs"), "packaging entry leaked");
        for command in ["submit", "status", "logs", "reload", "emit"] {
            let path = man.join(format!("hfctl-{command}.1"));
            assert!(path.is_file(), "{} missing", path.display());
        }
        let completion = |file: &str| {
            let path = dir.path().join("completions").join(file);
            std::fs::read_to_string(&path).expect("completion file")
        };
        // zsh's is clap's script; bash and fish ask hfctl (complete.rs).
        let zsh = completion("zsh/_hfctl");
        assert!(
            zsh.contains("submit") && !zsh.contains("generate-docs"),
            "{zsh}"
        );
        assert!(completion("bash/hfctl.bash").contains("COMPLETE=bash hfctl"));
        assert!(completion("fish/hfctl.fish").contains("COMPLETE=fish hfctl"));
    }
}
