//! The net device driven by a simulated driver, against a fake wire that behaves like a
//! non-blocking tap: one frame per read/write, `WouldBlock` when empty.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::virtio::STATUS_DRIVER_OK;
use crate::devices::virtio::mmio::REG_CONFIG;
use crate::devices::virtio::testing::Driver;

#[derive(Clone, Default)]
struct Wire {
    to_guest: Arc<Mutex<VecDeque<Vec<u8>>>>,
    from_guest: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.to_guest.lock().expect("lock").pop_front() {
            Some(frame) => {
                buf[..frame.len()].copy_from_slice(&frame);
                Ok(frame.len())
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.from_guest.lock().expect("lock").push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn driver() -> (Driver, Wire) {
    let wire = Wire::default();
    let mut driver = Driver::new(Box::new(Net::new(wire.clone(), MAC)));
    let status = driver.initialize(F_VERSION_1 | F_MAC, 2, 16);
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    (driver, wire)
}

#[test]
fn the_mac_address_is_in_the_config_space() {
    let (driver, _) = driver();
    let mut mac = [0u8; 6];
    driver.transport.read(REG_CONFIG, &mut mac);
    assert_eq!(mac, MAC);
}

#[test]
fn a_transmitted_frame_reaches_the_wire_without_the_virtio_header() {
    let (mut driver, wire) = driver();
    let header = driver.buffer(&[0; HEADER_LEN]);
    let frame = driver.buffer(b"\xff\xff\xff\xff\xff\xff\x52\x54\x00\x12\x34\x56\x88\xb5hello");
    let head = driver.submit(
        TX_QUEUE,
        &[(header, HEADER_LEN as u32, false), (frame, 19, false)],
    );
    driver.notify(TX_QUEUE);
    assert_eq!(driver.used(TX_QUEUE), vec![(u32::from(head), 0)]);
    assert!(driver.interrupted());
    let sent = wire.from_guest.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0][14..], b"hello");
}

#[test]
fn a_frame_waits_on_the_wire_until_the_guest_gives_a_buffer() {
    let (mut driver, wire) = driver();
    wire.to_guest
        .lock()
        .expect("lock")
        .push_back(b"frame-from-the-bridge".to_vec());
    driver.transport.process_host();
    assert!(driver.used(RX_QUEUE).is_empty(), "no buffer yet");
    assert_eq!(wire.to_guest.lock().expect("lock").len(), 1, "still queued");

    let buffer = driver.alloc(2048);
    let head = driver.submit(RX_QUEUE, &[(buffer, 2048, true)]);
    driver.notify(RX_QUEUE);
    let used = driver.used(RX_QUEUE);
    assert_eq!(used, vec![(u32::from(head), (HEADER_LEN + 21) as u32)]);
    assert!(driver.interrupted());
    let bytes = driver.bytes(buffer, HEADER_LEN + 21);
    assert_eq!(&bytes[..HEADER_LEN], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&bytes[HEADER_LEN..], b"frame-from-the-bridge");

    // With a buffer posted and nothing on the wire, the buffer stays available.
    let spare = driver.alloc(2048);
    driver.submit(RX_QUEUE, &[(spare, 2048, true)]);
    driver.transport.process_host();
    assert!(driver.used(RX_QUEUE).is_empty());
    wire.to_guest
        .lock()
        .expect("lock")
        .push_back(b"second".to_vec());
    driver.transport.process_host();
    assert_eq!(driver.used(RX_QUEUE).len(), 1);
}
