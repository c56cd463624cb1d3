//! A bzImage's kernel, decompressed once on the host and kept (`--kernel-cache DIR`).
//!
//! A `bzImage` carries the kernel compressed (xz in Debian's images) behind a small
//! decompressor that runs in the guest at every boot. Firecracker takes only an
//! uncompressed `vmlinux` for that reason: decompressing 8 MB of xz into 64 MB is pure CPU
//! work, done before the kernel's first message; in a nested guest it is the largest
//! single cost of a boot (docs/vmm.md has the measurements). With a cache directory the
//! VMM does it once: it finds the compressed payload through the setup header
//! (`payload_offset`/`payload_length`, boot protocol 2.08+), decompresses it (xz or gzip)
//! into `DIR/vmlinux-<hash of the payload>` (written to a temporary name and renamed, so
//! a concurrent boot never reads half a file), and boots that ELF through its 64-bit
//! entry, as for any `vmlinux`. The next boot of the same image finds the file and skips
//! the work. The in-guest decompressor also picks a random load address (KASLR); booted
//! from the ELF, the kernel runs at its link address, as on Firecracker.
//!
//! An image that is not a bzImage, or whose payload is in another format (lz4, zstd, ...),
//! is booted as given.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Errors using the cache.
#[derive(Debug, thiserror::Error)]
pub enum KernelCacheError {
    #[error("cannot read the kernel {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot decompress the kernel {path} ({format} payload): {source}; the image may be damaged"
    )]
    Decompress {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write the decompressed kernel to {path}: {source}; check the --kernel-cache directory or leave the option out"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the setup header keeps what is needed here (boot protocol, `boot.rst`).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// `payload_offset` and `payload_length` exist from protocol 2.08.
const PAYLOAD_FIELDS_VERSION: u16 = 0x0208;

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// The compressed kernel inside a bzImage and its format, if it is one this module
/// decompresses.
pub fn payload(image: &[u8]) -> Option<(&'static str, &[u8])> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if image.get(HEADER_MAGIC..HEADER_MAGIC + 4)? != b"HdrS"
        || u16_at(VERSION)? < PAYLOAD_FIELDS_VERSION
    {
        return None;
    }
    let setup_sects = match *image.get(SETUP_SECTS)? {
        0 => 4,
        sects => usize::from(sects),
    };
    let start = (setup_sects + 1) * 512 + u32_at(PAYLOAD_OFFSET)? as usize;
    let length = u32_at(PAYLOAD_LENGTH)? as usize;
    let bytes = image.get(start..start.checked_add(length)?)?;
    if bytes.starts_with(XZ_MAGIC) {
        Some(("xz", bytes))
    } else if bytes.starts_with(GZIP_MAGIC) {
        Some(("gzip", bytes))
    } else {
        None
    }
}

/// FNV-1a over the payload: names the cache file (a different image, a different name).
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Decompresses `payload` of `format`.
fn decompress(format: &str, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        "xz" => liblzma::read::XzDecoder::new(payload).read_to_end(&mut out)?,
        _ => flate2::read::GzDecoder::new(payload).read_to_end(&mut out)?,
    };
    Ok(out)
}

/// The decompressed kernel of the bzImage at `kernel`, from `cache` or made there now;
/// `None` when `kernel` is not a bzImage with an xz or gzip payload (boot it as given).
pub fn vmlinux(kernel: &Path, cache: &Path) -> Result<Option<PathBuf>, KernelCacheError> {
    let image = std::fs::read(kernel).map_err(|source| KernelCacheError::Read {
        path: kernel.to_path_buf(),
        source,
    })?;
    let Some((format, compressed)) = payload(&image) else {
        return Ok(None);
    };
    let cached = cache.join(format!(
        "vmlinux-{:016x}-{}",
        fingerprint(compressed),
        compressed.len()
    ));
    if cached.is_file() {
        return Ok(Some(cached));
    }
    let elf = decompress(format, compressed).map_err(|source| KernelCacheError::Decompress {
        path: kernel.to_path_buf(),
        format,
        source,
    })?;
    if !elf.starts_with(ELF_MAGIC) {
        return Ok(None);
    }
    let write = |source| KernelCacheError::Write {
        path: cached.clone(),
        source,
    };
    std::fs::create_dir_all(cache).map_err(write)?;
    let temporary = cache.join(format!(
        ".{}.{}.tmp",
        cached
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = File::create(&temporary)
        .and_then(|mut file| file.write_all(&elf).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, &cached));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(write(source));
    }
    Ok(Some(cached))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped file: setup header fields where the boot protocol puts them, a
    /// payload of `compressed` after `setup_sects` sectors of setup code.
    fn bzimage(compressed: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        image[SETUP_SECTS] = setup_sects;
        image[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        image[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        let offset = 0x40u32;
        image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&offset.to_le_bytes());
        image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(compressed.len() as u32).to_le_bytes());
        image.extend(vec![0xcc; offset as usize]);
        image.extend_from_slice(compressed);
        image.extend_from_slice(&[0xee; 4]); // the decompressed size the build appends
        image
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(bytes, 6)
            .read_to_end(&mut out)
            .expect("xz");
        out
    }

    fn elf() -> Vec<u8> {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend((0..100_000u32).map(|i| (i % 251) as u8));
        elf
    }

    #[test]
    fn an_xz_bzimage_is_decompressed_once_and_found_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, bzimage(&xz(&elf()))).expect("write");
        let cache = dir.path().join("cache");
        let first = vmlinux(&kernel, &cache)
            .expect("decompressed")
            .expect("a bzImage");
        assert_eq!(std::fs::read(&first).expect("cached"), elf());
        let entries: Vec<_> = std::fs::read_dir(&cache).expect("cache").collect();
        assert_eq!(entries.len(), 1, "no temporary left behind");
        // Found again: the cached file is used as it is, not rewritten.
        std::fs::write(&first, b"\x7fELF marker").expect("mark");
        let second = vmlinux(&kernel, &cache)
            .expect("cached")
            .expect("a bzImage");
        assert_eq!(second, first);
        assert_eq!(std::fs::read(&second).expect("read"), b"\x7fELF marker");
    }

    #[test]
    fn a_gzip_payload_is_decompressed_too() {
        use flate2::write::GzEncoder;
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&elf()).expect("gzip");
        let compressed = encoder.finish().expect("gzip");
        let dir = tempfile::tempdir().expect("temp dir");
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, bzimage(&compressed)).expect("write");
        let path = vmlinux(&kernel, dir.path())
            .expect("ok")
            .expect("a bzImage");
        assert_eq!(std::fs::read(path).expect("read"), elf());
    }

    #[test]
    fn other_images_are_booted_as_given() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elf_kernel = dir.path().join("vmlinux");
        std::fs::write(&elf_kernel, elf()).expect("write");
        assert!(vmlinux(&elf_kernel, dir.path()).expect("ok").is_none());
        let zstd = dir.path().join("zstd");
        std::fs::write(&zstd, bzimage(b"\x28\xb5\x2f\xfd rest")).expect("write");
        assert!(vmlinux(&zstd, dir.path()).expect("ok").is_none());
        // A payload that claims to reach past the end of the file.
        let mut short = bzimage(&xz(&elf()));
        short.truncate(short.len() - 100);
        assert_eq!(payload(&short), None);
    }

    #[test]
    fn a_damaged_payload_is_an_error_that_names_the_image() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kernel = dir.path().join("vmlinuz");
        let mut compressed = xz(&elf());
        let middle = compressed.len() / 2;
        compressed[middle..middle + 8].fill(0);
        std::fs::write(&kernel, bzimage(&compressed)).expect("write");
        let error = vmlinux(&kernel, dir.path())
            .expect_err("damaged")
            .to_string();
        assert!(error.contains("vmlinuz") && error.contains("xz"), "{error}");
    }
}
