//! SHA-256 content digests (`sha256:<64 hex>`), the only algorithm gitvisor's image store
//! accepts: a plain value, so that the validator checks a pinned `image: …@sha256:…` with
//! the same rule the container driver's store uses.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A verified-format SHA-256 digest: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub(crate) String);

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
            Err(format!(
                "{} is not 64 lowercase hex digits",
                super::quoted(hex)
            ))
        }
    }
}

impl FromStr for Sha256Digest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let shown = super::quoted(text);
        match text.split_once(':') {
            Some(("sha256", hex)) => {
                Sha256Digest::from_hex(hex).map_err(|why| format!("digest {shown}: {why}"))
            }
            Some((algorithm, _)) => Err(format!(
                "digest {shown} uses {algorithm}; gitvisor's image store verifies sha256 digests only"
            )),
            None => Err(format!("{shown} is not a digest (sha256:<64 hex digits>)")),
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
