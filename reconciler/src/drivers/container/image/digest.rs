//! SHA-256 content digests (`sha256:<64 hex>`, the value type is the model's
//! [`Sha256Digest`]), and a reader that hashes and counts what passes through it, so a
//! blob is verified while it is copied or unpacked, never read twice.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

pub use crate::model::Sha256Digest;

/// Passes reads through, hashing and counting them.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads whatever is left (a tar's trailing padding, say), so the digest covers the
    /// whole stream, then answers it with the byte count.
    pub fn finish(mut self) -> io::Result<(Sha256Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            Sha256Digest(format!("{:x}", self.hasher.finalize())),
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sha256_with_64_hex_digits() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let digest: Sha256Digest = empty.parse().unwrap();
        assert_eq!(digest.to_string(), empty);
        assert_eq!(digest, Sha256Digest::of(b""));
        assert!(
            "sha512:abcd"
                .parse::<Sha256Digest>()
                .unwrap_err()
                .contains("sha256")
        );
        assert!("sha256:ABCD".parse::<Sha256Digest>().is_err());
        assert!("e3b0".parse::<Sha256Digest>().is_err());
    }

    #[test]
    fn the_hashing_reader_covers_what_the_consumer_left_unread() {
        let mut reader = HashingReader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        reader.read_exact(&mut first).unwrap();
        let (digest, count) = reader.finish().unwrap();
        assert_eq!(count, 11);
        assert_eq!(digest, Sha256Digest::of(b"hello world"));
    }
}
