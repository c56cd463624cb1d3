//! SIGTERM cancels the run's token instead of killing the process. Its own test binary:
//! the handler it installs stays for the life of the process.

use gitvisor::execute::cancel_on_shutdown_signals;

#[tokio::test]
async fn sigterm_cancels_the_run() {
    let token = cancel_on_shutdown_signals().expect("handlers install");
    assert!(!token.is_cancelled());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    // Resolves only when the signal was caught and turned into a cancel; were it not
    // caught, the process would have died.
    token.cancelled().await;
    assert!(token.is_cancelled());
}
