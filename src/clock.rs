//! The injected clock. Nothing else in the crate reads the system time
//! (clippy's `disallowed-methods` enforces it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that runs with the system clock plus an adjustable offset, so
/// tests can jump past expiry times while the server keeps running.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn advance(&self, d: time::Duration) {
        let ms = i64::try_from(d.whole_milliseconds()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> OffsetDateTime {
        SystemClock.now() + time::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// `2026-11-22T10:01:02.123Z`: RFC 3339, UTC, milliseconds (truncated).
const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2026-11-22T10:01:02Z`: RFC 3339, UTC, whole seconds (truncated).
const RFC3339_SECONDS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// RFC 3339 with milliseconds in UTC, e.g. `2026-11-22T10:01:02.123Z`.
pub fn rfc3339_millis(t: OffsetDateTime) -> String {
    utc(t, RFC3339_MILLIS)
}

/// RFC 3339 in whole seconds, UTC: `2026-11-22T10:01:02Z`.
pub fn rfc3339_seconds(t: OffsetDateTime) -> String {
    utc(t, RFC3339_SECONDS)
}

/// `t` in UTC with `format`; the unix time should formatting ever fail.
fn utc(t: OffsetDateTime, format: &[BorrowedFormatItem<'_>]) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// [`rfc3339_seconds`] of a unix time (the stored form of times).
pub fn rfc3339_unix(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(rfc3339_seconds)
        .unwrap_or_else(|_| t.to_string())
}

/// [`rfc3339_millis`] of unix milliseconds.
pub fn rfc3339_unix_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(rfc3339_millis)
        .unwrap_or_else(|_| ms.to_string())
}

pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats() {
        let t = datetime!(2026-11-22 10:01:02.123456 UTC);
        assert_eq!(rfc3339_millis(t), "2026-11-22T10:01:02.123Z");
        assert_eq!(rfc3339_seconds(t), "2026-11-22T10:01:02Z");
        assert_eq!(
            rfc3339_millis(datetime!(2026-01-01 00:00:00 UTC)),
            "2026-01-01T00:00:00.000Z"
        );
        // Other offsets are shown in UTC; sub-milliseconds are cut, not rounded.
        let t = datetime!(2026-11-22 11:01:02.999999 +01:00);
        assert_eq!(rfc3339_millis(t), "2026-11-22T10:01:02.999Z");
        assert_eq!(rfc3339_seconds(t), "2026-11-22T10:01:02Z");
        assert_eq!(
            parse_rfc3339("2026-11-22T10:01:02Z"),
            Some(datetime!(2026-11-22 10:01:02 UTC))
        );
    }

    proptest::proptest! {
        /// The same text as RFC 3339 of the truncated time (how it was built before).
        #[test]
        fn formats_agree_with_rfc3339(secs in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                .replace_nanosecond(nanos).unwrap();
            let whole = t.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap();
            proptest::prop_assert_eq!(rfc3339_seconds(t), whole.clone());
            let millis = format!("{}.{:03}Z", whole.trim_end_matches('Z'), t.millisecond());
            proptest::prop_assert_eq!(rfc3339_millis(t), millis);
        }
    }

    #[test]
    fn offset_clock_moves() {
        let c = OffsetClock::new();
        let a = c.now();
        c.advance(time::Duration::hours(2));
        assert!(c.now() - a >= time::Duration::hours(2));
    }
}
