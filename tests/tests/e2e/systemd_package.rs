//! The Debian package as `systemd.rs` installs it: built by
//! packaging/build-deb from this run's binaries, then checked before it is
//! installed (lintian, the man pages' lint, how each binary is linked, from
//! one extraction of it), and
//! copied where the inner systemd can see it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use holdfast_tests::{bin_dir, run_with_deadline};

use crate::systemd::{stderr, stdout, target_dir, workspace_root};

/// packaging/build-deb, with the binaries this test run was built with.
pub(crate) fn build_package() -> PathBuf {
    let profile = if bin_dir().ends_with("release") {
        "release"
    } else {
        "dev"
    };
    let mut cmd = Command::new(workspace_root().join("packaging/build-deb"));
    cmd.args(["--profile", profile, "--no-build"])
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null());
    let output = run_with_deadline(cmd, Duration::from_secs(600));
    assert!(
        output.status.success(),
        "packaging/build-deb failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    let deb = PathBuf::from(stdout(&output).lines().last().unwrap_or_default().trim());
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(
        deb.is_file() && name.starts_with("holdfast_") && name.ends_with(".deb"),
        "build-deb did not print the package's path: {}",
        stdout(&output)
    );
    deb
}

/// lintian finds no error and no warning in the package (Debian's own
/// checks: changelog, copyright, dependencies, maintainer scripts). The tags
/// it prints are shown either way.
pub(crate) fn lintian_clean(deb: &Path) {
    let mut cmd = Command::new("lintian");
    cmd.arg(deb).stdin(Stdio::null());
    let output = run_with_deadline(cmd, Duration::from_secs(600));
    let tags = stdout(&output);
    eprintln!("systemd test: lintian:\n{tags}");
    let bad: Vec<&str> = tags
        .lines()
        .filter(|line| line.starts_with("E: ") || line.starts_with("W: "))
        .collect();
    assert!(
        bad.is_empty(),
        "lintian reports errors or warnings:\n{}",
        bad.join("\n")
    );
    assert!(
        output.status.success(),
        "lintian failed: {tags}{}",
        stderr(&output)
    );
    // The package carries its own md5sums (for debsums and dpkg --verify).
    let md5sums = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(deb)
        .arg("md5sums")
        .output()
        .expect("run dpkg-deb");
    assert!(
        md5sums.status.success() && stdout(&md5sums).contains("  usr/bin/holdfastd\n"),
        "the package has no md5sums: {}",
        stderr(&md5sums)
    );
}

/// The package's files, extracted into a temporary directory.
pub(crate) fn unpack(deb: &Path) -> tempfile::TempDir {
    let unpacked = tempfile::tempdir().expect("tempdir");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(unpacked.path())
        .status()
        .expect("run dpkg-deb");
    assert!(status.success(), "dpkg-deb -x failed");
    unpacked
}

/// On x86_64 the package's hfctl is the static build (no program
/// interpreter, so no dynamic loader at each start) and still
/// position-independent (ASLR); elsewhere packaging/build-hfctl builds it
/// dynamically linked. holdfastd is linked dynamically against the system's
/// libc. `root` is the extracted package.
pub(crate) fn binaries_linked_as_documented(root: &Path) {
    let hfctl = elf_linking(&root.join("usr/bin/hfctl"));
    let static_hfctl = cfg!(target_arch = "x86_64");
    assert_eq!(
        hfctl,
        (true, !static_hfctl),
        "hfctl: (PIE, has an interpreter)"
    );
    let daemon = elf_linking(&root.join("usr/bin/holdfastd"));
    assert_eq!(daemon, (true, true), "holdfastd: (PIE, has an interpreter)");
}

/// Whether an ELF executable is position-independent (type `DYN`) and
/// whether it names a program interpreter (an `INTERP` program header), as
/// binutils' `readelf` reads them (dpkg-dev, which the package build needs,
/// depends on binutils).
fn elf_linking(path: &Path) -> (bool, bool) {
    let readelf = |what: &str| {
        let output = Command::new("readelf")
            .args([what, "-W"])
            .arg(path)
            .output()
            .expect("run readelf");
        assert!(
            output.status.success(),
            "readelf {what} {}: {}",
            path.display(),
            stderr(&output)
        );
        stdout(&output)
    };
    let pie = readelf("-h")
        .lines()
        .any(|l| l.trim_start().starts_with("Type:") && l.contains("DYN"));
    let interp = readelf("-l")
        .lines()
        .any(|l| l.trim_start().starts_with("INTERP"));
    (pie, interp)
}

/// Every man page the package installs passes mandoc's linter at warning
/// level: a `.TH` with a date and the version, no misplaced macros. `root`
/// is the extracted package; its pages are decompressed in place.
pub(crate) fn man_pages_clean(root: &Path) {
    let mut pages: Vec<PathBuf> = Vec::new();
    for section in ["man1", "man8"] {
        let dir = root.join("usr/share/man").join(section);
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            pages.push(entry.expect("entry").path());
        }
    }
    assert!(pages.len() > 10, "too few man pages: {pages:?}");
    // (This mandoc does not read compressed pages itself.)
    let status = Command::new("gzip")
        .arg("-d")
        .args(&pages)
        .status()
        .expect("run gzip");
    assert!(status.success(), "gzip -d failed");
    let pages: Vec<PathBuf> = pages.iter().map(|p| p.with_extension("")).collect();
    let lint = Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .args(&pages)
        .output()
        .expect("run mandoc");
    let said = format!("{}{}", stdout(&lint), stderr(&lint));
    assert!(
        lint.status.success() && said.is_empty(),
        "mandoc -T lint reports: {said}"
    );
    let page = root.join("usr/share/man/man1/hfctl.1");
    let page = fs::read_to_string(&page).expect("hfctl.1");
    let title = page
        .lines()
        .find(|l| l.starts_with(".TH"))
        .unwrap_or_default();
    assert!(
        title.contains(concat!("\"HoldFast ", env!("CARGO_PKG_VERSION"), "\""))
            && title
                .split_whitespace()
                .nth(3)
                .is_some_and(|d| d.len() == 10),
        "hfctl.1's .TH has no date and version: {title}"
    );
}

/// The package where the inner systemd can see it. Its namespace mounts
/// fresh /tmp, /var/tmp and /run, so a package built in a checkout under one
/// of those (a clone in /tmp, say) is copied out first and removed on drop.
pub(crate) struct VisiblePackage {
    pub(crate) path: PathBuf,
    copied: bool,
}

impl VisiblePackage {
    pub(crate) fn new(deb: PathBuf) -> VisiblePackage {
        let hidden = ["/tmp", "/var/tmp", "/run"]
            .iter()
            .any(|dir| deb.starts_with(dir));
        if !hidden {
            return VisiblePackage {
                path: deb,
                copied: false,
            };
        }
        let name = deb.file_name().expect("the package has a file name");
        let dir = PathBuf::from(format!("/var/cache/holdfast-e2e-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a staging directory outside /tmp can be made");
        let path = dir.join(name);
        fs::copy(&deb, &path).expect("the package can be copied out of /tmp");
        VisiblePackage { path, copied: true }
    }
}

impl Drop for VisiblePackage {
    fn drop(&mut self) {
        if self.copied
            && let Some(dir) = self.path.parent()
        {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Sets a file's modification time with touch(1) (`when` as `touch -d`
/// reads it).
fn set_mtime(path: &Path, when: &str) {
    let status = Command::new("touch")
        .args(["-d", when])
        .arg(path)
        .status()
        .expect("run touch");
    assert!(status.success(), "touch {}", path.display());
}

/// A stand-in binary at `path` (never run) with a dep-info file beside it
/// listing `sources`, and the time given.
fn stand_in(path: &Path, sources: &[&Path], binary_time: &str) {
    fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
    fs::write(path, "#!/bin/false\n").expect("write a stand-in");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    let listed: Vec<String> = sources
        .iter()
        .map(|s| s.display().to_string().replace(' ', "\\ "))
        .collect();
    let mut dep_info = path.as_os_str().to_owned();
    dep_info.push(".d");
    // As rustc writes them too: each source again as a target of its own,
    // and a comment.
    let mut text = format!("{}: {}\n\n", path.display(), listed.join(" "));
    for source in &listed {
        text.push_str(&format!("{source}:\n"));
    }
    text.push_str("# env-dep:CARGO_PKG_NAME=tool\n");
    fs::write(&dep_info, text).expect("write the dep-info file");
    set_mtime(path, binary_time);
}

/// packaging/check-fresh BINARY REBUILD from the workspace root, with
/// `rebuild-command` as REBUILD.
fn check_fresh(binary: &Path) -> std::process::Output {
    let mut cmd = Command::new(workspace_root().join("packaging/check-fresh"));
    cmd.arg(binary)
        .arg("rebuild-command")
        .current_dir(workspace_root())
        .stdin(Stdio::null());
    run_with_deadline(cmd, Duration::from_secs(60))
}

/// packaging/check-fresh passes a binary newer than every source its
/// dep-info file lists, and one without that file; refuses one older than
/// a source or built from a source that is gone, naming the binary, the
/// source and the rebuild command; reads paths with spaces; and notes
/// (without refusing) a lock file newer than the binary.
#[test]
fn check_fresh_refuses_a_binary_older_than_its_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("src/old.rs");
    let spaced = dir.path().join("src dir/with space.rs");
    for source in [&old, &spaced] {
        fs::create_dir_all(source.parent().expect("a directory")).expect("mkdir");
        fs::write(source, "// a source\n").expect("write a source");
        set_mtime(source, "2020-01-01");
    }
    let binary = dir.path().join("debug/tool");

    // Built now: newer than the workspace's lock file and manifest too.
    stand_in(&binary, &[&old, &spaced], "now");
    let fresh = check_fresh(&binary);
    assert!(
        fresh.status.success() && stderr(&fresh).is_empty(),
        "a fresh binary passes quietly: {}",
        stderr(&fresh)
    );

    set_mtime(&spaced, "now + 1 hour");
    let stale = check_fresh(&binary);
    let said = stderr(&stale);
    assert_eq!(
        stale.status.code(),
        Some(1),
        "a stale binary is refused: {said}"
    );
    assert!(
        said.contains(&format!(
            "{} is older than {}",
            binary.display(),
            spaced.display()
        )) && said.contains("rebuild-command"),
        "the refusal names the binary, the newer source (with its space) and the rebuild: {said}"
    );

    let gone = dir.path().join("src/gone.rs");
    stand_in(&binary, &[&old, &gone], "now");
    let moved = check_fresh(&binary);
    let said = stderr(&moved);
    assert_eq!(
        moved.status.code(),
        Some(1),
        "a missing source is refused: {said}"
    );
    assert!(
        said.contains(&gone.display().to_string()) && said.contains("not there"),
        "the refusal names the missing source: {said}"
    );

    // Sources older still than a binary dated before the workspace's lock
    // file: passed, with a note.
    set_mtime(&old, "1999-01-01");
    stand_in(&binary, &[&old], "2000-01-01");
    let noted = check_fresh(&binary);
    assert!(
        noted.status.success() && stderr(&noted).contains("note: Cargo.lock is newer than"),
        "a newer lock file is noted, not refused: {}",
        stderr(&noted)
    );

    fs::remove_file(dir.path().join("debug/tool.d")).expect("remove the dep-info file");
    let unknown = check_fresh(&binary);
    assert!(
        unknown.status.success() && stderr(&unknown).is_empty(),
        "without a dep-info file nothing can be told: {}",
        stderr(&unknown)
    );
}

/// `build-deb --no-build` runs that check on both binaries and packages
/// nothing when one is stale. The binaries are stand-ins in a target
/// directory of their own; the refusal comes before anything is run.
#[test]
fn build_deb_refuses_a_stale_binary() {
    let target = tempfile::tempdir().expect("tempdir");
    let print_path = Command::new(workspace_root().join("packaging/build-hfctl"))
        .args(["--profile", "dev", "--print-path"])
        .env("CARGO_TARGET_DIR", target.path())
        .stdin(Stdio::null())
        .output()
        .expect("run packaging/build-hfctl");
    assert!(
        print_path.status.success(),
        "build-hfctl --print-path: {}",
        stderr(&print_path)
    );
    let hfctl = PathBuf::from(
        stdout(&print_path)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    let daemon = target.path().join("debug/holdfastd");
    let source = target.path().join("main.rs");
    fs::write(&source, "// a source\n").expect("write a source");
    set_mtime(&source, "2020-01-01");
    for (stale, rebuild) in [
        (&daemon, "cargo build --locked --profile dev -p holdfastd"),
        (&hfctl, "packaging/build-hfctl --profile dev"),
    ] {
        stand_in(&daemon, &[&source], "now");
        stand_in(&hfctl, &[&source], "now");
        set_mtime(stale, "2001-01-01");
        let mut cmd = Command::new(workspace_root().join("packaging/build-deb"));
        cmd.args(["--profile", "dev", "--no-build"])
            .env("CARGO_TARGET_DIR", target.path())
            .stdin(Stdio::null());
        let output = run_with_deadline(cmd, Duration::from_secs(120));
        let said = stderr(&output);
        assert!(
            !output.status.success()
                && said.contains(&format!("{} is older than ", stale.display()))
                && said.contains(rebuild)
                && said.contains("build-deb: not packaging a stale binary"),
            "a stale {} is refused, with the rebuild named: {said}",
            stale.display()
        );
        assert!(
            !target.path().join("debian").exists(),
            "nothing is packaged"
        );
    }
}
