//! The parser on hand-made chains: every check of the module doc, one at a time.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const WRITE: u16 = 2;
const HEADER: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0x9000;
const DISK: Disk = Disk {
    sectors: 8,
    read_only: false,
};

fn memory(kind: u32, sector: u64) -> GuestMemoryMmap {
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("guest memory");
    memory.write_obj(kind, GuestAddress(HEADER)).expect("type");
    memory
        .write_obj(sector, GuestAddress(HEADER + 8))
        .expect("sector");
    memory
}

fn header() -> Descriptor {
    Descriptor::new(HEADER, 16, 0, 0)
}

fn status() -> Descriptor {
    Descriptor::new(STATUS, 1, WRITE, 0)
}

fn data(len: u32, writable: bool) -> Descriptor {
    Descriptor::new(DATA, len, if writable { WRITE } else { 0 }, 0)
}

fn parse(
    kind: u32,
    sector: u64,
    chain: &[Descriptor],
    disk: Disk,
) -> Result<Request, RequestError> {
    Request::parse(chain, &memory(kind, sector), disk).map_err(|(error, at)| {
        if error == RequestError::NoStatus {
            assert_eq!(at, None);
        } else {
            assert_eq!(
                at,
                Some(GuestAddress(STATUS)),
                "{error}: reported at the status byte"
            );
        }
        error
    })
}

#[test]
fn a_read_across_buffers_parses_with_its_sector_and_buffers() {
    let request = parse(
        T_IN,
        6,
        &[header(), data(512, true), data(512, true), status()],
        DISK,
    )
    .expect("a good read");
    assert_eq!(request.kind, RequestType::In);
    assert_eq!(request.sector, 6);
    assert_eq!(request.data.len(), 2);
    assert_eq!(request.status, GuestAddress(STATUS));
}

#[test]
fn lengths_must_be_whole_sectors() {
    for len in [1, 511, 513, 1000] {
        assert_eq!(
            parse(T_IN, 0, &[header(), data(len, true), status()], DISK),
            Err(RequestError::NotSectorMultiple {
                len: u64::from(len)
            }),
            "{len}"
        );
    }
    // Two buffers of 256 bytes make one sector: it is the transfer that counts.
    assert!(
        parse(
            T_OUT,
            0,
            &[header(), data(256, false), data(256, false), status()],
            DISK
        )
        .is_ok()
    );
}

#[test]
fn transfers_must_lie_within_the_disk() {
    assert!(parse(T_IN, 7, &[header(), data(512, true), status()], DISK).is_ok());
    assert_eq!(
        parse(T_IN, 7, &[header(), data(1024, true), status()], DISK),
        Err(RequestError::OutOfRange {
            sector: 7,
            count: 2,
            capacity: 8
        })
    );
    assert_eq!(
        parse(T_OUT, 8, &[header(), data(512, false), status()], DISK),
        Err(RequestError::OutOfRange {
            sector: 8,
            count: 1,
            capacity: 8
        })
    );
    // A sector so large that sector + count overflows.
    assert!(matches!(
        parse(T_IN, u64::MAX, &[header(), data(512, true), status()], DISK),
        Err(RequestError::OutOfRange { .. })
    ));
}

#[test]
fn chains_without_a_status_byte_or_a_good_header_are_refused() {
    assert_eq!(parse(T_IN, 0, &[], DISK), Err(RequestError::NoStatus));
    // The last descriptor is device-readable: nowhere to write the status.
    assert_eq!(
        parse(
            T_IN,
            0,
            &[header(), data(512, true), data(512, false)],
            DISK
        ),
        Err(RequestError::NoStatus)
    );
    assert_eq!(
        parse(
            T_IN,
            0,
            &[header(), Descriptor::new(STATUS, 0, WRITE, 0)],
            DISK
        ),
        Err(RequestError::NoStatus)
    );
    assert_eq!(
        parse(T_FLUSH, 0, &[status()], DISK),
        Err(RequestError::BadHeader)
    );
    assert_eq!(
        parse(
            T_FLUSH,
            0,
            &[Descriptor::new(HEADER, 8, 0, 0), status()],
            DISK
        ),
        Err(RequestError::BadHeader)
    );
    assert_eq!(
        parse(
            T_FLUSH,
            0,
            &[Descriptor::new(HEADER, 16, WRITE, 0), status()],
            DISK
        ),
        Err(RequestError::BadHeader)
    );
    assert_eq!(
        parse(
            T_FLUSH,
            0,
            &[Descriptor::new(0xff_0000, 16, 0, 0), status()],
            DISK
        ),
        Err(RequestError::HeaderUnreadable { address: 0xff_0000 })
    );
}

#[test]
fn directions_read_only_disks_and_get_id_buffers_are_checked() {
    assert_eq!(
        parse(
            T_IN,
            0,
            &[header(), data(512, true), data(512, false), status()],
            DISK
        ),
        Err(RequestError::WrongDirection {
            kind: RequestType::In
        })
    );
    assert_eq!(
        parse(T_OUT, 0, &[header(), data(512, true), status()], DISK),
        Err(RequestError::WrongDirection {
            kind: RequestType::Out
        })
    );
    let read_only = Disk {
        read_only: true,
        ..DISK
    };
    assert_eq!(
        parse(T_OUT, 0, &[header(), data(512, false), status()], read_only),
        Err(RequestError::ReadOnly)
    );
    assert!(parse(T_IN, 0, &[header(), data(512, true), status()], read_only).is_ok());
    assert_eq!(
        parse(T_GET_ID, 0, &[header(), status()], DISK),
        Err(RequestError::NoIdBuffer)
    );
    assert_eq!(
        parse(T_GET_ID, 0, &[header(), data(20, true), status()], DISK).map(|request| request.kind),
        Ok(RequestType::GetId)
    );
    assert_eq!(
        parse(0x99, 0, &[header(), status()], DISK).map(|request| request.kind),
        Ok(RequestType::Unsupported(0x99))
    );
}
