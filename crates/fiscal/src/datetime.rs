//! The device's civil date and time (`DD-MM-YY HH:MM:SS` on the wire).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A civil date and time as a fiscal device prints it, without a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceDateTime {
    /// Year, e.g. 2026.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
}

impl DeviceDateTime {
    /// The civil time (UTC) of `millis` since the Unix epoch.
    pub fn from_unix_millis(millis: i64) -> Self {
        let secs = millis.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = if m <= 2 { y + 1 } else { y };
        Self {
            year: u16::try_from(y.clamp(0, 9999)).unwrap_or(0),
            month: m as u8,
            day: d as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// Parses `DD-MM-YY HH:MM:SS` (years 2000..=2099).
    pub fn parse_wire(s: &str) -> Option<Self> {
        let b = s.trim().as_bytes();
        if b.len() != 17 {
            return None;
        }
        let num = |i: usize| -> Option<u8> {
            let (h, l) = (b[i], b[i + 1]);
            if h.is_ascii_digit() && l.is_ascii_digit() {
                Some((h - b'0') * 10 + (l - b'0'))
            } else {
                None
            }
        };
        if b[2] != b'-' || b[5] != b'-' || b[8] != b' ' || b[11] != b':' || b[14] != b':' {
            return None;
        }
        let v = Self {
            day: num(0)?,
            month: num(3)?,
            year: 2000 + u16::from(num(6)?),
            hour: num(9)?,
            minute: num(12)?,
            second: num(15)?,
        };
        let ok = (1..=12).contains(&v.month)
            && (1..=31).contains(&v.day)
            && v.hour < 24
            && v.minute < 60
            && v.second < 60;
        ok.then_some(v)
    }
}

impl fmt::Display for DeviceDateTime {
    /// Formats as the wire form `DD-MM-YY HH:MM:SS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.day,
            self.month,
            self.year % 100,
            self.hour,
            self.minute,
            self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_and_wire_form() {
        let t = DeviceDateTime::from_unix_millis(1_700_000_000_000);
        assert_eq!(t.to_string(), "14-11-23 22:13:20");
        assert_eq!(DeviceDateTime::parse_wire("14-11-23 22:13:20"), Some(t));
        assert_eq!(DeviceDateTime::parse_wire("14-13-23 22:13:20"), None);
        assert_eq!(DeviceDateTime::parse_wire("garbage"), None);
    }
}
