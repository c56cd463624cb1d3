//! Kick and join against the host's real KVM, with guests that never exit on their own:
//! `jmp $` (spins in guest mode) and `cli; hlt` (sleeps inside KVM's in-kernel LAPIC, as
//! an idle Linux vCPU does). Skipped where /dev/kvm cannot be opened.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const CODE: u64 = 0x1000;

/// Counts the exits it is handed; the guests here make none.
#[derive(Default)]
struct Counting(AtomicUsize);

impl ExitHandler for Counting {
    fn pio_read(&self, _: u16, _: &mut [u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn pio_write(&self, _: u16, _: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn mmio_read(&self, _: u64, _: &mut [u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn mmio_write(&self, _: u64, _: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A VM with 64 KiB of memory holding `code` at [`CODE`], and one real-mode vCPU there.
/// `None` where KVM is not available.
fn guest(code: &[u8]) -> Option<(VmFd, GuestMemoryMmap, VcpuFd)> {
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(error) => {
            eprintln!("SKIP: cannot open /dev/kvm: {error}");
            return None;
        }
    };
    let vm = kvm.create_vm().expect("create a VM");
    vm.create_irq_chip().expect("in-kernel irqchip");
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("guest memory");
    memory
        .write_slice(code, GuestAddress(CODE))
        .expect("write the code");
    // SAFETY: `memory` is returned with `vm` and the vCPU, and every test drops (or
    // joins) the vCPU and `vm` before it.
    unsafe { crate::memory::register(&vm, &memory) }.expect("register memory");
    let vcpu = vm.create_vcpu(0).expect("create a vCPU");
    let mut sregs = vcpu.get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("set sregs");
    let mut regs = vcpu.get_regs().expect("regs");
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).expect("set regs");
    Some((vm, memory, vcpu))
}

/// Stops `handle` on another thread and waits at most 10 s for it: a kick that does not
/// work fails the test instead of hanging it.
fn stop_within_deadline(handle: VcpuHandle) -> Duration {
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = done.send(handle.stop());
    });
    let clean = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the vCPU thread was not stopped within 10 s of its kick");
    assert!(clean, "the vCPU thread panicked");
    started.elapsed()
}

fn kicked_and_joined(code: &[u8], what: &str) {
    let Some((_vm, _memory, vcpu)) = guest(code) else {
        return;
    };
    let exit = ExitHandle::new().expect("eventfd");
    let handler = Arc::new(Counting::default());
    let handle = VcpuHandle::spawn(vcpu, 0, handler.clone(), exit.clone()).expect("spawn");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        handle.thread.as_ref().is_some_and(|t| !t.is_finished()),
        "the {what} guest should still be running"
    );
    let took = stop_within_deadline(handle);
    eprintln!("{what}: kicked and joined in {took:?}");
    assert_eq!(
        handler.0.load(Ordering::SeqCst),
        0,
        "the guest made no exits"
    );
    assert!(!exit.requested(), "a kick is not a reason to exit the VMM");
}

#[test]
fn a_vcpu_spinning_in_guest_mode_is_kicked_and_joined() {
    // jmp $
    kicked_and_joined(&[0xeb, 0xfe], "spinning");
}

#[test]
fn a_vcpu_halted_in_the_kernel_is_kicked_and_joined() {
    // cli; hlt; jmp $-1 (back to the hlt)
    kicked_and_joined(&[0xfa, 0xf4, 0xeb, 0xfd], "halted");
}

/// The window a signal alone would lose: the kick lands after the loop checked its flag
/// and before `KVM_RUN`. The handler's `immediate_exit` makes that run return at once.
#[test]
fn a_kick_before_kvm_run_makes_the_next_run_return_at_once() {
    let Some((_vm, _memory, mut vcpu)) = guest(&[0xeb, 0xfe]) else {
        return;
    };
    install_kick_handler().expect("handler");
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        KVM_RUN.with(|run| run.set(std::ptr::from_mut(vcpu.get_kvm_run())));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        // SAFETY: a valid signal number, sent to this very (live) thread.
        let sent = unsafe { libc::pthread_kill(me, kick_signal()) };
        let errno = vcpu.run().err().map(|error| error.errno());
        KVM_RUN.with(|run| run.set(std::ptr::null_mut()));
        let _ = done.send((sent, errno));
    });
    let (sent, errno) = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("KVM_RUN entered the guest although a kick was pending");
    assert_eq!(sent, 0);
    assert_eq!(errno, Some(libc::EINTR));
}
