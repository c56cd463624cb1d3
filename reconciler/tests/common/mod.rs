//! Helpers shared by the real-host integration tests.

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
            // Straight to the process's stderr: the test harness captures `eprintln!`, and a
            // skip must not pass silently.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: needs root (CAP_SYS_ADMIN) to unshare a network namespace: {errno} ***\n"
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
