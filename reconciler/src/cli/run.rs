//! `gitvisor run`: check the flags against the source, claim the state dir for as long
//! as the controller runs ([`ControllerClaim`]: one controller per state dir, and no
//! `apply` beside it), connect this host's drivers once (they are kept for every
//! reconcile), and hand over to the controller ([`crate::daemon::run`]) until SIGTERM.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{GlobalArgs, args::RunArgs};
use crate::daemon::{self, ControllerOptions, Origin};
use crate::reconcile::Reconciler;
use crate::source::{GitSource, Location, Verification};
use crate::state::ControllerClaim;

/// Worker threads of the controller's runtime: reconciles run one at a time and drivers
/// wait on the kernel and on child processes, so two are plenty and keep memory low.
const WORKER_THREADS: usize = 2;
/// Threads for blocking work (loading manifests, the store, file reads and writes, an
/// image import). Each thread that allocates gets a glibc malloc arena of its own,
/// which keeps what it freed: at 8, a thousand bridges applied left the idle controller
/// holding ~30 MiB of freed memory spread over the arenas. Four still let a long import
/// or image collection run beside the store and the drivers' file work without queueing
/// them on a small host.
const BLOCKING_THREADS: usize = 4;

pub fn run(global: &GlobalArgs, args: &RunArgs) -> Result<ExitCode> {
    // Before anything is claimed or started: this may execute the program again.
    super::arenas::limit_malloc_arenas();
    let origin = origin(global, args)?;
    // Held until the controller exits: `apply` on this state dir is refused meanwhile
    // (the store's own lock is held only while a reconcile writes).
    let _claim = ControllerClaim::claim(&global.state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Dropped without waiting more than a moment for a step abandoned in a blocking
    // thread (see `super::Runtime`).
    let runtime = super::Runtime(Some(runtime));
    runtime.block_on(async {
        let reconciler =
            Reconciler::connect(super::options(global, usize::from(args.concurrency)))?;
        daemon::run(
            reconciler,
            ControllerOptions {
                origin,
                reference: args.git_ref.clone(),
                poll: args.poll,
                resync: args.resync,
                metrics_listen: args.metrics_listen,
                image_gc_after: args.image_gc_after.0,
            },
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The source `--source`, `--ref`, `--path` and the verification flags describe.
fn origin(global: &GlobalArgs, args: &RunArgs) -> Result<Origin> {
    let verification = match (&args.allowed_signers, &args.gpg_home) {
        (Some(file), _) => Some(Verification::Ssh {
            allowed_signers: std::path::absolute(file)
                .with_context(|| format!("--allowed-signers {}", file.display()))?,
        }),
        (None, Some(home)) => Some(Verification::Gpg {
            home: std::path::absolute(home)
                .with_context(|| format!("--gpg-home {}", home.display()))?,
        }),
        (None, None) => None,
    };
    match Location::parse(&args.source) {
        Location::Git(url) => Ok(Origin::Git(GitSource::new(
            &url,
            args.git_ref.as_deref(),
            args.path.as_deref(),
            &global.state_dir,
            verification,
        )?)),
        Location::Dir(dir) => {
            if args.git_ref.is_some() {
                bail!(
                    "--ref applies to a git source; {} is a directory (give a git URL such as file://{} to follow a branch)",
                    dir.display(),
                    dir.display()
                );
            }
            if verification.is_some() {
                bail!(
                    "signature verification applies to a git source; {} is a directory",
                    dir.display()
                );
            }
            let dir = match &args.path {
                Some(path) => dir.join(path),
                None => dir,
            };
            let dir = std::fs::canonicalize(&dir).with_context(|| {
                format!(
                    "--source {}: no such directory (create it, or give a git URL)",
                    dir.display()
                )
            })?;
            if !dir.is_dir() {
                bail!("--source {} is not a directory", dir.display());
            }
            Ok(Origin::Dir(dir))
        }
    }
}
