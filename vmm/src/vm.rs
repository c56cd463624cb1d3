//! One guest: built by [`Vm::new`] (nothing runs yet), run by [`Vm::run`] until
//! something ends it, its vCPU threads joined before `run` returns.
//!
//! [`Vm::new`] creates the KVM VM and its in-kernel interrupt controllers first (the
//! devices' irqfds and every vCPU need them) and maps guest memory; then two things
//! happen at once: this thread registers the memory with KVM and creates the PIT (the
//! two slow calls), while a `vm-build` thread builds the rest (`Parts`): devices, then
//! the boot structures (the DSDT announces the devices, the MADT and the MP table count
//! the vCPUs), then the vCPUs. Nothing in `Parts` needs the memory registered, since
//! guest memory is written through the host mapping and no vCPU runs before `run`.
//!
//! [`Vm::run`] starts the queue threads, then one thread per vCPU, then runs the event
//! loop on the calling thread; when the loop returns, every vCPU is kicked and joined.
//! The `Vm` owns the guest memory and drops it last (see its fields).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::boot::{self, BootEntry, BootSpec, MmioAnnouncement};
use crate::bus::{Bus, MmioSlot};
use crate::config::{Config, default_mac};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::ged::Ged;
use crate::devices::i8042::I8042;
use crate::devices::irq::IrqLine;
use crate::devices::serial::{self, ConsoleClients, ConsoleOutput, SerialDevice};
use crate::devices::virtio::block::{self, Block};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::{self, Net, TapError, open_tap};
use crate::devices::virtio::queue_worker::{QueueWorker, QueueWorkerError};
use crate::event_loop::{EventLoop, LoopContext};
use crate::exit::{ExitHandle, ExitReason};
use crate::layout::{GED_IRQ, I8042_IRQ, KVM_TSS_ADDRESS, SERIAL_IRQ, virtio_mmio_slot};
use crate::vcpu::VcpuHandle;
use crate::{memory, vcpu};

/// Errors building or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "cannot open /dev/kvm: {source}; load the kvm module and run as a user who can open /dev/kvm"
    )]
    OpenKvm {
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM cannot {operation}: {source}")]
    Kvm {
        operation: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    KernelCache(#[from] boot::kernel_cache::KernelCacheError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error("cannot create an eventfd for {what}: {source}")]
    EventFd {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the {what} {path}: {source}; check the path and its permissions")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Block(#[from] crate::devices::virtio::block::BlockError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("cannot set up the virtio queues of device {index}: {source:?}")]
    Queue {
        index: usize,
        source: virtio_queue::Error,
    },
    #[error("the socket {path} is in use by a running process; stop it or choose another path")]
    SocketInUse { path: PathBuf },
    #[error(
        "cannot listen on the socket {path}: {source}; check that its directory exists and that the path is under 108 bytes"
    )]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the thread that builds the VM's devices and vCPUs: {source}")]
    BuildThread {
        #[source]
        source: std::io::Error,
    },
    #[error("the thread that builds the VM's devices and vCPUs panicked")]
    BuildThreadPanicked,
    #[error(
        "cannot start the thread of vCPU {vcpu} (or install its kick signal handler): {source}"
    )]
    Thread {
        vcpu: u8,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    QueueWorker(#[from] QueueWorkerError),
    #[error("cannot start the queue thread {name}: {source}")]
    QueueThread {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the event loop: {0}")]
    EventLoop(String),
}

/// A network device's tap and its transport, for the event loop.
pub struct TapSource {
    pub fd: RawFd,
    /// Keeps the descriptor open while the event loop watches it.
    pub tap: File,
    pub transport: Arc<MmioTransport>,
}

/// A guest, built and ready to run.
pub struct Vm {
    // Fields drop in order: the vCPU threads (kicked and joined), then the vCPU fds not
    // started and the devices, then the VM, and the memory last, once nothing can reach
    // it any more (see `memory::register`).
    running: Vec<VcpuHandle>,
    parts: Parts,
    _vm: VmFd,
    memory: GuestMemoryMmap,
    cpus: u8,
    memory_mib: u64,
}

fn event(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::EventFd { what, source }
}

fn kvm_op(operation: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { operation, source }
}

/// Binds a unix socket at `path`, replacing a stale socket file nobody listens on.
pub fn listen(path: &Path) -> Result<UnixListener, VmError> {
    if UnixStream::connect(path).is_ok() {
        return Err(VmError::SocketInUse {
            path: path.to_path_buf(),
        });
    }
    if std::fs::symlink_metadata(path)
        .map(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()))
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| VmError::Listen {
        path: path.to_path_buf(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| VmError::Listen {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(listener)
}

impl Vm {
    /// Builds the guest described by `config`.
    pub fn new(config: &Config) -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(|source| VmError::OpenKvm { source })?;
        let vm = kvm.create_vm().map_err(kvm_op("create a VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(kvm_op("set the TSS address"))?;
        vm.create_irq_chip()
            .map_err(kvm_op("create the in-kernel interrupt controllers"))?;

        let memory = memory::create(config.memory_bytes())?;
        // The two slowest calls before the guest runs: handing the memory to KVM (it
        // waits for an SRCU grace period, about one jiffy: 4-8 ms here) and creating the
        // PIT. Nothing else built here needs either (guest memory is written through the
        // host mapping, and the guest runs only after `run`), so the rest is built on a
        // thread of its own meanwhile; this thread starts the slow calls at once.
        let parts = std::thread::scope(|scope| {
            let builder = std::thread::Builder::new()
                .name("vm-build".into())
                .spawn_scoped(scope, || Parts::build(&kvm, &vm, &memory, config))
                .map_err(|source| VmError::BuildThread { source })?;
            // SAFETY: `memory` is moved into the returned `Vm`, whose fields drop it
            // after the vCPU threads (joined), the vCPU fds and the VM fd.
            let registered = unsafe { memory::register(&vm, &memory) }
                .map_err(VmError::from)
                .and_then(|()| {
                    let pit = kvm_pit_config {
                        flags: KVM_PIT_SPEAKER_DUMMY,
                        ..Default::default()
                    };
                    vm.create_pit2(pit).map_err(kvm_op("create the PIT"))
                });
            let parts = builder.join().map_err(|_| VmError::BuildThreadPanicked)?;
            registered.and(parts)
        })?;
        Ok(Vm {
            running: Vec::new(),
            parts,
            _vm: vm,
            memory,
            cpus: config.cpus,
            memory_mib: config.memory_mib,
        })
    }

    /// Where the boot vCPU starts.
    pub fn boot(&self) -> BootEntry {
        self.parts.boot
    }

    /// The host address ranges of guest memory (for telling guest pages from the VMM's).
    pub fn guest_host_ranges(&self) -> Vec<(u64, u64)> {
        self.memory
            .iter()
            .filter_map(|region| {
                self.memory
                    .get_host_address(region.start_addr())
                    .ok()
                    .map(|host| (host as u64, region.len()))
            })
            .collect()
    }

    /// Starts the vCPUs and runs the event loop until the VM ends; returns why, once every
    /// vCPU thread was kicked and joined. The queue threads keep waiting on their
    /// eventfds until the process exits.
    pub fn run(&mut self) -> Result<ExitReason, VmError> {
        let started = Instant::now();
        let guest_ranges = self.guest_host_ranges();
        // Signals go to the event loop's signalfd: block them before any thread exists,
        // so the vCPU and queue threads inherit the mask.
        let mut event_loop = EventLoop::new().map_err(VmError::EventLoop)?;
        // The queue threads first: a vCPU may notify a queue as soon as it runs.
        for (name, worker) in self.parts.queue_workers.drain(..) {
            worker
                .spawn(name.clone())
                .map_err(|source| VmError::QueueThread { name, source })?;
        }
        for (id, fd) in self.parts.vcpus.drain(..).enumerate() {
            let id = id as u8;
            let handle = VcpuHandle::spawn(fd, id, self.parts.bus.clone(), self.parts.exit.clone())
                .map_err(|source| VmError::Thread { vcpu: id, source })?;
            self.running.push(handle);
        }
        let context = LoopContext {
            exit: self.parts.exit.clone(),
            serial: self.parts.serial.clone(),
            i8042: self.parts.i8042.clone(),
            ged: self.parts.ged.clone(),
            console_clients: self.parts.console_clients.clone(),
            started,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            guest_ranges,
        };
        let reason = event_loop
            .run(
                context,
                self.parts.api.take(),
                self.parts.console.take(),
                &self.parts.taps,
            )
            .map_err(VmError::EventLoop);
        self.stop_vcpus();
        reason
    }

    /// Kicks every vCPU thread out of `KVM_RUN` and joins it.
    fn stop_vcpus(&mut self) {
        for handle in &self.running {
            handle.kick();
        }
        for handle in self.running.drain(..) {
            handle.stop();
        }
    }
}

/// Everything a [`Vm`] holds but the VM itself and its memory: devices, boot structures
/// and vCPUs, built on a thread of their own while KVM registers the memory.
struct Parts {
    vcpus: Vec<VcpuFd>,
    bus: Arc<Bus>,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    ged: Arc<Ged>,
    taps: Vec<TapSource>,
    /// The queues processed off the vCPU threads, each with its thread's name: every
    /// disk's requests (`disk0-io`, in `--disk` order) and every NIC's transmissions
    /// (`net0-tx`, in `--net` order). A NIC's receptions are the event loop's.
    queue_workers: Vec<(String, QueueWorker)>,
    console_clients: ConsoleClients,
    api: Option<UnixListener>,
    console: Option<UnixListener>,
    exit: ExitHandle,
    boot: BootEntry,
}

impl Parts {
    fn build(
        kvm: &Kvm,
        vm: &VmFd,
        memory: &GuestMemoryMmap,
        config: &Config,
    ) -> Result<Parts, VmError> {
        let exit = ExitHandle::new().map_err(event("the exit event"))?;

        let line = |gsi: u32, what: &'static str| -> Result<IrqLine, VmError> {
            let irq = IrqLine::new().map_err(event(what))?;
            vm.register_irqfd(irq.event(), gsi)
                .map_err(kvm_op("register an interrupt line"))?;
            Ok(irq)
        };

        let log = match &config.serial_log {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|source| VmError::Open {
                        what: "serial log",
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let console_clients: ConsoleClients = Arc::new(Mutex::new(Vec::new()));
        let serial = Arc::new(Mutex::new(serial::serial(
            line(SERIAL_IRQ, "the serial port")?,
            ConsoleOutput::new(log, console_clients.clone(), config.serial_stdout),
        )));
        let i8042 = Arc::new(Mutex::new(I8042::new(
            line(I8042_IRQ, "the i8042")?,
            exit.clone(),
        )));
        let ged = Arc::new(Ged::new(line(GED_IRQ, "the power button (GED)")?));

        let mut virtio: Vec<MmioSlot> = Vec::new();
        let mut taps = Vec::new();
        let mut queue_workers = Vec::new();
        let mut announcements = Vec::new();
        for (index, disk) in config.disks.iter().enumerate() {
            let file = open_disk(&disk.path, disk.read_only)?;
            let id = disk.id.clone().unwrap_or_else(|| format!("disk{index}"));
            let block = Block::new(file, &disk.path.display().to_string(), disk.read_only, &id)?;
            let (base, irq) = virtio_mmio_slot(virtio.len());
            let transport = MmioTransport::new(
                Box::new(block),
                memory.clone(),
                line(irq, "a virtio device")?,
            )
            .map_err(|source| VmError::Queue { index, source })?;
            let transport = Arc::new(transport);
            queue_workers.push((
                format!("disk{index}-io"),
                QueueWorker::register(vm, base, block::REQUEST_QUEUE, transport.clone())?,
            ));
            virtio.push((base, transport));
            announcements.push(MmioAnnouncement { base, irq });
        }
        for net in &config.nets {
            let tap = open_tap(&net.tap)?;
            let watch = tap.try_clone().map_err(|source| VmError::Open {
                what: "tap",
                path: PathBuf::from(&net.tap),
                source,
            })?;
            let mac = net.mac.unwrap_or_else(|| default_mac(&net.tap));
            let (base, irq) = virtio_mmio_slot(virtio.len());
            let index = virtio.len();
            let transport = Arc::new(
                MmioTransport::new(
                    Box::new(Net::new(tap, mac)),
                    memory.clone(),
                    line(irq, "a virtio device")?,
                )
                .map_err(|source| VmError::Queue { index, source })?,
            );
            // Frames the guest sends are written to the tap on a thread of their own, so
            // the sending vCPU goes back to the guest at once.
            queue_workers.push((
                format!("net{}-tx", taps.len()),
                QueueWorker::register(vm, base, net::TX_QUEUE as u32, transport.clone())?,
            ));
            taps.push(TapSource {
                fd: watch.as_raw_fd(),
                tap: watch,
                transport: transport.clone(),
            });
            virtio.push((base, transport));
            announcements.push(MmioAnnouncement { base, irq });
        }

        let cmdline = config.kernel_cmdline();
        let kernel = match &config.kernel_cache {
            Some(cache) => boot::kernel_cache::vmlinux(&config.kernel, cache)?,
            None => None,
        };
        let boot = boot::load(
            memory,
            &BootSpec {
                kernel: kernel.as_deref().unwrap_or(&config.kernel),
                initrd: config.initrd.as_deref(),
                cmdline: &cmdline,
                memory: config.memory_bytes(),
                cpus: config.cpus,
                devices: &announcements,
                mmio_cmdline: config.mmio_cmdline,
            },
        )?;

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_op("report the supported CPUID"))?;
        let mut vcpus = Vec::new();
        for id in 0..config.cpus {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_op("create a vCPU"))?;
            let entry = (id == 0).then_some(boot.entry);
            vcpu::configure(&fd, &supported, id, config.cpus, entry)?;
            vcpus.push(fd);
        }

        let api = config.api_socket.as_deref().map(listen).transpose()?;
        let console = config.serial_socket.as_deref().map(listen).transpose()?;
        let bus = Arc::new(Bus::new(
            serial.clone(),
            i8042.clone(),
            AcpiPm::new(exit.clone()),
            ged.clone(),
            virtio,
        ));
        Ok(Parts {
            vcpus,
            bus,
            serial,
            i8042,
            ged,
            taps,
            queue_workers,
            console_clients,
            api,
            console,
            exit,
            boot,
        })
    }
}

fn open_disk(path: &Path, read_only: bool) -> Result<File, VmError> {
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| VmError::Open {
            what: "disk",
            path: path.to_path_buf(),
            source,
        })
}
