//! The block device driven through the MMIO transport by a simulated driver, against a
//! real file.

use std::fs::{File, OpenOptions};
use std::io::Write;

use super::*;
use crate::devices::virtio::mmio::{REG_CONFIG, REG_DEVICE_ID};
use crate::devices::virtio::testing::Driver;
use crate::devices::virtio::{STATUS_DRIVER_OK, STATUS_FEATURES_OK};

const SECTORS: u64 = 8;

fn disk() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for sector in 0..SECTORS {
        file.write_all(&[sector as u8 + 0xa0; 512]).expect("write");
    }
    file
}

fn driver(path: &std::path::Path, read_only: bool) -> Driver {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .expect("open disk");
    let block = Block::new(file, "disk", read_only, "gitvisor-disk0").expect("block");
    let mut driver = Driver::new(Box::new(block));
    let status = driver.initialize(F_VERSION_1 | F_FLUSH, 1, 16);
    assert_ne!(status & STATUS_DRIVER_OK, 0, "status {status:#x}");
    driver
}

/// Submits one request and returns (status byte, used length).
fn request(driver: &mut Driver, kind: u32, sector: u64, data: &[(u64, u32, bool)]) -> (u8, u32) {
    let mut header = Vec::new();
    header.extend_from_slice(&kind.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&sector.to_le_bytes());
    let header = driver.buffer(&header);
    let status = driver.buffer(&[0xff]);
    let mut chain = vec![(header, 16, false)];
    chain.extend_from_slice(data);
    chain.push((status, 1, true));
    let head = driver.submit(0, &chain);
    driver.notify(0);
    let used = driver.used(0);
    assert_eq!(used.len(), 1, "one request completed");
    assert_eq!(used[0].0, u32::from(head));
    assert!(driver.interrupted(), "the driver is interrupted");
    (driver.bytes(status, 1)[0], used[0].1)
}

#[test]
fn config_space_reports_capacity_and_the_device_is_a_block_device() {
    let file = disk();
    let mut driver = driver(file.path(), false);
    assert_eq!(driver.read(REG_DEVICE_ID), DEVICE_ID_BLOCK);
    let low = driver.read(REG_CONFIG);
    let high = driver.read(REG_CONFIG + 4);
    assert_eq!(u64::from(low) | (u64::from(high) << 32), SECTORS);
}

#[test]
fn a_read_fills_guest_buffers_from_the_file_across_descriptors() {
    let file = disk();
    let mut driver = driver(file.path(), false);
    let first = driver.alloc(512);
    let second = driver.alloc(512);
    let (status, len) = request(
        &mut driver,
        T_IN,
        2,
        &[(first, 512, true), (second, 512, true)],
    );
    assert_eq!((status, len), (S_OK, 1025));
    assert_eq!(driver.bytes(first, 512), vec![0xa2; 512]);
    assert_eq!(driver.bytes(second, 512), vec![0xa3; 512]);
}

#[test]
fn a_write_reaches_the_file_and_a_flush_succeeds() {
    let file = disk();
    let mut driver = driver(file.path(), false);
    let data = driver.buffer(&[0x5a; 512]);
    assert_eq!(
        request(&mut driver, T_OUT, 5, &[(data, 512, false)]),
        (S_OK, 1)
    );
    assert_eq!(request(&mut driver, T_FLUSH, 0, &[]), (S_OK, 1));
    let contents = std::fs::read(file.path()).expect("read disk");
    assert_eq!(&contents[5 * 512..6 * 512], &[0x5a; 512][..]);
    assert_eq!(&contents[4 * 512..5 * 512], &[0xa4; 512][..]);
}

#[test]
fn a_read_only_disk_offers_ro_and_refuses_writes() {
    let file = disk();
    let mut driver = driver(file.path(), true);
    assert_ne!(driver.device_features() & F_RO, 0);
    let data = driver.buffer(&[0x5a; 512]);
    assert_eq!(
        request(&mut driver, T_OUT, 0, &[(data, 512, false)]),
        (S_IOERR, 1)
    );
    let contents = std::fs::read(file.path()).expect("read disk");
    assert_eq!(&contents[..512], &[0xa0; 512][..]);
}

#[test]
fn requests_past_the_end_and_unknown_types_fail_without_touching_memory() {
    let file = disk();
    let mut driver = driver(file.path(), false);
    let buffer = driver.buffer(&[0x11; 1024]);
    assert_eq!(
        request(&mut driver, T_IN, SECTORS - 1, &[(buffer, 1024, true)]),
        (S_IOERR, 1)
    );
    assert_eq!(driver.bytes(buffer, 1024), vec![0x11; 1024]);
    assert_eq!(request(&mut driver, 0x99, 0, &[]), (S_UNSUPP, 1));
    // A read whose buffer is device-readable is malformed.
    assert_eq!(
        request(&mut driver, T_IN, 0, &[(buffer, 512, false)]),
        (S_IOERR, 1)
    );
}

#[test]
fn get_id_returns_the_serial() {
    let file = disk();
    let mut driver = driver(file.path(), false);
    let buffer = driver.alloc(20);
    assert_eq!(
        request(&mut driver, T_GET_ID, 0, &[(buffer, 20, true)]),
        (S_OK, 21)
    );
    assert_eq!(&driver.bytes(buffer, 14), b"gitvisor-disk0");
}

#[test]
fn a_legacy_driver_or_unknown_features_are_refused_at_features_ok() {
    let file = disk();
    let block =
        Block::new(File::open(file.path()).expect("open"), "disk", true, "d").expect("block");
    let mut legacy = Driver::new(Box::new(block));
    assert_eq!(legacy.initialize(F_FLUSH, 1, 16) & STATUS_FEATURES_OK, 0);
    let block =
        Block::new(File::open(file.path()).expect("open"), "disk", true, "d").expect("block");
    let mut greedy = Driver::new(Box::new(block));
    assert_eq!(
        greedy.initialize(F_VERSION_1 | (1 << 40), 1, 16) & STATUS_FEATURES_OK,
        0
    );
}

#[test]
fn nothing_is_processed_before_driver_ok() {
    let file = disk();
    let block =
        Block::new(File::open(file.path()).expect("open"), "disk", true, "d").expect("block");
    let mut driver = Driver::new(Box::new(block));
    driver.initialize(F_VERSION_1, 1, 16);
    driver.write(crate::devices::virtio::mmio::REG_STATUS, 0);
    let buffer = driver.alloc(512);
    let status = driver.buffer(&[0xff]);
    let header = driver.buffer(&[0; 16]);
    driver.submit(
        0,
        &[(header, 16, false), (buffer, 512, true), (status, 1, true)],
    );
    driver.notify(0);
    assert!(driver.used(0).is_empty());
    assert!(!driver.interrupted());
}
