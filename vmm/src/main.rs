//! `gitvisor-vmm`: parse the command line, lock the pid file, detach if asked, build the
//! VM, report ready, run it, clean up. Everything else is in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use gitvisor_vmm::config::Config;
use gitvisor_vmm::daemon::{self, PidFile, Readiness, Role};
use gitvisor_vmm::host_memory::HostMemory;
use gitvisor_vmm::vm::Vm;

/// Appends a line to the `--log-file`, if any (and to stderr in the foreground).
struct Log {
    path: Option<PathBuf>,
}

impl Log {
    fn line(&self, message: &str) {
        let line = format!("gitvisor-vmm[{}]: {message}\n", std::process::id());
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(path) = &self.path
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Makes a path absolute before a daemon changes to `/`.
fn absolute(path: &mut PathBuf) {
    if let Ok(absolute) = std::path::absolute(&*path) {
        *path = absolute;
    }
}

fn absolute_paths(config: &mut Config) {
    absolute(&mut config.kernel);
    for path in [
        &mut config.initrd,
        &mut config.kernel_cache,
        &mut config.api_socket,
        &mut config.serial_socket,
        &mut config.serial_log,
        &mut config.pid_file,
        &mut config.log_file,
    ]
    .into_iter()
    .flatten()
    {
        absolute(path);
    }
    for disk in &mut config.disks {
        absolute(&mut disk.path);
    }
}

fn remove_socket(path: Option<&Path>) {
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

fn main() -> ExitCode {
    let mut config = Config::parse();
    absolute_paths(&mut config);
    let log = Log {
        path: config.log_file.clone(),
    };
    if let Err(message) = config.validate() {
        log.line(&format!("error: {message}"));
        return ExitCode::from(2);
    }
    // Before KVM is opened or anything is mapped: a guest the host cannot back is refused
    // as a usage error, in the foreground, so the caller reads why.
    if !config.overcommit {
        match HostMemory::read() {
            Ok(host) => {
                if let Some(message) = host.refuses(config.memory_bytes()) {
                    log.line(&format!("error: {message}"));
                    return ExitCode::from(2);
                }
            }
            Err(message) => log.line(&format!(
                "warning: {message}; the guest memory is not checked against the host's"
            )),
        }
    }
    let mut readiness = if config.daemonize {
        // SAFETY: no thread has been started yet: the arguments were parsed and the host's
        // memory read on this thread only; the VM (and its threads) is built after this.
        match unsafe { daemon::daemonize() } {
            Ok(Role::Parent(code)) => return ExitCode::from(code as u8),
            Ok(Role::Child(readiness)) => readiness,
            Err(error) => {
                log.line(&format!("error: {error}"));
                return ExitCode::from(1);
            }
        }
    } else {
        Readiness::foreground()
    };
    // Locked after the fork: the lock belongs to the process that runs the VM (a parent
    // exiting with it would release it). A daemon's error reaches the parent's stderr.
    let mut pid_file = match config.pid_file.as_deref().map(PidFile::lock).transpose() {
        Ok(pid_file) => pid_file,
        Err(error) => {
            let message = error.to_string();
            log.line(&format!("error: {message}"));
            readiness.failed(&message);
            return ExitCode::from(1);
        }
    };

    let mut vm = match Vm::new(&config) {
        Ok(vm) => vm,
        Err(error) => {
            let message = error.to_string();
            log.line(&format!("error: {message}"));
            readiness.failed(&message);
            if let Some(pid_file) = &pid_file {
                pid_file.remove();
            }
            return ExitCode::from(1);
        }
    };
    if let Some(pid_file) = &mut pid_file
        && let Err(error) = pid_file.write_pid(std::process::id())
    {
        let message = error.to_string();
        log.line(&format!("error: {message}"));
        readiness.failed(&message);
        return ExitCode::from(1);
    }
    let boot = vm.boot();
    log.line(&format!(
        "started: {:?} kernel, entry {:#x}, {} vCPUs, {} MiB",
        boot.format, boot.entry, config.cpus, config.memory_mib
    ));
    readiness.ready();

    let result = vm.run();
    remove_socket(config.api_socket.as_deref());
    remove_socket(config.serial_socket.as_deref());
    if let Some(pid_file) = &pid_file {
        pid_file.remove();
    }
    match result {
        Ok(reason) => {
            log.line(&format!("exiting: {reason}"));
            // The vCPU threads are joined; the queue threads wait on their eventfds until
            // the process ends, so end it rather than returning from main.
            std::process::exit(reason.exit_code())
        }
        Err(error) => {
            log.line(&format!("error: {error}"));
            std::process::exit(1)
        }
    }
}
