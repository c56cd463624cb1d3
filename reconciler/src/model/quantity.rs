//! Human quantities used in manifests: byte sizes (`512MiB`, `20GiB`, `1.5TiB`) and
//! durations (`30s`, `5m`, `1h30m`).
//!
//! Both parse from strings at deserialisation time so that a bad value is reported by the
//! loader with the file, line, column and field path where it was written.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written with a binary or decimal unit, or as a plain number of bytes.
///
/// One meaning per spelling: a unit without `B` (`256M`, `2G`) or with `i` (`256Mi`,
/// `2GiB`) is binary (powers of 1024), as QEMU's `-m 2G`, LVM's `-L 2G`, Docker's
/// `--memory 256m` and Kubernetes' `Mi` read it; only the SI spellings with `B`
/// (`kB`, `MB`, `GB`, `TB`, `PB`) are decimal. So `256M`, `256Mi` and `256MiB` are the same
/// size, and a VM declared `memory: 2G` gets exactly 2048 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Every accepted unit; longer spellings first so `MiB` is not read as `B`. The canonical
/// binary spelling of each power (the one `Display` writes) comes first among its kind.
const UNITS: &[(&str, u64)] = &[
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("Pi", 1 << 50),
    ("Ti", 1 << 40),
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
    ("KB", 1_000),
    ("P", 1 << 50),
    ("T", 1 << 40),
    ("G", 1 << 30),
    ("M", 1 << 20),
    ("K", 1 << 10),
    ("k", 1 << 10),
    ("B", 1),
];

/// What a size may end with, for the error that rejects an unknown one.
const ACCEPTED: &str = "binary (x1024): K, M, G, T, P, or Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB, Pi/PiB; \
     decimal (x1000): kB, MB, GB, TB, PB; B or no unit for bytes";

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = super::quoted(text);
        let invalid = || {
            format!(
                "invalid size {shown}: expected a number with a unit such as 512MiB, 2G or 1.5TiB"
            )
        };
        let trimmed = text.trim();
        let (number, multiplier) = UNITS
            .iter()
            .find_map(|(unit, mult)| trimmed.strip_suffix(unit).map(|n| (n.trim_end(), *mult)))
            .unwrap_or((trimmed, 1));
        let digits_end = number
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(number.len());
        if digits_end > 0 && digits_end < number.len() {
            let unit_start = trimmed
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(digits_end);
            let unit = super::quoted(trimmed[unit_start..].trim_start());
            return Err(format!(
                "invalid size {shown}: unknown unit {unit}; accepted: {ACCEPTED}"
            ));
        }
        if number.is_empty()
            || !number.chars().all(|c| c.is_ascii_digit() || c == '.')
            || number.starts_with('.')
            || number.ends_with('.')
        {
            return Err(invalid());
        }
        let bytes = match number.split_once('.') {
            None => number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(multiplier)),
            Some((whole, frac)) => {
                if frac.contains('.') || frac.len() > 9 {
                    return Err(invalid());
                }
                let whole: u64 = whole.parse().map_err(|_| invalid())?;
                let frac_value: u64 = frac.parse().map_err(|_| invalid())?;
                let scale = 10u64.pow(frac.len() as u32);
                let frac_bytes = (multiplier as u128 * frac_value as u128) / scale as u128;
                if !(multiplier as u128 * frac_value as u128).is_multiple_of(scale as u128) {
                    return Err(format!("invalid size {shown}: not a whole number of bytes"));
                }
                whole
                    .checked_mul(multiplier)
                    .and_then(|w| w.checked_add(frac_bytes as u64))
            }
        };
        bytes
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {shown}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in UNITS.iter().filter(|(u, _)| u.ends_with("iB")) {
            if self.0 >= *mult && self.0.is_multiple_of(*mult) {
                return write!(f, "{}{}", self.0 / mult, unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = StringOrNumber::deserialize(deserializer)?.0;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: a number with a unit, e.g. 512MiB, 256M, 2G, 1.5TiB; or a plain number of bytes. K, M, G, T, P (alone or as Ki/KiB, Mi/MiB, ...) are binary, powers of 1024, as in QEMU, LVM and Docker; kB, MB, GB, TB, PB are decimal, powers of 1000.",
            "oneOf": [
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?\\s*(PiB|TiB|GiB|MiB|KiB|Pi|Ti|Gi|Mi|Ki|PB|TB|GB|MB|kB|KB|P|T|G|M|K|k|B)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

/// A duration written as a sequence of `<number><unit>` with units `ms`, `s`, `m`, `h`
/// (`30s`, `5m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = super::quoted(text);
        let invalid = || format!("invalid duration {shown}: expected e.g. 500ms, 30s, 5m or 1h30m");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(invalid());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let (unit_ms, unit_len) = if rest.starts_with("ms") {
                (1, 2)
            } else if rest.starts_with('s') {
                (1000, 1)
            } else if rest.starts_with('m') {
                (60_000, 1)
            } else if rest.starts_with('h') {
                (3_600_000, 1)
            } else {
                return Err(invalid());
            };
            rest = &rest[unit_len..];
            total_ms = value
                .checked_mul(unit_ms)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(invalid)?;
        }
        Ok(Duration(std::time::Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: e.g. 500ms, 30s, 5m, 1h30m.",
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h))+$"
        })
    }
}

/// Accepts a YAML string or an unsigned integer, so `size: 1048576` works as bytes.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 512MiB")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("20GiB".parse::<ByteSize>().unwrap().0, 20 << 30);
        assert_eq!("1.5TiB".parse::<ByteSize>().unwrap().0, 3 << 39);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("1GB".parse::<ByteSize>().unwrap().0, 1_000_000_000);
        for bad in [
            "",
            "MiB",
            "1.5.5GiB",
            "12XB",
            "-1GiB",
            ".5GiB",
            "1.0000000001B",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn common_spellings_have_one_binary_meaning() {
        for text in ["256M", "256Mi", "256MiB", "262144K", "262144k", "268435456"] {
            assert_eq!(text.parse::<ByteSize>().unwrap().0, 256 << 20, "{text}");
        }
        for text in ["2G", "2Gi", "2GiB", "2048M", "2 G"] {
            assert_eq!(text.parse::<ByteSize>().unwrap().0, 2 << 30, "{text}");
        }
        assert_eq!("1T".parse::<ByteSize>().unwrap().0, 1 << 40);
        assert_eq!("1.5G".parse::<ByteSize>().unwrap().0, 3 << 29);
        // Only the SI spellings with B are decimal.
        assert_eq!("256MB".parse::<ByteSize>().unwrap().0, 256_000_000);
        assert_eq!("2GB".parse::<ByteSize>().unwrap().0, 2_000_000_000);
    }

    #[test]
    fn an_unknown_unit_names_what_is_accepted() {
        for bad in ["256X", "2 gb", "12XB", "1Gib", "5mb"] {
            let error = bad.parse::<ByteSize>().unwrap_err();
            assert!(error.contains("unknown unit"), "{bad}: {error}");
            assert!(
                error.contains("Mi/MiB") && error.contains("MB") && error.contains("K, M, G"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn sizes_display_round_trip() {
        for text in ["512MiB", "20GiB", "1536GiB", "7B"] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.to_string().parse::<ByteSize>().unwrap(), size);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!("30s".parse::<Duration>().unwrap().0.as_secs(), 30);
        assert_eq!("1h30m".parse::<Duration>().unwrap().0.as_secs(), 5400);
        assert_eq!("250ms".parse::<Duration>().unwrap().0.as_millis(), 250);
        for bad in ["", "5", "s", "5x", "1.5s"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should be rejected");
        }
    }
}
