//! The few ACPI Machine Language encodings the DSDT needs (ACPI 6.5 §20.2): names,
//! integers, strings, packages, buffers, `Scope`, `Device`, `Name`, and the resource
//! descriptors of a `_CRS` (§6.4): fixed memory, extended interrupt, I/O port, IRQ.
//!
//! Every function returns the encoded bytes of one object; objects nest by passing the
//! bytes of their children. The objects built here are a few KiB at most, far below the
//! 256 MiB a package length can express.

/// `ZeroOp`, `OneOp` and the integer prefixes.
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const NAME_OP: u8 = 0x08;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const OP_REGION_OP: u8 = 0x80;
const FIELD_OP: u8 = 0x81;
const METHOD_OP: u8 = 0x14;
const STORE_OP: u8 = 0x70;
const AND_OP: u8 = 0x7b;
const IF_OP: u8 = 0xa0;
const NOTIFY_OP: u8 = 0x86;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const NULL_NAME: u8 = 0x00;
/// `Local0` and `Arg0`.
pub const LOCAL0: u8 = 0x60;
pub const ARG0: u8 = 0x68;
/// `OperationRegion` address space: system I/O.
pub const REGION_SYSTEM_IO: u8 = 0x01;
/// `Field` flags: `ByteAcc, NoLock, Preserve`.
pub const FIELD_BYTE_ACCESS: u8 = 0x01;
/// `\`: a name from the root of the namespace.
pub const ROOT_PREFIX: u8 = 0x5c;

/// Small resource items: tag byte = type << 3 | length.
const IRQ_NO_FLAGS_TAG: u8 = 0x22;
const IO_PORT_TAG: u8 = 0x47;
const END_TAG: u8 = 0x79;
/// Large resource items: the tag, then a 16-bit length.
const MEMORY32_FIXED_TAG: u8 = 0x86;
const EXTENDED_INTERRUPT_TAG: u8 = 0x89;

/// Extended interrupt flags (§6.4.3.6): the device consumes the interrupt, edge-triggered.
const INTERRUPT_CONSUMER: u8 = 1 << 0;
const INTERRUPT_EDGE: u8 = 1 << 1;

/// `PkgLength` (§20.2.4) of an object whose body is `content` bytes: the encoded length
/// counts its own bytes. One byte up to 63, else a lead byte (count of following bytes in
/// bits 6–7, low nibble of the length) and the rest of the length, 8 bits a byte.
pub fn pkg_length(content: usize) -> Vec<u8> {
    if content + 1 < 0x40 {
        return vec![(content + 1) as u8];
    }
    let follow = if content + 2 < 1 << 12 {
        1
    } else if content + 3 < 1 << 20 {
        2
    } else {
        3
    };
    let total = content + 1 + follow;
    debug_assert!(total < 1 << 28, "AML object of {content} bytes");
    let mut out = vec![((follow as u8) << 6) | (total & 0xf) as u8];
    for i in 0..follow {
        out.push((total >> (4 + 8 * i)) as u8);
    }
    out
}

/// An integer in its shortest encoding.
pub fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        v if v <= 0xff => vec![BYTE_PREFIX, v as u8],
        v if v <= 0xffff => [&[WORD_PREFIX][..], &(v as u16).to_le_bytes()].concat(),
        v if v <= 0xffff_ffff => [&[DWORD_PREFIX][..], &(v as u32).to_le_bytes()].concat(),
        v => [&[QWORD_PREFIX][..], &v.to_le_bytes()].concat(),
    }
}

/// A 32-bit integer always as a `DWordConst` (how EISA IDs are written).
pub fn dword(value: u32) -> Vec<u8> {
    [&[DWORD_PREFIX][..], &value.to_le_bytes()].concat()
}

/// An ASCII string (`StringPrefix`, the bytes, NUL).
pub fn string(text: &str) -> Vec<u8> {
    let mut out = vec![STRING_PREFIX];
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

/// A compressed EISA ID (`EisaId ("PNP0501")`): three capitals of 5 bits each and four
/// hex digits, stored big-endian. Meant for constants: an ID of the wrong shape stops the
/// build (a panic in const evaluation is a compile error).
pub const fn eisa_id(id: &[u8; 7]) -> u32 {
    let mut vendor: u16 = 0;
    let mut i = 0;
    while i < 3 {
        assert!(id[i].is_ascii_uppercase(), "EISA ID vendor letters are A-Z");
        vendor = (vendor << 5) | (id[i] - b'@') as u16;
        i += 1;
    }
    let mut product: u16 = 0;
    while i < 7 {
        let digit = match id[i] {
            b'0'..=b'9' => id[i] - b'0',
            b'A'..=b'F' => id[i] - b'A' + 10,
            _ => panic!("EISA ID product digits are 0-9 A-F"),
        };
        product = (product << 4) | digit as u16;
        i += 1;
    }
    let [v0, v1] = vendor.to_be_bytes();
    let [p0, p1] = product.to_be_bytes();
    u32::from_le_bytes([v0, v1, p0, p1])
}

/// A four-character name made of `prefix` and `number` as three hex digits (`V00A`).
pub fn numbered_name(prefix: u8, number: u16) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digit = |shift: u16| HEX[usize::from((number >> shift) & 0xf)];
    [prefix, digit(8), digit(4), digit(0)]
}

/// `Name (name, value)`: `value` is an encoded data object.
pub fn name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut out = vec![NAME_OP];
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out
}

/// `Scope (path) { body }`; `path` is an encoded name string (`\_SB_`).
pub fn scope(path: &[u8], body: &[u8]) -> Vec<u8> {
    let mut content = path.to_vec();
    content.extend_from_slice(body);
    let mut out = vec![SCOPE_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `Device (name) { body }`.
pub fn device(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut content = name.to_vec();
    content.extend_from_slice(body);
    let mut out = vec![EXT_OP_PREFIX, DEVICE_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `\parent.child`: an absolute path of two name segments (`\_SB_.PWRB`).
pub fn root_path(parent: &[u8; 4], child: &[u8; 4]) -> Vec<u8> {
    [&[ROOT_PREFIX, DUAL_NAME_PREFIX][..], parent, child].concat()
}

/// `OperationRegion (name, space, offset, length)`.
pub fn operation_region(name: &[u8; 4], space: u8, offset: u64, length: u64) -> Vec<u8> {
    let mut out = vec![EXT_OP_PREFIX, OP_REGION_OP];
    out.extend_from_slice(name);
    out.push(space);
    out.extend(integer(offset));
    out.extend(integer(length));
    out
}

/// `Field (region, flags) { name, bits }`: one named field at the region's start. A
/// field's width is a `PkgLength` holding the bit count itself (no self-count).
pub fn field(region: &[u8; 4], flags: u8, name: &[u8; 4], bits: u8) -> Vec<u8> {
    debug_assert!(bits < 0x40, "one-byte field widths only");
    let mut content = region.to_vec();
    content.push(flags);
    content.extend_from_slice(name);
    content.push(bits);
    let mut out = vec![EXT_OP_PREFIX, FIELD_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `Method (name, args, Serialized) { body }`.
pub fn serialized_method(name: &[u8; 4], args: u8, body: &[u8]) -> Vec<u8> {
    const SERIALIZED: u8 = 1 << 3;
    let mut content = name.to_vec();
    content.push((args & 0x7) | SERIALIZED);
    content.extend_from_slice(body);
    let mut out = vec![METHOD_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `Store (source, target)`: both already encoded (a name, `Local0`, ...).
pub fn store(source: &[u8], target: &[u8]) -> Vec<u8> {
    [&[STORE_OP][..], source, target].concat()
}

/// `And (left, right)` with no target: the value, for a predicate.
pub fn and(left: &[u8], right: &[u8]) -> Vec<u8> {
    [&[AND_OP][..], left, right, &[NULL_NAME]].concat()
}

/// `If (predicate) { body }`.
pub fn if_then(predicate: &[u8], body: &[u8]) -> Vec<u8> {
    let content = [predicate, body].concat();
    let mut out = vec![IF_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `Notify (object, value)`: `object` an encoded name.
pub fn notify(object: &[u8], value: u8) -> Vec<u8> {
    [&[NOTIFY_OP][..], object, &integer(u64::from(value))].concat()
}

/// `Package () { elements }`: each element an encoded data object.
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut content = vec![elements.len() as u8];
    for element in elements {
        content.extend_from_slice(element);
    }
    let mut out = vec![PACKAGE_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `Buffer () { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut content = integer(bytes.len() as u64);
    content.extend_from_slice(bytes);
    let mut out = vec![BUFFER_OP];
    out.extend(pkg_length(content.len()));
    out.extend(content);
    out
}

/// `ResourceTemplate () { descriptors }`: a buffer of resource descriptors closed by an
/// end tag (checksum 0: "the buffer is not checksummed").
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes: Vec<u8> = descriptors.concat();
    bytes.extend_from_slice(&[END_TAG, 0]);
    buffer(&bytes)
}

/// `Memory32Fixed (ReadWrite, base, length)`.
pub fn memory32_fixed(base: u32, length: u32) -> Vec<u8> {
    let mut out = vec![MEMORY32_FIXED_TAG];
    out.extend_from_slice(&9u16.to_le_bytes());
    out.push(1); // read-write
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out
}

/// `Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }`.
pub fn edge_interrupt(irq: u32) -> Vec<u8> {
    let mut out = vec![EXTENDED_INTERRUPT_TAG];
    out.extend_from_slice(&6u16.to_le_bytes());
    out.push(INTERRUPT_CONSUMER | INTERRUPT_EDGE);
    out.push(1); // one interrupt number follows
    out.extend_from_slice(&irq.to_le_bytes());
    out
}

/// `IO (Decode16, base, base, 1, length)`: a fixed range of I/O ports.
pub fn io_ports(base: u16, length: u8) -> Vec<u8> {
    let mut out = vec![IO_PORT_TAG, 1];
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.push(1);
    out.push(length);
    out
}

/// `IRQNoFlags () { irq }`: an ISA interrupt (edge, active high), `irq` below 16.
pub fn isa_irq(irq: u8) -> Vec<u8> {
    let mask = 1u16 << (irq & 0xf);
    [&[IRQ_NO_FLAGS_TAG][..], &mask.to_le_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lengths_count_their_own_bytes() {
        assert_eq!(pkg_length(0), vec![1]);
        assert_eq!(pkg_length(62), vec![63]);
        // 63 bytes of body + 2 length bytes = 65 = 0x41: lead 0x40 | 1, then 0x04.
        assert_eq!(pkg_length(63), vec![0x41, 0x04]);
        assert_eq!(pkg_length(4093), vec![0x4f, 0xff]);
        // 4094 + 3 = 4097 = 0x1001.
        assert_eq!(pkg_length(4094), vec![0x81, 0x00, 0x01]);
        assert_eq!(pkg_length((1 << 20) - 4), vec![0x80 | 0xf, 0xff, 0xff]);
        assert_eq!(pkg_length((1 << 20) - 3), vec![0xc1, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn integers_take_the_shortest_form() {
        assert_eq!(integer(0), vec![0x00]);
        assert_eq!(integer(1), vec![0x01]);
        assert_eq!(integer(5), vec![0x0a, 5]);
        assert_eq!(integer(0x3f8), vec![0x0b, 0xf8, 0x03]);
        assert_eq!(integer(0xd000_0000), vec![0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 32), vec![0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn eisa_ids_compress_like_the_spec_examples() {
        // Values as iasl and every BIOS encode them.
        assert_eq!(eisa_id(b"PNP0501"), 0x0105_d041);
        assert_eq!(eisa_id(b"PNP0303"), 0x0303_d041);
        assert_eq!(eisa_id(b"PNP0A03"), 0x030a_d041);
        assert!(std::panic::catch_unwind(|| eisa_id(b"pnp0501")).is_err());
        assert!(std::panic::catch_unwind(|| eisa_id(b"PNP05G1")).is_err());
    }

    #[test]
    fn names_strings_and_devices_encode_as_the_grammar_says() {
        assert_eq!(numbered_name(b'V', 0x12), *b"V012");
        assert_eq!(string("AB"), vec![0x0d, b'A', b'B', 0]);
        assert_eq!(name(b"_UID", &integer(0)), b"\x08_UID\x00".to_vec());
        // Device (V000) {}: ExtOp DeviceOp PkgLength(5) "V000".
        assert_eq!(device(b"V000", &[]), b"\x5b\x82\x05V000".to_vec());
        assert_eq!(scope(b"\\_SB_", &[]), b"\x10\x06\\_SB_".to_vec());
        assert_eq!(
            package(&[integer(5), integer(0)]),
            vec![0x12, 0x05, 0x02, 0x0a, 0x05, 0x00]
        );
    }

    /// Byte strings as iasl compiles the same ASL (checked by hand against ACPI 6.5 §20).
    #[test]
    fn the_ged_building_blocks_encode_as_the_grammar_says() {
        // OperationRegion (GDST, SystemIO, 0x603, 1)
        assert_eq!(
            operation_region(b"GDST", REGION_SYSTEM_IO, 0x603, 1),
            b"\x5b\x80GDST\x01\x0b\x03\x06\x01"
        );
        // Field (GDST, ByteAcc, NoLock, Preserve) { GDAT, 8 }
        assert_eq!(
            field(b"GDST", FIELD_BYTE_ACCESS, b"GDAT", 8),
            b"\x5b\x81\x0bGDST\x01GDAT\x08"
        );
        assert_eq!(root_path(b"_SB_", b"PWRB"), b"\\\x2e_SB_PWRB");
        // Notify (PWRB, 0x80)
        assert_eq!(notify(b"PWRB", 0x80), b"\x86PWRB\x0a\x80");
        // If (And (Local0, One)) { Notify (PWRB, 0x80) }
        let body = if_then(&and(&[LOCAL0], &integer(1)), &notify(b"PWRB", 0x80));
        assert_eq!(body, b"\xa0\x0c\x7b\x60\x01\x00\x86PWRB\x0a\x80");
        // Method (_EVT, 1, Serialized) { Store (GDAT, Local0) }
        assert_eq!(
            serialized_method(b"_EVT", 1, &store(b"GDAT", &[LOCAL0])),
            b"\x14\x0c_EVT\x09\x70GDAT\x60"
        );
    }

    #[test]
    fn resource_descriptors_have_the_spec_layouts() {
        assert_eq!(
            memory32_fixed(0xd000_0000, 0x1000),
            vec![0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]
        );
        assert_eq!(edge_interrupt(5), vec![0x89, 6, 0, 0x03, 1, 5, 0, 0, 0]);
        assert_eq!(io_ports(0x3f8, 8), vec![0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]);
        assert_eq!(isa_irq(4), vec![0x22, 0x10, 0x00]);
        // Buffer: BufferOp, PkgLength, BufferSize (ByteConst 5), the IRQ and the end tag.
        assert_eq!(
            resource_template(&[isa_irq(1)]),
            vec![0x11, 0x08, 0x0a, 0x05, 0x22, 0x02, 0x00, 0x79, 0x00]
        );
    }
}
