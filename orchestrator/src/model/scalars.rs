//! Scalar types that validate themselves while being parsed, so a bad value
//! is reported at its own line: cron expressions, time zones, regexes, names.

use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_schema {
    ($ty:ty, $name:literal, $desc:literal) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $desc })
            }
        }
    };
}

macro_rules! serialize_as_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week).
#[derive(Debug, Clone)]
pub struct CronExpr {
    text: String,
    pub cron: croner::Cron,
}

impl CronExpr {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for CronExpr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if fields != 5 && !text.trim_start().starts_with('@') {
            return Err(format!(
                "cron `{text}` has {fields} fields; lifeboat uses 5: minute hour day-of-month month day-of-week (e.g. `0 2 * * *`)"
            ));
        }
        let cron = croner::parser::CronParser::new()
            .parse(text)
            .map_err(|e| format!("cron `{text}` is invalid: {e}"))?;
        Ok(CronExpr { text: text.to_string(), cron })
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}
serialize_as_str!(CronExpr);
string_schema!(CronExpr, "Cron", "5-field cron: minute hour day-of-month month day-of-week");

/// An IANA time zone such as `UTC` or `Europe/Paris`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(chrono_tz::UTC)
    }
}

impl TimeZone {
    pub fn as_str(&self) -> &str {
        self.0.name()
    }
}

impl FromStr for TimeZone {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
            match crate::suggest::closest(text, names) {
                Some(s) => format!("unknown time zone `{text}` (did you mean `{s}`?)"),
                None => format!(
                    "unknown time zone `{text}`: use an IANA name such as `UTC` or `Europe/Paris`"
                ),
            }
        })
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}
serialize_as_str!(TimeZone);
string_schema!(TimeZone, "TimeZone", "IANA time zone, e.g. UTC or Europe/Paris");

/// A regular expression, compiled when the file is read.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(text)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| format!("invalid regular expression: {e}"))
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}
serialize_as_str!(Pattern);
string_schema!(Pattern, "Pattern", "A regular expression (Rust regex syntax)");

/// True for names of workflows and steps: `[a-z0-9][a-z0-9_-]*`, at most 64.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_needs_five_fields() {
        assert!("0 2 * * *".parse::<CronExpr>().is_ok());
        assert!("0 0 2 * * *".parse::<CronExpr>().unwrap_err().contains("6 fields"));
        assert!("61 * * * *".parse::<CronExpr>().is_err());
    }

    #[test]
    fn time_zone_suggests_a_close_name() {
        assert!("Europe/Pari".parse::<TimeZone>().unwrap_err().contains("Europe/Paris"));
        assert_eq!("UTC".parse::<TimeZone>().unwrap().as_str(), "UTC");
    }

    #[test]
    fn names() {
        assert!(is_valid_name("failover"));
        assert!(is_valid_name("restore-test_2"));
        assert!(!is_valid_name("Failover"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name(""));
    }
}
