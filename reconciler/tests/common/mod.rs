//! Helpers shared by the real-host integration tests.
//!
//! A skip is not a pass: [`skip`] prints `SKIPPED (<why>): <test>` past libtest's capture
//! locally, and fails the test in CI (`CI=true` or `CI=1`), where every tool is installed.

use std::future::Future;
use std::io::Write;

use nix::sched::{CloneFlags, unshare};

/// Run `body` on a fresh thread inside a fresh network namespace.
pub fn in_own_netns<F, Fut>(test: &'static str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        if let Err(errno) = unshare(CloneFlags::CLONE_NEWNET) {
            skip(
                test,
                &format!("needs root (CAP_SYS_ADMIN) to unshare a network namespace: {errno}"),
            );
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Says loudly that `test` did not run and why; in CI panics with that line instead.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED ({why}): {test}");
    let in_ci =
        std::env::var("CI").is_ok_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"));
    if in_ci {
        panic!("{line}\nCI=true: a skip is a failure in CI; install what is missing (.ci/deps/)");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`, and a skip
    // must not pass silently.
    let _ = writeln!(std::io::stderr(), "{line}");
}
