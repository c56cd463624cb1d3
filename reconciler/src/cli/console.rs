//! `gitvisor console NAME`: the VM's serial console, interactively.
//!
//! It connects to the serial socket in the VM's run dir (`<run dir>/vm/NAME/serial.sock`,
//! QEMU's chardev server; one client at a time) and copies the terminal to the guest and
//! the guest to the terminal. A terminal is put in raw mode (restored on exit, whatever
//! the exit), so keys such as Ctrl-C reach the guest; Ctrl-] (0x1d, as in telnet and
//! `virsh console`) detaches. Everything the guest printed before attaching is in the
//! serial log next to the socket.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::GlobalArgs;
use crate::drivers::registry;
use crate::model::Name;

/// The byte that detaches: Ctrl-].
pub const DETACH: u8 = 0x1d;

/// Runs the console on its own runtime, dropped without waiting for the read of the
/// terminal still blocked in a thread after a detach.
pub fn run(global: &GlobalArgs, name: &Name) -> Result<ExitCode> {
    let runtime = super::runtime()?;
    let result = runtime.block_on(console(global, name));
    runtime.shutdown_background();
    result
}

async fn console(global: &GlobalArgs, name: &Name) -> Result<ExitCode> {
    // The kind whose resources have a serial console (VMs).
    let Some(find) = registry()
        .iter()
        .find_map(|registration| registration.console)
    else {
        bail!("no kind of this build has a serial console");
    };
    let console = find(&super::host_settings(global), name).map_err(anyhow::Error::msg)?;
    let stream = UnixStream::connect(&console.socket)
        .await
        .with_context(|| {
            format!(
                "cannot attach to {}'s console at {} ({})",
                console.owner,
                console.socket.display(),
                console.unreachable_hint
            )
        })?;
    let terminal = std::io::stdin().is_terminal();
    let _raw = if terminal {
        Some(RawMode::enable()?)
    } else {
        None
    };
    if terminal {
        super::output::stderr(&format!(
            "Connected to {}'s serial console; detach with Ctrl-]\r\n",
            console.owner
        ));
    }
    let (mut from_guest, mut to_guest) = stream.into_split();
    let output = async {
        let mut stdout = tokio::io::stdout();
        let mut buffer = [0u8; 4096];
        loop {
            let read = from_guest.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<_, std::io::Error>(());
            }
            stdout.write_all(&buffer[..read]).await?;
            stdout.flush().await?;
        }
    };
    let input = async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 1024];
        loop {
            let read = stdin.read(&mut buffer).await?;
            if read == 0 {
                // Piped input is used up: keep printing the guest's output.
                return Ok::<_, std::io::Error>(false);
            }
            let chunk = &buffer[..read];
            match chunk.iter().position(|b| *b == DETACH) {
                Some(at) => {
                    to_guest.write_all(&chunk[..at]).await?;
                    return Ok(true);
                }
                None => to_guest.write_all(chunk).await?,
            }
        }
    };
    tokio::pin!(output, input);
    let detached = tokio::select! {
        closed = &mut output => {
            closed.context("reading the guest's console")?;
            false
        }
        detached = &mut input => detached.context("sending to the guest's console")?,
    };
    if !detached {
        output.await.context("reading the guest's console")?;
    }
    if terminal {
        super::output::stderr("\r\nDetached.\r\n");
    }
    Ok(ExitCode::SUCCESS)
}

/// The terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal refuses its old mode back.
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
