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

/// `build-deb --no-build` refuses a binary older than a source cargo
/// listed for it (its `.d` file), naming the binary, the newer source and
/// how to rebuild it, and packages nothing. The binaries are stand-ins in
/// a target directory of their own (the check refuses before anything is
/// run), beside copies of this build's real `.d` files.
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
    for (stand_in, real) in [(&daemon, "holdfastd"), (&hfctl, "hfctl")] {
        fs::create_dir_all(stand_in.parent().expect("a directory")).expect("mkdir");
        fs::write(stand_in, "#!/bin/false\n").expect("write a stand-in");
        fs::set_permissions(stand_in, fs::Permissions::from_mode(0o755)).expect("chmod");
        let dep_info = bin_dir().join(format!("{real}.d"));
        fs::copy(&dep_info, stand_in.with_extension("d"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", dep_info.display()));
    }
    let age = |path: &Path, when: &str| {
        let status = Command::new("touch")
            .args(["-d", when])
            .arg(path)
            .status()
            .expect("run touch");
        assert!(status.success(), "touch {}", path.display());
    };
    let build_deb = || {
        let mut cmd = Command::new(workspace_root().join("packaging/build-deb"));
        cmd.args(["--profile", "dev", "--no-build"])
            .env("CARGO_TARGET_DIR", target.path())
            .stdin(Stdio::null());
        run_with_deadline(cmd, Duration::from_secs(120))
    };
    for (stale, rebuild) in [
        (&daemon, "cargo build --locked --profile dev -p holdfastd"),
        (&hfctl, "packaging/build-hfctl --profile dev"),
    ] {
        age(&daemon, "now");
        age(&hfctl, "now");
        age(stale, "2001-01-01");
        let output = build_deb();
        let said = stderr(&output);
        assert!(
            !output.status.success(),
            "a stale {} was packaged: {said}",
            stale.display()
        );
        assert!(
            said.contains(&format!("{} is older than ", stale.display()))
                && said.contains(".rs;")
                && said.contains(rebuild),
            "the refusal names the binary, a source and the rebuild: {said}"
        );
        assert!(
            !target.path().join("debian").exists(),
            "nothing is packaged"
        );
    }
}
