//! iMS timestamps.
//!
//! Accepted forms:
//! * RFC 3339 with any offset (`2002-05-27T12:34:34Z`,
//!   `2002-05-27T14:34:34+02:00`), converted to UTC. Fractional seconds are
//!   **rejected** (even `.000`) so that normalisation never loses
//!   information; leap seconds (`:60`) are rejected.
//! * The paper's `DD.MM.YYYY HH:MM:SS`, read as UTC.
//!
//! The UTC year must be within 1970–9999. The normal form is
//! `YYYY-MM-DDTHH:MM:SSZ`.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::error::ImsError;

const MIN_YEAR: i32 = 1970;
const MAX_YEAR: i32 = 9999;

/// Parses a timestamp in one of the accepted forms into UTC, whole seconds.
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, ImsError> {
    let ts = if s.len() == 19 && s.as_bytes().get(2) == Some(&b'.') {
        parse_paper(s)?
    } else {
        if s.contains('.') {
            return Err(ImsError::malformed(
                "timestamp must not have fractional seconds",
            ));
        }
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
            ImsError::malformed("timestamp must be RFC 3339 or DD.MM.YYYY HH:MM:SS")
        })?;
        t.checked_to_offset(UtcOffset::UTC)
            .ok_or_else(|| ImsError::malformed("timestamp out of range"))?
    };
    if ts.nanosecond() != 0 {
        return Err(ImsError::malformed(
            "timestamp must not have fractional or leap seconds",
        ));
    }
    if !(MIN_YEAR..=MAX_YEAR).contains(&ts.year()) {
        return Err(ImsError::malformed(
            "timestamp year must be within 1970-9999",
        ));
    }
    Ok(ts)
}

fn digits(s: &[u8], from: usize, len: usize) -> Option<u32> {
    let part = s.get(from..from + len)?;
    part.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// `DD.MM.YYYY HH:MM:SS` as UTC.
fn parse_paper(s: &str) -> Result<OffsetDateTime, ImsError> {
    let err = || ImsError::malformed("timestamp must be RFC 3339 or DD.MM.YYYY HH:MM:SS");
    let b = s.as_bytes();
    if b.len() != 19
        || b.get(2) != Some(&b'.')
        || b.get(5) != Some(&b'.')
        || b.get(10) != Some(&b' ')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return Err(err());
    }
    let day = digits(b, 0, 2).ok_or_else(err)?;
    let month = digits(b, 3, 2).ok_or_else(err)?;
    let year = digits(b, 6, 4).ok_or_else(err)?;
    let hour = digits(b, 11, 2).ok_or_else(err)?;
    let minute = digits(b, 14, 2).ok_or_else(err)?;
    let second = digits(b, 17, 2).ok_or_else(err)?;
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(err)?;
    let year = i32::try_from(year).map_err(|_| err())?;
    let day = u8::try_from(day).map_err(|_| err())?;
    let date = Date::from_calendar_date(year, month, day).map_err(|_| err())?;
    let (h, m, sec) = (
        u8::try_from(hour).map_err(|_| err())?,
        u8::try_from(minute).map_err(|_| err())?,
        u8::try_from(second).map_err(|_| err())?,
    );
    let time = Time::from_hms(h, m, sec).map_err(|_| err())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Formats as `YYYY-MM-DDTHH:MM:SSZ` (converted to UTC, sub-seconds dropped).
pub fn format_timestamp(ts: OffsetDateTime) -> String {
    let t = ts.checked_to_offset(UtcOffset::UTC).unwrap_or(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn accepts_forms() {
        let want = datetime!(2002-05-27 12:34:34 UTC);
        for s in [
            "2002-05-27T12:34:34Z",
            "2002-05-27T14:34:34+02:00",
            "2002-05-27T07:04:34-05:30",
            "27.05.2002 12:34:34",
        ] {
            let t = parse_timestamp(s).unwrap();
            assert_eq!(t, want, "{s}");
            assert_eq!(t.offset(), UtcOffset::UTC, "{s}");
            assert_eq!(format_timestamp(t), "2002-05-27T12:34:34Z");
        }
        // Offset conversion across a date boundary.
        assert_eq!(
            format_timestamp(parse_timestamp("2024-01-01T00:30:00+01:00").unwrap()),
            "2023-12-31T23:30:00Z"
        );
    }

    #[test]
    fn rejects_bad_timestamps() {
        for s in [
            "",
            "2002-05-27T12:34:34.5Z",
            "2002-05-27T12:34:34.000Z",
            "2002-05-27 12:34:34",
            "2002-05-27T12:34:34",
            "2002-05-27T12:34:60Z",
            "2002-02-30T12:34:34Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "27.05.2002 12:34",
            "27.05.2002T12:34:34",
            "32.05.2002 12:34:34",
            "27.13.2002 12:34:34",
            "29.02.2001 12:34:34",
            "27.05.2002 24:00:00",
            "27.05.2002 12:34:60",
            "27.05.+002 12:34:34",
            "2002-05-27T12:34:34Z ",
            "now",
        ] {
            assert!(parse_timestamp(s).is_err(), "{s:?} accepted");
        }
        assert!(parse_timestamp("29.02.2004 00:00:00").is_ok());
    }
}
