//! Human durations as written in workflow files: `500ms`, `30s`, `5m`, `2h`,
//! `1d`, or a sum such as `1h30m`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

const UNITS: &[(&str, u64)] =
    &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` has no unit: write e.g. `{0}s` (units: ms, s, m, h, d)")]
    MissingUnit(String),
    #[error("`{0}` has an unknown unit (units: ms, s, m, h, d)")]
    UnknownUnit(String),
    #[error("`{0}` is not a duration: write a number and a unit, e.g. `30s`, `5m`, `1h30m`")]
    Malformed(String),
    #[error("`{0}` is too long")]
    Overflow(String),
}

impl Duration {
    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(DurationError::Malformed(s.to_string()));
            }
            let number: u64 =
                rest[..digits].parse().map_err(|_| DurationError::Overflow(s.to_string()))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            if unit.is_empty() {
                return Err(DurationError::MissingUnit(s.to_string()));
            }
            let Some((_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(DurationError::UnknownUnit(s.to_string()));
            };
            let ms = number.checked_mul(*factor).ok_or(DurationError::Overflow(s.to_string()))?;
            total = total.checked_add(ms).ok_or(DurationError::Overflow(s.to_string()))?;
            rest = &rest[unit_len..];
        }
        Ok(Duration::from_millis(total))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact spelling, e.g. `90s` -> `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, factor) in UNITS.iter().rev() {
            if ms >= *factor {
                write!(f, "{}{unit}", ms / factor)?;
                ms %= factor;
            }
        }
        Ok(())
    }
}

/// The newtype name the compiler's deserializer recognises: inside a step's
/// `with`, a template may stand for a duration until the step renders it.
pub(crate) const DURATION_MAGIC: &str = "$lifeboat::Duration";

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl<'de> serde::de::Visitor<'de> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `30s`")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Duration, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
                s.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_newtype_struct(DURATION_MAGIC, DurationVisitor)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "A duration such as 500ms, 30s, 5m, 2h, 1d or 1h30m.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(s: &str) -> u64 {
        s.parse::<Duration>().unwrap().as_millis()
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("30s"), 30_000);
        assert_eq!(ms("5m"), 300_000);
        assert_eq!(ms("2h"), 7_200_000);
        assert_eq!(ms("1d"), 86_400_000);
        assert_eq!(ms("1h30m"), 5_400_000);
    }

    #[test]
    fn rejects_with_the_reason() {
        assert_eq!("30".parse::<Duration>(), Err(DurationError::MissingUnit("30".into())));
        assert_eq!("5 mins".parse::<Duration>(), Err(DurationError::UnknownUnit("5 mins".into())));
        assert_eq!("m5".parse::<Duration>(), Err(DurationError::Malformed("m5".into())));
        assert!(matches!(
            "99999999999999999999d".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = s.parse::<Duration>();
        }
    }
}
