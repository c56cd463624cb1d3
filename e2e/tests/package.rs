//! The Debian package (`scripts/build-deb.sh`), built from the binaries under test and
//! installed with the real dpkg into a scratch root (`dpkg --root`, the maintainer
//! scripts run chrootless and, seeing `DPKG_ROOT`, leave the host's systemd alone): both
//! binaries are there, stripped, and run, their line tables in gitvisor-dbgsym under
//! their build ids; the unit passes `systemd-analyze verify`
//! against the installed binary; the completions are the binary's own; the docs are
//! there; the env file is a conffile; a purge leaves nothing. CI also builds the package
//! from the release profile and installs it on the CI machine itself (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gitvisor_e2e::{Outcome, gitvisor_bin, run_command, run_command_within, workspace_root};

fn command(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

fn tool_missing(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_err()
}

/// Every file under `root`, relative, except dpkg's own database.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("cannot read the scratch root") {
            let path = entry.expect("cannot read the scratch root").path();
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            if relative.starts_with("var/lib/dpkg") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Section names of an ELF file, from binutils' readelf.
fn elf_sections(binary: &Path) -> String {
    run_command(command(
        "readelf",
        &["-S", "--wide", &binary.display().to_string()],
    ))
    .expect_code(0)
    .stdout
}

fn dpkg_in(root: &Path, args: &[&str]) -> Outcome {
    let root_arg = format!("--root={}", root.display());
    let mut all = vec![
        root_arg.as_str(),
        "--force-script-chrootless",
        // The scratch root has no libc6 package to satisfy Depends.
        "--force-depends",
    ];
    all.extend(args);
    run_command(command("dpkg", &all)).expect_code(0)
}

#[test]
fn the_debian_package_installs_both_stripped_binaries_the_unit_completions_and_docs() {
    let test = "the_debian_package_installs_both_stripped_binaries_the_unit_completions_and_docs";
    if tool_missing("dpkg-deb") || tool_missing("readelf") {
        gitvisor_e2e::skip(
            test,
            "dpkg-deb or readelf missing (not a Debian/Ubuntu machine?)",
        );
        return;
    }
    let gitvisor = gitvisor_bin();
    let bin_dir = gitvisor.parent().expect("the binary has a directory");
    let vmm = bin_dir.join("gitvisor-vmm");
    assert!(
        vmm.is_file(),
        "{} does not exist; build both binaries with `cargo build --workspace`",
        vmm.display()
    );
    let scratch = tempfile::tempdir().expect("cannot make a scratch dir");
    let out = scratch.path().join("out");

    // Stripping and compressing a debug build takes a while on a loaded machine.
    let built = run_command_within(
        command(
            "bash",
            &[
                &workspace_root()
                    .join("scripts/build-deb.sh")
                    .display()
                    .to_string(),
                "--bin-dir",
                &bin_dir.display().to_string(),
                "--out",
                &out.display().to_string(),
                "--compression",
                "gzip",
            ],
        ),
        Duration::from_secs(600),
    )
    .expect_code(0);
    let deb = PathBuf::from(
        built
            .stdout
            .lines()
            .last()
            .expect("the script prints the .deb"),
    );
    assert!(deb.is_file(), "no package at {}\n{built}", deb.display());

    let version = run_command(command(gitvisor, &["--version"])).expect_code(0);
    let version = version
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("gitvisor VERSION");
    let field = |name: &str| {
        run_command(command(
            "dpkg-deb",
            &["--field", &deb.display().to_string(), name],
        ))
        .expect_code(0)
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(field("Package"), "gitvisor");
    assert_eq!(
        field("Version"),
        version,
        "the package's version is the binary's"
    );
    assert!(
        field("Depends").contains("libc6 (>= 2."),
        "{}",
        field("Depends")
    );

    let root = scratch.path().join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(dir)).expect("cannot make the dpkg database");
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").expect("cannot make the dpkg database");
    }
    dpkg_in(&root, &["--install", &deb.display().to_string()]);

    let installed = files_under(&root);
    for expected in [
        "usr/bin/gitvisor",
        "usr/bin/gitvisor-vmm",
        "lib/systemd/system/gitvisor.service",
        "etc/gitvisor/gitvisor.env",
        "usr/share/bash-completion/completions/gitvisor",
        "usr/share/zsh/vendor-completions/_gitvisor",
        "usr/share/fish/vendor_completions.d/gitvisor.fish",
        "usr/share/doc/gitvisor/README.md",
        "usr/share/doc/gitvisor/copyright",
        "usr/share/doc/gitvisor/docs/cli.md",
        "usr/share/doc/gitvisor/docs/vmm.md",
        "usr/share/doc/gitvisor/examples/quickstart/bridges.yaml",
    ] {
        assert!(
            installed.iter().any(|path| path == expected),
            "the package does not install {expected}; it installs:\n{}",
            installed.join("\n")
        );
    }

    // Both binaries: stripped (no symbol table, no debug info), and they run.
    for binary in ["usr/bin/gitvisor", "usr/bin/gitvisor-vmm"] {
        let sections = elf_sections(&root.join(binary));
        for section in [".symtab", ".debug_info", ".debug_line"] {
            assert!(
                !sections.contains(section),
                "{binary} is not stripped: it has {section}"
            );
        }
    }
    // Their debug info is in gitvisor-dbgsym (printed before the .deb), named by each
    // binary's build id, where a panic's backtrace finds its line tables.
    let dbgsym = built
        .stdout
        .lines()
        .find(|line| line.contains("gitvisor-dbgsym_"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the script prints no gitvisor-dbgsym package\n{built}"));
    dpkg_in(&root, &["--install", &dbgsym.display().to_string()]);
    for binary in ["gitvisor", "gitvisor-vmm"] {
        let notes = run_command(command(
            "readelf",
            &[
                "-n",
                &root.join("usr/bin").join(binary).display().to_string(),
            ],
        ))
        .expect_code(0)
        .stdout;
        let id = notes
            .lines()
            .find_map(|line| line.trim().strip_prefix("Build ID: "))
            .unwrap_or_else(|| panic!("{binary} has no build id:\n{notes}"));
        let debug = root.join(format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        ));
        assert!(
            elf_sections(&debug).contains(".debug_line"),
            "{} holds no line tables",
            debug.display()
        );
    }
    let installed_gitvisor = root.join("usr/bin/gitvisor");
    let said = run_command(command(&installed_gitvisor, &["--version"])).expect_code(0);
    assert_eq!(said.stdout.trim(), format!("gitvisor {version}"));
    let said = run_command(command(root.join("usr/bin/gitvisor-vmm"), &["--help"])).expect_code(0);
    assert!(said.stdout.contains("--kernel"), "{said}");

    // The completions are what the binary itself prints.
    let bash = run_command(command(gitvisor, &["completions", "bash"])).expect_code(0);
    let shipped =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/gitvisor"))
            .expect("the bash completion");
    assert_eq!(
        shipped, bash.stdout,
        "the bash completion is not gitvisor's own"
    );

    // The docs are the repository's.
    for doc in ["README.md", "docs/cli.md"] {
        let shipped = std::fs::read(root.join("usr/share/doc/gitvisor").join(doc)).expect("doc");
        let source = std::fs::read(workspace_root().join(doc)).expect("doc");
        assert!(
            shipped == source,
            "{doc} in the package differs from the repository's"
        );
    }

    // The env file is a conffile: an upgrade keeps the administrator's edits.
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).expect("dpkg status");
    assert!(
        status.contains("Conffiles:\n /etc/gitvisor/gitvisor.env "),
        "/etc/gitvisor/gitvisor.env is not a conffile:\n{status}"
    );

    // The unit, as installed, verifies against the installed binary (systemd-analyze
    // checks that ExecStart's program exists and is executable).
    if tool_missing("systemd-analyze") {
        gitvisor_e2e::skip(test, "systemd-analyze not installed; CI installs systemd");
    } else {
        let unit = std::fs::read_to_string(root.join("lib/systemd/system/gitvisor.service"))
            .expect("the installed unit");
        assert_eq!(
            unit,
            std::fs::read_to_string(workspace_root().join("contrib/systemd/gitvisor.service"))
                .expect("contrib/systemd/gitvisor.service"),
            "the package's unit is not contrib/systemd/gitvisor.service"
        );
        let copy = scratch.path().join("gitvisor.service");
        std::fs::write(
            &copy,
            unit.replace(
                "ExecStart=/usr/bin/gitvisor ",
                &format!("ExecStart={} ", installed_gitvisor.display()),
            ),
        )
        .expect("cannot write the unit copy");
        let verify = run_command(command(
            "systemd-analyze",
            &["verify", &copy.display().to_string()],
        ));
        assert_eq!(verify.code, Some(0), "{verify}");
        assert_eq!(
            format!("{}{}", verify.stdout, verify.stderr).trim(),
            "",
            "{verify}"
        );
    }

    // A purge removes every file the package installed, the conffile included.
    dpkg_in(&root, &["--purge", "gitvisor-dbgsym", "gitvisor"]);
    let left = files_under(&root);
    assert!(left.is_empty(), "the purge left:\n{}", left.join("\n"));
}
