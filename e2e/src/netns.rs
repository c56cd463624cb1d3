//! A network namespace per test, deleted when the test ends, passes or panics; the
//! namespaces of a test process that was itself killed are removed the next time the
//! suite starts one.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::process::run_command;
use crate::report::loud;

/// Prefix of every namespace this suite creates.
const NS_PREFIX: &str = "gv-e2e-";

/// A network namespace owned by one test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `gv-e2e-<test>-<pid>` (with a counter when one test makes several).
    /// Panics when it cannot: the caller has checked for root already.
    pub fn create(test: &str) -> Netns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        remove_orphaned_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let test: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let name = format!("{NS_PREFIX}{test}-{n}-{}", std::process::id());
        let mut command = Command::new("ip");
        command.args(["netns", "add", &name]);
        let outcome = run_command(command);
        if outcome.code != Some(0) {
            panic!(
                "running as root but cannot create network namespace {name}; \
                 this machine cannot run the e2e suite\n{outcome}"
            );
        }
        Netns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if thread::panicking() {
            let mut command = Command::new("ip");
            command.args(["-n", &self.name, "-d", "addr", "show"]);
            let dump = run_command(command);
            eprintln!(
                "--- links in {} when the test failed ---\n{}",
                self.name,
                dump.stdout.trim_end()
            );
        }
        let mut command = Command::new("ip");
        command.args(["netns", "del", &self.name]);
        let outcome = run_command(command);
        if outcome.code != Some(0) {
            eprintln!(
                "warning: could not delete namespace {}\n{outcome}",
                self.name
            );
        }
    }
}

/// Deletes `gv-e2e-…-<pid>` namespaces whose creating process is gone (a test run that
/// was itself killed never ran its `Drop`s).
fn remove_orphaned_namespaces() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let mut command = Command::new("ip");
        command.args(["netns", "list"]);
        let listing = run_command(command);
        for name in listing
            .stdout
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(NS_PREFIX))
        {
            let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                loud(&format!(
                    "removing orphaned namespace {name} (process {pid} is gone)"
                ));
                let mut command = Command::new("ip");
                command.args(["netns", "del", name]);
                let _ = run_command(command);
            }
        }
    });
}
