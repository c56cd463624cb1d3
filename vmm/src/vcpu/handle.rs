//! A vCPU's thread and the handle that stops it, the way Firecracker's `vstate/vcpu.rs`
//! does: a vCPU spends its life blocked in `KVM_RUN`, which only returns on a guest exit
//! or a signal, so stopping one takes a *kick*:
//!
//! 1. the handle sets the thread's stop flag, then sends it [`kick_signal`] (a real-time
//!    signal whose handler is installed once, without `SA_RESTART`);
//! 2. if the thread is inside `KVM_RUN`, the signal makes it return `EINTR`; if it is
//!    between two runs, the handler sets `immediate_exit` in the thread's `kvm_run`
//!    page, so the next `KVM_RUN` returns `EINTR` at once instead of entering the guest
//!    (without it, a kick landing just before `KVM_RUN` would be lost and the thread
//!    would sleep in the guest's `hlt` forever);
//! 3. the loop sees the flag and returns; the handle joins the thread.
//!
//! The handler finds the `kvm_run` page through a thread-local pointer the vCPU thread
//! sets before its first run: the signal is delivered to that thread, so the handler
//! writes only its own thread's page. Dropping a [`VcpuHandle`] kicks and joins too, so
//! a vCPU thread never outlives the [`crate::vm::Vm`] whose memory it runs in.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::exit::{ExitHandle, ExitReason};

/// Where a vCPU's port and MMIO exits go ([`crate::bus::Bus`], or a test's stand-in).
pub trait ExitHandler: Send + Sync + 'static {
    fn pio_read(&self, port: u16, data: &mut [u8]);
    fn pio_write(&self, port: u16, data: &[u8]);
    fn mmio_read(&self, address: u64, data: &mut [u8]);
    fn mmio_write(&self, address: u64, data: &[u8]);
}

/// The real-time signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` page, null on threads that run no vCPU.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick's signal handler: async-signal-safe (a thread-local read of a
/// const-initialised `Cell` and one volatile byte store).
extern "C" fn on_kick(_signal: libc::c_int, _info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if run.is_null() {
        return;
    }
    let immediate_exit = run
        .cast::<u8>()
        .wrapping_add(std::mem::offset_of!(kvm_run, immediate_exit));
    // SAFETY: `run` is this thread's `kvm_run` page, mapped by its `VcpuFd`, which the
    // thread owns until it clears the pointer (before the fd is dropped); the signal is
    // handled on this thread, so nothing else writes the byte concurrently.
    unsafe { immediate_exit.write_volatile(1) };
    fence(Ordering::SeqCst);
}

/// Installs [`on_kick`] for [`kick_signal`] (once per process).
fn install_kick_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(kick_signal(), on_kick).map_err(|error| error.errno())
        })
        .map_err(io::Error::from_raw_os_error)
}

/// A running vCPU thread.
pub struct VcpuHandle {
    id: u8,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Starts the thread `vcpu<id>` that runs `vcpu` until the VMM is asked to exit or the
    /// handle stops it.
    pub fn spawn<H: ExitHandler>(
        vcpu: VcpuFd,
        id: u8,
        handler: Arc<H>,
        exit: ExitHandle,
    ) -> io::Result<VcpuHandle> {
        install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || run(vcpu, id, &*handler, &exit, &flag))?;
        Ok(VcpuHandle {
            id,
            stop,
            thread: Some(thread),
        })
    }

    /// The vCPU's id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Asks the thread to leave `KVM_RUN` and return (see the module doc).
    pub fn kick(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = &self.thread {
            // A thread that already returned cannot take the signal; nothing to do then.
            let _ = thread.kill(kick_signal());
        }
    }

    /// Kicks the thread and waits for it to end; false if it panicked.
    pub fn stop(mut self) -> bool {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        self.stop.store(true, Ordering::SeqCst);
        let _ = thread.kill(kick_signal());
        thread.join().is_ok()
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// `KVM_SYSTEM_EVENT_SHUTDOWN` and `KVM_SYSTEM_EVENT_RESET`.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// Runs vCPU `id` until the VMM is asked to exit or `stop` is set; on the vCPU's thread.
fn run<H: ExitHandler + ?Sized>(
    mut vcpu: VcpuFd,
    id: u8,
    handler: &H,
    exit: &ExitHandle,
    stop: &AtomicBool,
) {
    KVM_RUN.with(|run| run.set(std::ptr::from_mut(vcpu.get_kvm_run())));
    while !exit.requested() && !stop.load(Ordering::SeqCst) {
        match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => handler.pio_read(port, data),
            Ok(VcpuExit::IoOut(port, data)) => handler.pio_write(port, data),
            Ok(VcpuExit::MmioRead(address, data)) => handler.mmio_read(address, data),
            Ok(VcpuExit::MmioWrite(address, data)) => handler.mmio_write(address, data),
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => exit.request(ExitReason::TripleFault),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                SYSTEM_EVENT_SHUTDOWN | SYSTEM_EVENT_RESET => {
                    exit.request(ExitReason::GuestSystemEvent { kind })
                }
                _ => {}
            },
            Ok(VcpuExit::Hlt) => exit.request(ExitReason::VcpuFailed {
                vcpu: id,
                message: "halted with interrupts that can never arrive".to_string(),
            }),
            Ok(other) => exit.request(ExitReason::VcpuFailed {
                vcpu: id,
                message: format!("unhandled exit {other:?}"),
            }),
            // A kick: the loop's condition decides. A kick that came for nothing (none
            // does today) must not leave every later run returning at once.
            Err(error) if error.errno() == libc::EINTR => {
                if !exit.requested() && !stop.load(Ordering::SeqCst) {
                    vcpu.set_kvm_immediate_exit(0);
                }
            }
            Err(error) if error.errno() == libc::EAGAIN => {}
            Err(error) => exit.request(ExitReason::VcpuFailed {
                vcpu: id,
                message: format!("KVM_RUN failed: {error}"),
            }),
        }
    }
    // The fd (and its kvm_run page) is dropped when this returns: forget the page first.
    KVM_RUN.with(|run| run.set(std::ptr::null_mut()));
}

#[cfg(test)]
mod tests;
