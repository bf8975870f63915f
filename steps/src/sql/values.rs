//! SQL values -> JSON: SQLite by storage class, Postgres from its binary
//! wire format (numeric, dates, times and uuids decoded here, so no extra
//! type crates are needed).

use std::fmt::Write as _;

use serde_json::{Map, Number, Value, json};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgRow, PgValueFormat, PgValueRef};
use sqlx::sqlite::{SqliteRow, SqliteValueRef};
use sqlx::{Column, Decode, Row, TypeInfo, ValueRef};

fn decode_err(column: &str, e: impl std::fmt::Display) -> String {
    format!("column `{column}`: cannot read its value: {e}")
}

pub(super) fn sqlite_row(row: &SqliteRow) -> Result<Value, String> {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw: SqliteValueRef<'_> = row.try_get_raw(i).map_err(|e| decode_err(name, e))?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            let storage = raw.type_info().name().to_owned();
            match storage.as_str() {
                "INTEGER" => {
                    let n = <i64 as Decode<sqlx::Sqlite>>::decode(raw)
                        .map_err(|e| decode_err(name, e))?;
                    if column.type_info().name() == "BOOLEAN" { json!(n != 0) } else { json!(n) }
                }
                "REAL" => float(
                    <f64 as Decode<sqlx::Sqlite>>::decode(raw).map_err(|e| decode_err(name, e))?,
                ),
                "TEXT" => Value::String(
                    <String as Decode<sqlx::Sqlite>>::decode(raw)
                        .map_err(|e| decode_err(name, e))?,
                ),
                _ => Value::String(hex(&<Vec<u8> as Decode<sqlx::Sqlite>>::decode(raw)
                    .map_err(|e| decode_err(name, e))?)),
            }
        };
        object.insert(name.to_owned(), value);
    }
    Ok(Value::Object(object))
}

pub(crate) fn postgres_row(row: &PgRow) -> Result<Value, String> {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw: PgValueRef<'_> = row.try_get_raw(i).map_err(|e| decode_err(name, e))?;
        let value = if raw.is_null() { Value::Null } else { postgres_value(name, raw)? };
        object.insert(name.to_owned(), value);
    }
    Ok(Value::Object(object))
}

fn postgres_value(name: &str, raw: PgValueRef<'_>) -> Result<Value, String> {
    use sqlx::Postgres as Pg;
    let type_name = raw.type_info().name().to_owned();
    let err = |e: BoxDynError| decode_err(name, e);
    if raw.format() == PgValueFormat::Text {
        return Ok(Value::String(raw.as_str().map_err(err)?.to_owned()));
    }
    let bytes = || raw.as_bytes().map_err(err);
    Ok(match type_name.as_str() {
        "BOOL" => json!(<bool as Decode<Pg>>::decode(raw).map_err(err)?),
        "INT2" => json!(<i16 as Decode<Pg>>::decode(raw).map_err(err)?),
        "INT4" => json!(<i32 as Decode<Pg>>::decode(raw).map_err(err)?),
        "INT8" => json!(<i64 as Decode<Pg>>::decode(raw).map_err(err)?),
        "OID" => json!(u32::from_be_bytes(fixed(bytes()?).map_err(err)?)),
        "FLOAT4" => float(f64::from(<f32 as Decode<Pg>>::decode(raw).map_err(err)?)),
        "FLOAT8" => float(<f64 as Decode<Pg>>::decode(raw).map_err(err)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "\"CHAR\"" | "CITEXT" | "UNKNOWN" => {
            Value::String(<String as Decode<Pg>>::decode(raw).map_err(err)?)
        }
        "JSON" | "JSONB" => <Value as Decode<Pg>>::decode(raw).map_err(err)?,
        "BYTEA" => Value::String(hex(bytes()?)),
        "UUID" => Value::String(uuid(fixed(bytes()?).map_err(err)?)),
        "NUMERIC" => numeric(bytes()?).map_err(err)?,
        "DATE" => Value::String(pg_date(i32::from_be_bytes(fixed(bytes()?).map_err(err)?))),
        "TIME" => Value::String(time_of_day(i64::from_be_bytes(fixed(bytes()?).map_err(err)?))),
        "TIMESTAMP" => {
            Value::String(pg_timestamp(i64::from_be_bytes(fixed(bytes()?).map_err(err)?), ""))
        }
        "TIMESTAMPTZ" => {
            Value::String(pg_timestamp(i64::from_be_bytes(fixed(bytes()?).map_err(err)?), "Z"))
        }
        "VOID" => Value::Null,
        other => {
            return Err(format!(
                "column `{name}` has type {other}, which lifeboat cannot turn into JSON; \
                 cast it in the query, e.g. `{name}::text`"
            ));
        }
    })
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], BoxDynError> {
    bytes.try_into().map_err(|_| format!("expected {N} bytes, got {}", bytes.len()).into())
}

/// A JSON number, or null for NaN and infinities (which JSON cannot hold).
fn float(f: f64) -> Value {
    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}

fn hex(bytes: &[u8]) -> String {
    format!("\\x{}", hex::encode(bytes))
}

fn uuid(b: [u8; 16]) -> String {
    let h = hex(&b);
    let h = &h[2..];
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Postgres' binary NUMERIC: an integer within i64 becomes a JSON number;
/// anything else its exact decimal text (as node-postgres does), so no
/// digit is lost.
fn numeric(bytes: &[u8]) -> Result<Value, BoxDynError> {
    let bad = || BoxDynError::from("malformed NUMERIC value");
    let word = |i: usize| -> Result<u16, BoxDynError> {
        bytes.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(bad)
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    let digits: Vec<u16> = (0..ndigits).map(|i| word(4 + i)).collect::<Result<_, _>>()?;
    let text = match sign {
        0xC000 => return Ok(Value::String("NaN".into())),
        0xD000 => return Ok(Value::String("Infinity".into())),
        0xF000 => return Ok(Value::String("-Infinity".into())),
        0x0000 | 0x4000 => {
            let digit = |i: i64| -> u16 {
                usize::try_from(i).ok().and_then(|i| digits.get(i).copied()).unwrap_or(0)
            };
            let mut s = String::new();
            if sign == 0x4000 {
                s.push('-');
            }
            if weight < 0 {
                s.push('0');
            } else {
                for i in 0..=weight {
                    if i == 0 {
                        let _ = write!(s, "{}", digit(i));
                    } else {
                        let _ = write!(s, "{:04}", digit(i));
                    }
                }
            }
            if dscale > 0 {
                let mut fraction = String::new();
                let mut i = weight + 1;
                while fraction.len() < dscale {
                    let _ = write!(fraction, "{:04}", digit(i));
                    i += 1;
                }
                fraction.truncate(dscale);
                s.push('.');
                s.push_str(&fraction);
            }
            s
        }
        _ => return Err(bad()),
    };
    Ok(match text.parse::<i64>() {
        Ok(n) if dscale == 0 => json!(n),
        _ => Value::String(text),
    })
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to 2000-01-01, Postgres' epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

fn pg_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        days => {
            let (y, m, d) = civil_from_days(i64::from(days) + PG_EPOCH_DAYS);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

fn time_of_day(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// Microseconds since 2000-01-01 -> RFC 3339 (`zone` is "Z" for timestamptz,
/// which Postgres sends in UTC, or "" for a timestamp without time zone).
fn pg_timestamp(micros: i64, zone: &str) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        micros => {
            let days = micros.div_euclid(MICROS_PER_DAY);
            let (y, m, d) = civil_from_days(days + PG_EPOCH_DAYS);
            let time = time_of_day(micros.rem_euclid(MICROS_PER_DAY));
            format!("{y:04}-{m:02}-{d:02}T{time}{zone}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for word in [digits.len() as u16, weight as u16, sign, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            b.extend_from_slice(&word.to_be_bytes());
        }
        b
    }

    #[test]
    fn postgres_numeric_keeps_every_digit() {
        assert_eq!(numeric(&numeric_bytes(1, 0, 3, &[1, 2345, 6780])).unwrap(), json!("12345.678"));
        assert_eq!(numeric(&numeric_bytes(-2, 0, 5, &[1000])).unwrap(), json!("0.00001"));
        assert_eq!(numeric(&numeric_bytes(0, 0x4000, 0, &[42])).unwrap(), json!(-42));
        assert_eq!(numeric(&numeric_bytes(1, 0, 0, &[1])).unwrap(), json!(10000));
        assert_eq!(numeric(&numeric_bytes(0, 0, 2, &[])).unwrap(), json!("0.00"));
        assert_eq!(numeric(&numeric_bytes(0, 0xC000, 0, &[])).unwrap(), json!("NaN"));
        assert!(numeric(&[0, 1]).is_err());
    }

    #[test]
    fn postgres_dates_and_times_are_rfc_3339() {
        assert_eq!(pg_timestamp(0, "Z"), "2000-01-01T00:00:00Z");
        assert_eq!(pg_timestamp(-1, "Z"), "1999-12-31T23:59:59.999999Z");
        assert_eq!(
            pg_timestamp(8825 * MICROS_PER_DAY + 3_723_500_000, ""),
            "2024-02-29T01:02:03.5"
        );
        assert_eq!(pg_date(0), "2000-01-01");
        assert_eq!(pg_date(-10_957), "1970-01-01");
        assert_eq!(pg_date(i32::MAX), "infinity");
        assert_eq!(time_of_day(45_296_000_000), "12:34:56");
    }

    #[test]
    fn postgres_uuid_is_hyphenated() {
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        assert_eq!(uuid(bytes), "00112233-4455-6677-8899-aabbccddeeff");
    }
}
