//! The bad-input corpus: every directory under `tests/corpus/` is one case, a set of
//! manifests and `expected.txt`, the exact diagnostics `gitvisor validate` prints for it
//! (`file:line:col: field: message`, file names relative to the case). An empty
//! `expected.txt` means the case must load. A case's optional `setup` file makes what git
//! cannot hold, one per line:
//!
//! - `host NAME`: load for host NAME (default `host1`);
//! - `fifo FILE`: a named pipe;
//! - `symlink FILE TARGET`: a symbolic link;
//! - `sized FILE BYTES`: a file of BYTES bytes of YAML comments.
//!
//! Each case runs on a copy in a temporary directory. `GITVISOR_BLESS=1` rewrites the
//! expected files from what the loader prints (review the diff before committing).

use std::path::{Path, PathBuf};

use gitvisor::load::load_revision;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Applies `setup` in `dir` and returns the host to load for.
fn set_up(dir: &Path) -> String {
    let mut host = "host1".to_owned();
    let Ok(setup) = std::fs::read_to_string(dir.join("setup")) else {
        return host;
    };
    for line in setup.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["host", name] => host = (*name).to_owned(),
            ["fifo", file] => nix::unistd::mkfifo(
                &dir.join(file),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap(),
            ["symlink", file, target] => {
                std::os::unix::fs::symlink(target, dir.join(file)).unwrap()
            }
            ["sized", file, bytes] => {
                let bytes: usize = bytes.parse().unwrap();
                let line = format!("# {}\n", "x".repeat(77));
                let text = line.repeat(bytes / line.len() + 1);
                std::fs::write(dir.join(file), &text[..bytes]).unwrap();
            }
            _ => panic!("{}: unknown setup line {line:?}", dir.display()),
        }
    }
    host
}

/// What the loader reports for the case in `dir`, one line per diagnostic.
fn run_case(case: &Path) -> String {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("case");
    copy_dir(case, &dir);
    let _ = std::fs::remove_file(dir.join("expected.txt"));
    let host = set_up(&dir);
    let _ = std::fs::remove_file(dir.join("setup"));
    let canonical = std::fs::canonicalize(&dir).unwrap();
    match load_revision(&dir, &host) {
        Ok(_) => String::new(),
        Err(errors) => errors
            .diagnostics
            .iter()
            .map(|d| {
                let line = d.to_string();
                let line = line.replace(&format!("{}/", canonical.display()), "");
                let line = line.replace(&format!("{}/", dir.display()), "");
                line.replace(&canonical.display().to_string(), "CASE")
                    .replace(&dir.display().to_string(), "CASE")
                    + "\n"
            })
            .collect(),
    }
}

#[test]
fn every_case_reports_exactly_its_expected_diagnostics() {
    let bless = std::env::var_os("GITVISOR_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let actual = run_case(case);
        let expected_path = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!("{} has no expected.txt", case.display());
        });
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_fifo_never_blocks_the_loader() {
    // The corpus case covers the message; this covers that a writer-less FIFO is not
    // opened for a blocking read (the test would hang instead of failing otherwise).
    let dir = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("x.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let errors = load_revision(&dir.path().join("x.yaml"), "h").unwrap_err();
    assert!(errors.diagnostics[0].message.contains("FIFO"), "{errors}");
}
