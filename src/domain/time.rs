//! ServiceNow date-times and human durations.
//!
//! The Table API returns `glide_date_time` values as `YYYY-MM-DD HH:MM:SS` in UTC when
//! `sysparm_display_value=false`. When the keeper writes with `sysparm_input_display_value=true`
//! (needed so the instance encrypts `token_received`), the instance reads date-times in the
//! integration user's time zone, so writes are rendered in that zone.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use std::time::Duration;

/// The format of every ServiceNow database date-time value.
const SN_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Why a ServiceNow date-time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a ServiceNow date-time (expected YYYY-MM-DD HH:MM:SS): {shown:?}")]
pub struct DateTimeError {
    /// The offending value, shortened so a huge value cannot flood a log line.
    shown: String,
}

/// Parses a database value (`YYYY-MM-DD HH:MM:SS`, UTC). An empty value is `Ok(None)`: ServiceNow
/// sends `""` for an empty date-time.
pub fn parse_sn_datetime(value: &str) -> Result<Option<Timestamp>, DateTimeError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let err = || DateTimeError {
        shown: value.chars().take(40).collect(),
    };
    // The strict shape check first: jiff's parser accepts more (e.g. a `T` or fractions) and the
    // keeper must not silently accept a display value in some user format.
    let bytes = value.as_bytes();
    let shape_ok = bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b' ',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(err());
    }
    // The shape is checked, so the fields are digits: build the date-time directly (discovery
    // reads two per row, every cycle). A value that does not make a date-time (month 13, a
    // leap second) goes through the general parser, which decides as before.
    let civil = match civil_from_digits(bytes) {
        Some(civil) => civil,
        None => DateTime::strptime(SN_FORMAT, value).map_err(|_| err())?,
    };
    TimeZone::UTC
        .to_timestamp(civil)
        .map(Some)
        .map_err(|_| err())
}

/// `YYYY-MM-DD HH:MM:SS` whose shape is already checked, as a civil date-time; `None` when the
/// numbers make no date-time or a second is 60.
fn civil_from_digits(bytes: &[u8]) -> Option<DateTime> {
    let number = |from: usize, to: usize| {
        bytes
            .get(from..to)?
            .iter()
            .try_fold(0i32, |n, b| Some(n * 10 + i32::from(b.checked_sub(b'0')?)))
    };
    let small = |from: usize| i8::try_from(number(from, from + 2)?).ok();
    let second = small(17)?;
    if second >= 60 {
        return None;
    }
    DateTime::new(
        i16::try_from(number(0, 4)?).ok()?,
        small(5)?,
        small(8)?,
        small(11)?,
        small(14)?,
        second,
        0,
    )
    .ok()
}

/// Renders a timestamp as a ServiceNow database value (UTC).
pub fn format_sn_utc(ts: Timestamp) -> String {
    ts.to_zoned_datetime(TimeZone::UTC)
        .strftime(SN_FORMAT)
        .to_string()
}

/// Serializes a timestamp as ServiceNow writes date-times in UTC (`YYYY-MM-DD HH:MM:SS`), for
/// JSON reports that show what the instance would.
pub fn serialize_sn_utc<S: serde::Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_sn_utc(*ts))
}

/// Renders a timestamp as the wall-clock time in `tz`, in the ServiceNow internal format. This is
/// what a write with `sysparm_input_display_value=true` must carry for the instance to store the
/// intended UTC instant.
pub fn format_sn_in_zone(ts: Timestamp, tz: &TimeZone) -> String {
    ts.to_zoned_datetime(tz.clone())
        .strftime(SN_FORMAT)
        .to_string()
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration (use e.g. \"90s\", \"3m\", \"1h30m\", \"7d\")")]
    Empty,
    /// A number without a unit, an unknown unit, or stray characters.
    #[error(
        "invalid duration {0:?} (use a number and a unit: ms, s, m, h, d, w — e.g. \"90s\", \"3m\", \"7d\")"
    )]
    Invalid(String),
    /// The value does not fit.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses durations such as `"90s"`, `"3m"`, `"1h30m"`, `"7d"`, `"250ms"`, `"2w"`.
/// Whitespace between parts is allowed; a bare number is rejected, so a forgotten unit is an
/// error rather than a surprise.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(trimmed.chars().take(40).collect());
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow(trimmed.to_string()))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3_600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "w" => number.checked_mul(604_800).map(Duration::from_secs),
            _ => return Err(invalid()),
        }
        .ok_or_else(|| DurationError::Overflow(trimmed.to_string()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow(trimmed.to_string()))?;
    }
    Ok(total)
}

/// Renders a duration compactly for people: `"45s"`, `"12m"`, `"3h 5m"`, `"6d 2h"`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7_199 => format!("{}m", secs / 60),
        7_200..=172_799 => {
            let (h, m) = (secs / 3_600, (secs % 3_600) / 60);
            if m == 0 {
                format!("{h}h")
            } else {
                format!("{h}h {m}m")
            }
        }
        _ => {
            let (d, h) = (secs / 86_400, (secs % 86_400) / 3_600);
            if h == 0 {
                format!("{d}d")
            } else {
                format!("{d}d {h}h")
            }
        }
    }
}

/// Signed distance from `now` to `then`, rendered for people: `"in 12m"` or `"3d 2h ago"`.
pub fn relative(now: Timestamp, then: Timestamp) -> String {
    let diff = then.as_second() - now.as_second();
    let magnitude = Duration::from_secs(diff.unsigned_abs());
    if diff >= 0 {
        format!("in {}", human_duration(magnitude))
    } else {
        format!("{} ago", human_duration(magnitude))
    }
}

/// `now + d`, saturating at the largest representable timestamp instead of failing: an absurd
/// `expires_in` from a provider must not crash the keeper.
pub fn add(now: Timestamp, d: Duration) -> Timestamp {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    now.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MAX)
}

/// `now - d`, saturating at the smallest representable timestamp.
pub fn sub(now: Timestamp, d: Duration) -> Timestamp {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    now.checked_sub(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_database_values() {
        let ts = parse_sn_datetime("2026-07-01 10:05:00").unwrap().unwrap();
        assert_eq!(ts.to_string(), "2026-07-01T10:05:00Z");
        assert_eq!(format_sn_utc(ts), "2026-07-01 10:05:00");
        assert_eq!(parse_sn_datetime("").unwrap(), None);
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "2026-07-01T10:05:00",
            "01-07-2026 10:05:00",
            "2026-07-01 10:05",
            "2026-13-01 10:05:00",
            "2026-02-30 10:05:00",
            "now",
        ] {
            assert!(parse_sn_datetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_in_user_zones() {
        let ts = parse_sn_datetime("2026-07-01 12:00:00").unwrap().unwrap();
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        assert_eq!(format_sn_in_zone(ts, &la), "2026-07-01 05:00:00");
        assert_eq!(format_sn_in_zone(ts, &kolkata), "2026-07-01 17:30:00");
        assert_eq!(format_sn_in_zone(ts, &TimeZone::UTC), "2026-07-01 12:00:00");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(
            parse_duration("1h 30m").unwrap(),
            Duration::from_secs(5_400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "m", "3 minutes", "-5s", "1.5h", "3mx"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn human_rendering() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 300)), "3h 5m");
        assert_eq!(
            human_duration(Duration::from_secs(86_400 * 6 + 7_200)),
            "6d 2h"
        );
    }

    proptest! {
        #[test]
        fn digits_read_as_the_general_parser_reads_them(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..26, mi in 0u32..62, sec in 0u32..62
        ) {
            let value = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{sec:02}");
            let general = DateTime::strptime(SN_FORMAT, &value)
                .ok()
                .and_then(|c| TimeZone::UTC.to_timestamp(c).ok());
            prop_assert_eq!(parse_sn_datetime(&value).ok().flatten(), general);
        }

        #[test]
        fn datetime_round_trips(secs in 0i64..253_402_300_799) {
            let ts = Timestamp::from_second(secs).unwrap();
            let text = format_sn_utc(ts);
            prop_assert_eq!(parse_sn_datetime(&text).unwrap(), Some(ts));
        }

        #[test]
        fn datetime_parser_never_panics(s in ".{0,40}") {
            let _ = parse_sn_datetime(&s);
        }

        #[test]
        fn duration_parser_never_panics(s in ".{0,30}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn durations_add_up(a in 0u64..100_000, b in 0u64..100_000) {
            let d = parse_duration(&format!("{a}h{b}s")).unwrap();
            prop_assert_eq!(d, Duration::from_secs(a * 3600 + b));
        }
    }
}
