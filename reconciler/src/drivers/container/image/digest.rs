//! SHA-256 content digests (`sha256:<64 hex>`), the only algorithm the store accepts, and
//! a reader that hashes and counts what passes through it, so a blob is verified while it
//! is copied or unpacked, never read twice.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A verified-format SHA-256 digest: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(format!("{:x}", Sha256::digest(bytes)))
    }

    /// The 64 hex digits, the name of the blob or layer in the store.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// From the bare 64 hex digits (a docker-archive file name, say).
    pub fn from_hex(hex: &str) -> Result<Self, String> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Sha256Digest(hex.to_owned()))
        } else {
            Err(format!("{hex:?} is not 64 lowercase hex digits"))
        }
    }
}

impl FromStr for Sha256Digest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("sha256", hex)) => {
                Sha256Digest::from_hex(hex).map_err(|why| format!("digest {text:?}: {why}"))
            }
            Some((algorithm, _)) => Err(format!(
                "digest {text:?} uses {algorithm}; gitvisor's image store verifies sha256 digests only"
            )),
            None => Err(format!("{text:?} is not a digest (sha256:<64 hex digits>)")),
        }
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
