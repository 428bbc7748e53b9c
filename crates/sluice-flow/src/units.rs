//! Durations (`250ms`, `5s`) and byte sizes (`64MiB`) as written in flow files, and counts that
//! must be at least 1.
//!
//! Each type's parser and the `pattern` or `minimum` of its JSON Schema are built from the same
//! table here (the unit spellings below), so the flow-format schema accepts exactly what the
//! parser accepts; `schema::tests` walks edge values through both.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::time::Duration;

/// Every spelling of a duration unit, with its length in nanoseconds. The longer spellings come
/// first because the schema's regular expression tries them in this order.
pub const DURATION_UNITS: &[(&str, u128)] = &[
    ("nanos", 1),
    ("nsec", 1),
    ("ns", 1),
    ("usec", 1_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("millis", 1_000_000),
    ("msec", 1_000_000),
    ("ms", 1_000_000),
    ("seconds", SECOND),
    ("second", SECOND),
    ("secs", SECOND),
    ("sec", SECOND),
    ("s", SECOND),
    ("minutes", 60 * SECOND),
    ("minute", 60 * SECOND),
    ("mins", 60 * SECOND),
    ("min", 60 * SECOND),
    ("m", 60 * SECOND),
    ("hours", 3600 * SECOND),
    ("hour", 3600 * SECOND),
    ("hrs", 3600 * SECOND),
    ("hr", 3600 * SECOND),
    ("h", 3600 * SECOND),
    ("days", DAY),
    ("day", DAY),
    ("d", DAY),
    ("weeks", 7 * DAY),
    ("week", 7 * DAY),
    ("wks", 7 * DAY),
    ("wk", 7 * DAY),
    ("w", 7 * DAY),
    // A month is 30.44 days and a year 365.25 days, as in humantime.
    ("months", 2_630_016 * SECOND),
    ("month", 2_630_016 * SECOND),
    ("M", 2_630_016 * SECOND),
    ("years", 31_557_600 * SECOND),
    ("year", 31_557_600 * SECOND),
    ("yrs", 31_557_600 * SECOND),
    ("yr", 31_557_600 * SECOND),
    ("y", 31_557_600 * SECOND),
];

/// What every duration error ends with: how to write one.
const EXPECTED_DURATION: &str =
    "expected a number with a unit, like `250ms`, `5s`, `2m` or `1m 30s`";

/// Why a duration or a size was refused. Loading reports it at the value's line and column
/// (through serde), so each says what was written and what is expected instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Nothing (or only blanks) where a duration was expected.
    #[error("an empty duration; {EXPECTED_DURATION}")]
    EmptyDuration,
    /// Something that does not start with a number.
    #[error("`{0}` is not a duration; {EXPECTED_DURATION}")]
    NotADuration(String),
    /// A `.` with no digit after it.
    #[error("`{0}` is not a duration: a digit must follow the `.`; {EXPECTED_DURATION}")]
    NoDigitAfterPoint(String),
    /// A number without a unit, or with one that is not in [`DURATION_UNITS`].
    #[error("`{text}` is not a duration ({}); {EXPECTED_DURATION}", unit_hint(.unit))]
    DurationUnit {
        /// The duration as written.
        text: String,
        /// The unit as written; empty when it is missing.
        unit: String,
    },
    /// Below a second, or with a fraction, where whole seconds are needed.
    #[error(
        "`{0}` is not a whole number of seconds; write it with the units s, m or h and no fraction, like `30s`"
    )]
    NotWholeSeconds(String),
    /// A duration beyond what can be represented.
    #[error("`{0}` is too large a duration")]
    DurationTooLarge(String),
    /// A keep-alive beyond MQTT's 16 bits of seconds.
    #[error("`{0}` is longer than MQTT allows; use at most 65535s (18h 12m 15s)")]
    BeyondMqtt(String),
    /// Something that does not start with a whole number where a size was expected.
    #[error("`{0}` is not a size; expected a whole number with an optional unit, like `64MiB`")]
    NotASize(String),
    /// A size unit that is not in [`SIZE_UNITS`].
    #[error(
        "unknown size unit `{unit}` in `{text}`; expected one of {}",
        alternation(SIZE_UNITS.iter().map(|(u, _)| *u)).replace('|', ", ")
    )]
    SizeUnit {
        /// The size as written.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// A size beyond 64 bits of bytes.
    #[error("`{0}` is too large")]
    SizeTooLarge(String),
}

/// What is wrong with the unit of a duration, for [`UnitError::DurationUnit`].
fn unit_hint(unit: &str) -> String {
    if unit.is_empty() {
        "a unit is missing".to_owned()
    } else {
        format!("unknown unit `{unit}`")
    }
}

const SECOND: u128 = 1_000_000_000;
const DAY: u128 = 86_400 * SECOND;

/// Every spelling of a size unit, with its factor. No unit means bytes.
pub const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// A string that holds an `${env:…}` reference: its value is only known when the flow loads,
/// so the schema lets it through wherever the value is read as text.
const ENV_REFERENCE: &str = r"\$\{env:";

fn alternation<'a>(spellings: impl Iterator<Item = &'a str>) -> String {
    spellings.collect::<Vec<_>>().join("|")
}

/// A duration written as one or more `<number><unit>` parts (`1m 30s`), optionally with a
/// fraction (`1.5s`); see [`DURATION_UNITS`] for the units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses a duration; the error says what was expected.
    pub fn parse(text: &str) -> Result<Dur, UnitError> {
        parse_duration(text, false).map(Dur)
    }

    /// The pattern of the schema, from [`DURATION_UNITS`]: what [`Dur::parse`] accepts, or an
    /// `${env:…}` reference.
    pub fn pattern() -> String {
        duration_pattern(DURATION_UNITS.iter().map(|(u, _)| *u), true)
    }
}

fn duration_pattern<'a>(units: impl Iterator<Item = &'a str>, fractions: bool) -> String {
    let fraction = if fractions { r"(\.[0-9]+)?" } else { "" };
    format!(
        r"^\s*([0-9]+{fraction}\s*({})\s*)+$|{ENV_REFERENCE}",
        alternation(units)
    )
}

/// The one duration grammar: parts of digits, an optional `.` and digits, optional blanks and
/// a unit. `whole_seconds` allows only units of a second or longer and no fraction (MQTT
/// keep-alive).
fn parse_duration(text: &str, whole_seconds: bool) -> Result<Duration, UnitError> {
    let original = text;
    let too_large = || UnitError::DurationTooLarge(original.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(UnitError::NotADuration(original.to_owned()));
        }
        let whole: u128 = rest[..digits].parse().map_err(|_| too_large())?;
        rest = &rest[digits..];
        // Nanoseconds are the finest unit: digits past the ninth cannot count.
        let mut fraction: Option<(u128, u128)> = None;
        if let Some(after) = rest.strip_prefix('.') {
            let len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if len == 0 {
                return Err(UnitError::NoDigitAfterPoint(original.to_owned()));
            }
            let kept = &after[..len.min(9)];
            fraction = Some((kept.parse().unwrap_or(0), 10u128.pow(kept.len() as u32)));
            rest = &after[len..];
        }
        rest = rest.trim_start();
        let len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..len];
        rest = rest[len..].trim_start();
        let Some((_, nanos)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(UnitError::DurationUnit {
                text: original.to_owned(),
                unit: unit.to_owned(),
            });
        };
        if whole_seconds && (*nanos < SECOND || fraction.is_some()) {
            return Err(UnitError::NotWholeSeconds(original.to_owned()));
        }
        let (numerator, denominator) = fraction.unwrap_or((0, 1));
        total = whole
            .checked_mul(*nanos)
            .and_then(|t| t.checked_add(numerator * nanos / denominator))
            .and_then(|t| total.checked_add(t))
            .ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total / SECOND).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (total % SECOND) as u32))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = crate::Text::deserialize(deserializer)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: a number and a unit, like `250ms`, `5s`, `2m` or `1m 30s`.",
            "type": "string",
            "pattern": Dur::pattern(),
        })
    }
}

/// A duration in whole seconds (units `s`, `m`, `h` and longer, no fraction): MQTT counts its
/// keep-alive in seconds, from 0 (off) to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WholeSeconds(pub Dur);

impl WholeSeconds {
    /// The largest value MQTT can carry.
    pub const MAX: Duration = Duration::from_secs(u16::MAX as u64);

    fn parse(text: &str) -> Result<WholeSeconds, UnitError> {
        let d = parse_duration(text, true)?;
        if d > Self::MAX {
            return Err(UnitError::BeyondMqtt(text.to_owned()));
        }
        Ok(WholeSeconds(Dur(d)))
    }
}

impl<'de> Deserialize<'de> for WholeSeconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = crate::Text::deserialize(deserializer)?;
        WholeSeconds::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for WholeSeconds {
    fn schema_name() -> Cow<'static, str> {
        "wholeSeconds".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let units = DURATION_UNITS
            .iter()
            .filter(|(_, nanos)| *nanos >= SECOND)
            .map(|(u, _)| *u);
        json_schema!({
            "description": "A whole number of seconds, in the units s, m or h (like `30s` or `1m`), at most 65535s.",
            "type": "string",
            "pattern": duration_pattern(units, false),
        })
    }
}

/// A size in bytes, written as `1048576`, `512KiB`, `64MiB`, `1GB` …
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size with an optional unit (see [`SIZE_UNITS`]).
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| UnitError::NotASize(text.to_owned()))?;
        let unit = unit.trim();
        let factor = if unit.is_empty() {
            1
        } else {
            match SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
                Some((_, factor)) => *factor,
                None => {
                    return Err(UnitError::SizeUnit {
                        text: text.to_owned(),
                        unit: unit.to_owned(),
                    });
                }
            }
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| UnitError::SizeTooLarge(text.to_owned()))
    }

    /// The pattern of the schema's string form, from [`SIZE_UNITS`].
    pub fn pattern() -> String {
        format!(
            r"^\s*[0-9]+\s*({})?\s*$",
            alternation(SIZE_UNITS.iter().map(|(u, _)| *u))
        )
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

impl Serialize for ByteSize {
    /// The largest binary unit that divides the size, as a user would write it (`64MiB`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= factor && n.is_multiple_of(factor) {
                return serializer.serialize_str(&format!("{}{unit}", n / factor));
            }
        }
        serializer.serialize_u64(n)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "byteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a whole number, or one with a unit (B, KB, kB, MB, GB, KiB, MiB, GiB), like `64MiB`.",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": ByteSize::pattern() },
            ],
        })
    }
}

/// A count that must be at least 1 (batch sizes and the like). Zero is refused while the
/// flow is parsed, at the value's own line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Count(pub usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AtLeastOne::<usize>::deserialize(deserializer).map(|n| Count(n.0))
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl JsonSchema for Count {
    fn schema_name() -> Cow<'static, str> {
        "count".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        AtLeastOne::<usize>::json_schema(generator)
    }
}

/// A whole number that must be at least 1, as the parser reads it: the checked form behind
/// [`Count`] and behind plain `u32`/`usize` fields (`#[serde(deserialize_with =
/// "units::at_least_one")]`), so the error sits at the value and the schema says `minimum: 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtLeastOne<T>(pub T);

impl<'de, T> Deserialize<'de> for AtLeastOne<T>
where
    T: Deserialize<'de> + Default + PartialEq,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = T::deserialize(deserializer)?;
        if value == T::default() {
            return Err(serde::de::Error::custom(
                "must be at least 1; use 1 or more (or leave the key out for the default)",
            ));
        }
        Ok(AtLeastOne(value))
    }
}

impl<T: JsonSchema> JsonSchema for AtLeastOne<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("atLeastOne_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = T::json_schema(generator);
        schema.insert("minimum".into(), 1.into());
        schema
    }
}

/// `deserialize_with` for a plain number field that must be at least 1.
pub fn at_least_one<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    AtLeastOne::<T>::deserialize(deserializer).map(|n| n.0)
}

/// `deserialize_with` for a `Spanned<Dur>` field that must be whole seconds.
pub fn whole_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_saphyr::Spanned<Dur>, D::Error> {
    let s = serde_saphyr::Spanned::<WholeSeconds>::deserialize(deserializer)?;
    Ok(serde_saphyr::Spanned::new(
        s.value.0,
        s.referenced,
        s.defined,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("1KB").unwrap().0, 1000);
        assert_eq!(ByteSize::parse("512kB").unwrap().0, 512_000);
        assert_eq!(ByteSize::parse("12").unwrap().0, 12);
        let unit = ByteSize::parse("12 parsecs").unwrap_err();
        assert!(
            unit.to_string()
                .starts_with("unknown size unit `parsecs` in `12 parsecs`; expected one of "),
            "{unit}"
        );
        assert_eq!(
            ByteSize::parse("MiB").unwrap_err().to_string(),
            "`MiB` is not a size; expected a whole number with an optional unit, like `64MiB`"
        );
    }

    #[test]
    fn durations_parse_like_humantime() {
        let d = |t: &str| Dur::parse(t).map(|d| d.0);
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d(" 2 h "), Ok(Duration::from_secs(7200)));
        assert_eq!(d("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5 parsecs", "-1s", "1.s", "1s 2", "1 m s"] {
            assert!(d(bad).is_err(), "`{bad}` is refused");
        }
        assert_eq!(
            d("5 parsecs").unwrap_err().to_string(),
            "`5 parsecs` is not a duration (unknown unit `parsecs`); expected a number with a \
             unit, like `250ms`, `5s`, `2m` or `1m 30s`"
        );
        assert_eq!(
            d("5").unwrap_err().to_string(),
            "`5` is not a duration (a unit is missing); expected a number with a unit, like \
             `250ms`, `5s`, `2m` or `1m 30s`"
        );
    }

    #[test]
    fn whole_seconds_refuse_fractions_and_small_units() {
        assert!(WholeSeconds::parse("30s").is_ok());
        assert!(WholeSeconds::parse("1m").is_ok());
        assert!(WholeSeconds::parse("0s").is_ok());
        assert!(WholeSeconds::parse("1500ms").is_err());
        assert!(WholeSeconds::parse("1.5s").is_err());
        assert!(WholeSeconds::parse("1.0s").is_err());
        assert_eq!(
            WholeSeconds::parse("65536s"),
            Err(UnitError::BeyondMqtt("65536s".to_owned()))
        );
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
