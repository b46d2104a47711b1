//! RFC 3339 timestamps as fedora-messaging writes them in its `sent-at` header: UTC,
//! whole seconds, `+00:00` offset (Python's `datetime.isoformat()`), e.g.
//! `2019-07-30T19:12:22+00:00`.

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS+00:00`.
pub fn format(timestamp_ms: u64) -> String {
    let seconds = (timestamp_ms / 1000) as i64;
    let (days, second_of_day) = (seconds.div_euclid(DAY), seconds.rem_euclid(DAY));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into milliseconds since the epoch;
/// `None` for anything else or a time before 1970.
pub fn parse(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let separators_ok = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (:60) is read as the last second of the minute.
    let second = second.min(59);
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first_three = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = first_three.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let offset = rest.as_bytes();
            if offset.len() != 6 || offset[3] != b':' {
                return None;
            }
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * DAY + hour * 3600 + minute * 60 + second - offset_seconds;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known "days from
/// civil" computation over 400-year eras).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python_isoformat() {
        assert_eq!(format(0), "1970-01-01T00:00:00+00:00");
        // 2019-07-30T19:12:22Z, the example of fedora-messaging's wire format document.
        assert_eq!(format(1_564_513_942_123), "2019-07-30T19:12:22+00:00");
        assert_eq!(format(951_782_400_000), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse("2019-07-30T19:12:22+00:00"), Some(1_564_513_942_000));
        assert_eq!(parse("2019-07-30T19:12:22Z"), Some(1_564_513_942_000));
        assert_eq!(
            parse("2019-07-30T21:12:22.5+02:00"),
            Some(1_564_513_942_500)
        );
        assert_eq!(
            parse("2019-07-30T19:12:22.123456+00:00"),
            Some(1_564_513_942_123)
        );
        for bad in [
            "",
            "2019-07-30",
            "2019-07-30T19:12:22",
            "2019-13-01T00:00:00Z",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trips_whole_seconds() {
        for seconds in [0u64, 86_399, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse(&format(seconds * 1000)), Some(seconds * 1000));
        }
    }
}
