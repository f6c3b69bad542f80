//! Reading an HTTP `Retry-After` header value (RFC 9110, section 10.2.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a `Retry-After` value asks to wait, measured from `now`: either delay-seconds
/// (`"120"`) or an IMF-fixdate (`"Sun, 06 Nov 1994 08:49:37 GMT"`). A date in the past gives
/// zero. `None` when the value is neither; never panics on what a server sends.
///
/// Pass the result to [`Transience::TransientAfter`](crate::Transience::TransientAfter).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use counterfoil_breaker::parse_retry_after;
///
/// assert_eq!(parse_retry_after("120", SystemTime::now()), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_imf_fixdate(value)?;
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(at))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds since the Unix epoch of `"Sun, 06 Nov 1994 08:49:37 GMT"`.
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    let mut parts = s.split_ascii_whitespace();
    let weekday = parts.next()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() || !weekday.ends_with(',') {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let mut hms = time.split(':');
    let (h, m, sec): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 || !(1..=31).contains(&day) {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3_600 + m * 60 + sec)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delay_seconds_and_dates() {
        let now = at(784_111_777 - 10);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(2_000_000_000)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_imf_fixdate("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(
            parse_imf_fixdate("Fri, 31 Dec 2100 23:59:59 GMT"),
            Some(4_133_980_799)
        );
    }

    #[test]
    fn garbage_is_none() {
        let now = at(0);
        for v in [
            "",
            "-5",
            "1.5",
            "soon",
            "99999999999999999999999",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
        ] {
            assert_eq!(parse_retry_after(v, now), None, "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_retry_after(&s, SystemTime::now());
        }

        #[test]
        fn days_round_trip(d in 0i64..2_900_000) {
            let (y, m, day) = civil_from_days(d);
            prop_assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    /// The inverse, for the property test only.
    fn civil_from_days(z: i64) -> (i64, u32, u32) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (if m <= 2 { y + 1 } else { y }, m, d)
    }
}
