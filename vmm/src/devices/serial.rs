//! COM1: vm-superio's 16550 UART, whose output goes to the console log file, to every
//! client attached to the console socket and, with `--serial-stdout`, to stdout. Input
//! comes from the console socket clients (the event loop feeds it).
//!
//! A slow console client never blocks the guest: its socket is non-blocking and what it
//! cannot take is dropped for that client only; a client whose socket fails is dropped.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};

use vm_superio::Serial;
use vm_superio::serial::NoEvents;

use super::irq::IrqLine;

/// The console's attached clients, shared with the event loop that accepts them.
pub type ConsoleClients = Arc<Mutex<Vec<UnixStream>>>;

/// Where the guest's serial output goes.
pub struct ConsoleOutput {
    log: Option<File>,
    clients: ConsoleClients,
    stdout: bool,
}

impl ConsoleOutput {
    pub fn new(log: Option<File>, clients: ConsoleClients, stdout: bool) -> Self {
        ConsoleOutput {
            log,
            clients,
            stdout,
        }
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(log) = &mut self.log {
            // The guest must not stall on a full disk; the log loses these bytes.
            let _ = log.write_all(buf);
        }
        if self.stdout {
            let mut out = io::stdout().lock();
            let _ = out.write_all(buf).and_then(|()| out.flush());
        }
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain_mut(|client| send_some(client, buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what a non-blocking client takes now; false when the client is gone.
fn send_some(client: &mut UnixStream, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match client.write(buf) {
            Ok(0) => return false,
            Ok(written) => buf = &buf[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// The guest's COM1.
pub type SerialDevice = Serial<IrqLine, NoEvents, ConsoleOutput>;

/// COM1's I/O ports.
pub const COM1_BASE: u16 = 0x3f8;
/// A 16550 has eight registers.
pub const COM1_LEN: u16 = 8;

/// A UART writing to `output` and raising `irq`.
pub fn serial(irq: IrqLine, output: ConsoleOutput) -> SerialDevice {
    Serial::new(irq, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn output_reaches_the_log_and_attached_clients_and_gone_clients_are_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("serial.log");
        let log = File::create(&log_path).expect("log");
        let (mut reader, writer) = UnixStream::pair().expect("pair");
        writer.set_nonblocking(true).expect("nonblocking");
        let (gone, gone_writer) = UnixStream::pair().expect("pair");
        drop(gone);
        let clients: ConsoleClients = Arc::new(Mutex::new(vec![writer, gone_writer]));
        let mut uart = serial(
            IrqLine::new().expect("eventfd"),
            ConsoleOutput::new(Some(log), clients.clone(), false),
        );
        for byte in b"hi\n" {
            uart.write(0, *byte).expect("THR write");
        }
        assert_eq!(std::fs::read(&log_path).expect("log"), b"hi\n");
        let mut got = [0u8; 3];
        reader.read_exact(&mut got).expect("client");
        assert_eq!(&got, b"hi\n");
        assert_eq!(clients.lock().expect("lock").len(), 1);
    }
}
