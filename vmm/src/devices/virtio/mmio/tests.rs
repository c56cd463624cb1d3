//! The locking the module doc promises: while a queue is processed (a disk request's I/O
//! stands in here as a device that blocks until released), a vCPU still reads and
//! acknowledges the interrupt status and reads the device status.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use super::*;
use crate::devices::virtio::testing::Driver;

/// A device whose queue processing waits for a message: the "I/O" in flight.
struct Slow {
    started: Sender<()>,
    release: Mutex<Receiver<()>>,
}

impl VirtioDevice for Slow {
    fn device_type(&self) -> u32 {
        2
    }
    fn features(&self) -> u64 {
        F_VERSION_1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn process_queue(&mut self, _: usize, _: &mut [Queue], _: &GuestMemoryMmap) -> bool {
        let _ = self.started.send(());
        let _ = self
            .release
            .lock()
            .expect("release")
            .recv_timeout(Duration::from_secs(30));
        true
    }
}

#[test]
fn a_vcpu_reads_and_acknowledges_the_interrupt_while_a_queue_is_processed() {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let device = Slow {
        started: started_tx,
        release: Mutex::new(release_rx),
    };
    let mut driver = Driver::new(Box::new(device));
    let status = driver.initialize(F_VERSION_1, 1, 16);
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    let transport = driver.transport.clone();
    // A used buffer from an earlier request is pending.
    transport.interrupt.used_buffers();

    // The queue thread: processing blocks inside the device.
    let worker = {
        let transport = transport.clone();
        std::thread::spawn(move || transport.notify(0))
    };
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the queue is being processed");

    // The vCPU's accesses, on a thread of their own so a lock held across the "I/O"
    // fails the test instead of hanging it.
    let (done, finished) = mpsc::channel();
    {
        let transport = transport.clone();
        std::thread::spawn(move || {
            let read = |offset| {
                let mut data = [0u8; 4];
                transport.read(offset, &mut data);
                u32::from_le_bytes(data)
            };
            let pending = read(REG_INTERRUPT_STATUS);
            transport.write(REG_INTERRUPT_ACK, &pending.to_le_bytes());
            let after = read(REG_INTERRUPT_STATUS);
            let status = read(REG_STATUS);
            let _ = done.send((pending, after, status));
        });
    }
    let (pending, after, status) = finished
        .recv_timeout(Duration::from_secs(5))
        .expect("the vCPU waited for the queue's processing to finish");
    assert_eq!(pending, INTERRUPT_VRING);
    assert_eq!(after, 0, "acknowledged");
    assert_ne!(status & STATUS_DRIVER_OK, 0);

    release.send(()).expect("release");
    worker.join().expect("worker");
    assert_eq!(
        transport.interrupt.read(),
        INTERRUPT_VRING,
        "the request's completion"
    );
}
