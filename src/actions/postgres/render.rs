//! Values of a result row as text (booleans as `true`/`false`, as the
//! runbook language writes them). Rows arrive in PostgreSQL's binary
//! format, so the common types are decoded here: booleans, integers,
//! floats, numeric, text of every kind, json, uuid, bytea, dates, times,
//! timestamps (timestamptz in UTC) and intervals. Any other type shows as
//! `(type NAME cannot be shown)`; cast it to text in the query to see it.

use std::fmt::Write;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

/// The bytes of one value, whatever its type, borrowed from the row.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// The most of one value that is kept and shown: a 200 MB value is not
/// copied into the log, the outputs and the journal.
pub(super) const VALUE_CAP: usize = 64 << 10;

pub(super) fn row(row: &Row) -> Vec<Option<String>> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| match row.try_get::<_, Option<Raw>>(i) {
            Ok(Some(Raw(bytes))) => Some(
                capped(column.type_(), bytes)
                    .unwrap_or_else(|| format!("(type {} cannot be shown)", column.type_())),
            ),
            Ok(None) => None,
            Err(_) => Some(format!("(type {} cannot be shown)", column.type_())),
        })
        .collect()
}

/// `value`, for a value longer than `VALUE_CAP` its beginning only (text
/// cut at a character, bytea at a byte), saying how long it was.
fn capped(ty: &Type, b: &[u8]) -> Option<String> {
    if b.len() <= VALUE_CAP {
        return value(ty, b);
    }
    let head = if *ty == Type::BYTEA {
        value(ty, &b[..VALUE_CAP / 2])?
    } else {
        let cut = &b[..VALUE_CAP];
        let cut = match std::str::from_utf8(cut) {
            Ok(_) => cut,
            Err(e) => &cut[..e.valid_up_to()],
        };
        value(ty, cut)?
    };
    Some(format!(
        "{head}… (cut: the value is {} bytes; runbook keeps the first {})",
        b.len(),
        VALUE_CAP
    ))
}

/// One value as PostgreSQL would print it, or `None` for a type not known
/// here or bytes that do not fit it.
pub(super) fn value(ty: &Type, b: &[u8]) -> Option<String> {
    let text = match *ty {
        Type::BOOL => (if *b.first()? != 0 { "true" } else { "false" }).to_string(),
        Type::INT2 => i16::from_be_bytes(b.try_into().ok()?).to_string(),
        Type::INT4 => i32::from_be_bytes(b.try_into().ok()?).to_string(),
        Type::INT8 => i64::from_be_bytes(b.try_into().ok()?).to_string(),
        Type::OID => u32::from_be_bytes(b.try_into().ok()?).to_string(),
        Type::FLOAT4 => f32::from_be_bytes(b.try_into().ok()?).to_string(),
        Type::FLOAT8 => f64::from_be_bytes(b.try_into().ok()?).to_string(),
        Type::NUMERIC => numeric(b)?,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::XML
        | Type::CHAR => std::str::from_utf8(b).ok()?.to_string(),
        Type::JSONB => std::str::from_utf8(b.strip_prefix(&[1])?).ok()?.to_string(),
        Type::UUID => uuid(b)?,
        Type::BYTEA => b.iter().fold("\\x".to_string(), |mut s, byte| {
            let _ = write!(s, "{byte:02x}");
            s
        }),
        Type::DATE => date(i32::from_be_bytes(b.try_into().ok()?))?,
        Type::TIME => time_of_day(i64::from_be_bytes(b.try_into().ok()?)),
        Type::TIMESTAMP => timestamp(i64::from_be_bytes(b.try_into().ok()?))?,
        Type::TIMESTAMPTZ => {
            let t = timestamp(i64::from_be_bytes(b.try_into().ok()?))?;
            if t.ends_with("infinity") {
                t
            } else {
                format!("{t}+00")
            }
        }
        Type::INTERVAL => interval(b)?,
        _ => {
            // Enums and domains over text arrive as their text.
            if let tokio_postgres::types::Kind::Enum(_) = ty.kind() {
                std::str::from_utf8(b).ok()?.to_string()
            } else {
                return None;
            }
        }
    };
    Some(text)
}

/// The binary numeric: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then the digits.
fn numeric(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let digit = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        let _ = write!(text, "{}", digit(0));
        for i in 1..=weight {
            let _ = write!(text, "{:04}", digit(i));
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
        text.push('.');
        text.push_str(&fraction);
    }
    Some(text)
}

fn uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn epoch() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap_or_default()
        .and_time(chrono::NaiveTime::MIN)
}

/// Days since 2000-01-01.
fn date(days: i32) -> Option<String> {
    match days {
        i32::MAX => Some("infinity".into()),
        i32::MIN => Some("-infinity".into()),
        _ => {
            // Beyond chrono's years (PostgreSQL goes further): not shown.
            let d = epoch()
                .date()
                .checked_add_signed(chrono::Duration::days(i64::from(days)))?;
            Some(d.format("%Y-%m-%d").to_string())
        }
    }
}

/// Microseconds since 2000-01-01 00:00.
fn timestamp(micros: i64) -> Option<String> {
    match micros {
        i64::MAX => Some("infinity".into()),
        i64::MIN => Some("-infinity".into()),
        _ => {
            let t = epoch().checked_add_signed(chrono::Duration::microseconds(micros))?;
            let mut text = t.format("%Y-%m-%d %H:%M:%S").to_string();
            let frac = chrono::Timelike::nanosecond(&t) / 1000;
            if frac != 0 {
                let f = format!("{frac:06}");
                text.push('.');
                text.push_str(f.trim_end_matches('0'));
            }
            Some(text)
        }
    }
}

/// Microseconds since midnight, as `HH:MM:SS[.ffffff]`.
fn time_of_day(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (secs, frac) = (m / 1_000_000, m % 1_000_000);
    let mut text = format!(
        "{sign}{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let f = format!("{frac:06}");
        text.push('.');
        text.push_str(f.trim_end_matches('0'));
    }
    text
}

/// Microseconds, days and months, as PostgreSQL's default style prints them.
fn interval(b: &[u8]) -> Option<String> {
    let micros = i64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
    let days = i32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
    let months = i32::from_be_bytes(b.get(12..16)?.try_into().ok()?);
    let mut parts = Vec::new();
    let unit = |n: i32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if months / 12 != 0 {
        parts.push(unit(months / 12, "year", "years"));
    }
    if months % 12 != 0 {
        parts.push(unit(months % 12, "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days, "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        parts.push(time_of_day(micros));
    }
    Some(parts.join(" "))
}
