//! Date-time handling the way the instance does it: the database holds UTC
//! `YYYY-MM-DD HH:MM:SS`; display values and `sysparm_input_display_value=true` input use the
//! user's time zone and date format.

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};

/// strftime pattern of the database (and default display) format.
pub(crate) const DB_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Formats an instant as the database stores it.
pub(crate) fn format_utc(ts: Timestamp) -> String {
    TimeZone::UTC
        .to_datetime(ts)
        .strftime(DB_FORMAT)
        .to_string()
}

/// Parses a stored (UTC) value; a bare date means midnight, which is how a glide_date_time
/// accepts a date-only value.
pub(crate) fn parse_utc(value: &str) -> Option<Timestamp> {
    parse_civil(value, "%Y-%m-%d").and_then(|dt| TimeZone::UTC.to_timestamp(dt).ok())
}

/// Parses `value` as a civil date-time with `date_pattern` for the date part and `HH:MM:SS`
/// (or nothing, meaning midnight) for the time part.
fn parse_civil(value: &str, date_pattern: &str) -> Option<DateTime> {
    let value = value.trim();
    if let Ok(dt) = DateTime::strptime(format!("{date_pattern} %H:%M:%S"), value) {
        return Some(dt);
    }
    jiff::civil::Date::strptime(date_pattern, value)
        .ok()
        .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
}

/// Resolves an IANA name the way the instance resolves `sys_user.time_zone`: empty or unknown
/// names fall back to the system time zone, and an unknown system zone to UTC.
pub(crate) fn resolve_tz(user_tz: &str, system_tz: &str) -> TimeZone {
    [user_tz, system_tz]
        .iter()
        .filter(|name| !name.is_empty())
        .find_map(|name| TimeZone::get(name).ok())
        .unwrap_or(TimeZone::UTC)
}

/// Translates a ServiceNow (Java-style) date format such as `dd-MM-yyyy` into a strftime
/// pattern; empty means the system default `yyyy-MM-dd`.
pub(crate) fn date_pattern(java_format: &str) -> String {
    if java_format.is_empty() {
        return "%Y-%m-%d".to_owned();
    }
    java_format
        .replace("yyyy", "%Y")
        .replace("MM", "%m")
        .replace("dd", "%d")
}

/// The display value of a stored UTC date-time for a user.
pub(crate) fn to_display(raw: &str, tz: &TimeZone, java_format: &str) -> String {
    match parse_utc(raw) {
        Some(ts) => tz
            .to_datetime(ts)
            .strftime(&format!("{} %H:%M:%S", date_pattern(java_format)))
            .to_string(),
        None => raw.to_owned(),
    }
}

/// Reads a user-entered (display) date-time in the user's zone and format; the internal
/// `yyyy-MM-dd` form is accepted too, as the platform does.
pub(crate) fn from_display(input: &str, tz: &TimeZone, java_format: &str) -> Option<Timestamp> {
    let pattern = date_pattern(java_format);
    let civil = parse_civil(input, &pattern).or_else(|| parse_civil(input, "%Y-%m-%d"))?;
    tz.to_timestamp(civil).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn los_angeles_and_kolkata_convert_to_utc() {
        let la = resolve_tz("America/Los_Angeles", "UTC");
        let ts = from_display("2026-07-01 05:00:00", &la, "").map(format_utc);
        assert_eq!(ts.as_deref(), Some("2026-07-01 12:00:00"));
        let kolkata = resolve_tz("Asia/Kolkata", "UTC");
        let ts = from_display("2026-07-01 05:00:00", &kolkata, "").map(format_utc);
        assert_eq!(ts.as_deref(), Some("2026-06-30 23:30:00"));
    }

    #[test]
    fn display_uses_zone_and_format() {
        let la = resolve_tz("America/Los_Angeles", "UTC");
        assert_eq!(
            to_display("2026-07-01 12:00:00", &la, "dd-MM-yyyy"),
            "01-07-2026 05:00:00"
        );
        let ts = from_display("01-07-2026 05:00:00", &la, "dd-MM-yyyy").map(format_utc);
        assert_eq!(ts.as_deref(), Some("2026-07-01 12:00:00"));
    }

    #[test]
    fn unknown_zone_falls_back() {
        let tz = resolve_tz("Mars/Olympus", "Asia/Kolkata");
        assert_eq!(tz.iana_name(), Some("Asia/Kolkata"));
        assert_eq!(resolve_tz("", "nope"), TimeZone::UTC);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(parse_utc("tomorrow").is_none());
        assert!(parse_utc("2026-13-01 00:00:00").is_none());
        assert_eq!(
            parse_utc("2026-07-01").map(format_utc).as_deref(),
            Some("2026-07-01 00:00:00")
        );
    }
}
