//! Durations (`250ms`, `5s`) and byte sizes (`64MiB`) as written in flow files.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration written in humantime syntax, such as `100ms`, `5s` or `1m 30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = crate::Text::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{}` is not a duration ({e}); expected a number with a unit, like `250ms`, `5s` or `2m`",
                    text.as_str()
                ))
            })
    }
}

/// A size in bytes, written as `1048576`, `512KiB`, `64MiB`, `1GB` …
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size with an optional unit (B, KB, MB, GB, KiB, MiB, GiB).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| {
            format!("`{text}` is not a size; expected a whole number with an optional unit, like `64MiB`")
        })?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{text}`; expected one of B, KB, MB, GB, KiB, MiB, GiB"
                ));
            }
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as `1048576` or `64MiB`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A count that must be at least 1 (batch sizes and the like). Zero is refused while the
/// flow is parsed, at the value's own line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Count(pub usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match usize::deserialize(deserializer)? {
            0 => Err(serde::de::Error::custom(
                "must be at least 1; use 1 or more (or leave the key out for the default)",
            )),
            n => Ok(Count(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("1KB").unwrap().0, 1000);
        assert_eq!(ByteSize::parse("12").unwrap().0, 12);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
    }

    #[test]
    fn counts_refuse_zero_at_the_value() {
        #[derive(serde::Deserialize)]
        struct Doc {
            #[allow(dead_code)]
            batch: Count,
        }
        assert!(serde_saphyr::from_str::<Doc>("batch: 3").is_ok());
        let err = serde_saphyr::from_str::<Doc>("batch: 0")
            .err()
            .expect("zero is refused");
        assert_eq!(err.location().map(|l| (l.line(), l.column())), Some((1, 8)));
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}
