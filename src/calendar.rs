//! UTC calendar dates (`YYYY-MM-DD`) and the day numbers counts are kept by (days since
//! 1970-01-01), both ways, for the proleptic Gregorian calendar.
//!
//! The conversions are Howard Hinnant's `days_from_civil` and `civil_from_days`
//! ("chrono-Compatible Low-Level Date Algorithms"): exact, branch-light, no tables.

/// Why a query parameter is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date (YYYY-MM-DD)")]
pub struct DateError(pub String);

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (years 1970 to 9999).
pub fn parse_date(text: &str) -> Result<i64, DateError> {
    let invalid = || DateError(text.chars().take(32).collect());
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(invalid());
    }
    let number = |range: std::ops::Range<usize>| -> Result<u32, DateError> {
        let digits = &text[range];
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        digits.parse().map_err(|_| invalid())
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(invalid());
    }
    Ok(days_from_civil(i64::from(year), month, day))
}

/// Writes day `days` (since 1970-01-01) as `YYYY-MM-DD`.
pub fn write_date(out: &mut Vec<u8>, days: i64) {
    let (year, month, day) = civil_from_days(days);
    out.extend_from_slice(format!("{year:04}-{month:02}-{day:02}").as_bytes());
}

/// Writes a time in milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC,
/// RFC 3339, whole seconds).
pub fn write_timestamp(out: &mut Vec<u8>, millis: i64) {
    let seconds = millis.div_euclid(1000);
    write_date(out, seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    out.extend_from_slice(format!("T{hour:02}:{minute:02}:{second:02}Z").as_bytes());
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(days: i64) -> String {
        let mut out = Vec::new();
        write_date(&mut out, days);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn known_dates_convert_both_ways() {
        // `date -u -d @<seconds> +%F` for days × 86,400 seconds.
        for (days, text) in [
            (0, "1970-01-01"),
            (59, "1970-03-01"),
            (11_016, "2000-02-29"),
            (19_999, "2024-10-03"),
            (20_000, "2024-10-04"),
            (20_789, "2026-12-02"),
            (2_932_896, "9999-12-31"),
        ] {
            assert_eq!(date(days), text);
            assert_eq!(parse_date(text), Ok(days), "{text}");
        }
        for days in 0..40_000 {
            assert_eq!(parse_date(&date(days)), Ok(days));
        }
    }

    #[test]
    fn what_is_not_a_date_is_refused() {
        for bad in [
            "",
            "2024-1-01",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29",
            "1900-02-28",
            "2024/10/04",
            "2024-10-0x",
            "+024-10-04",
            "2024-10-041",
            "１９７０-01-01",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        let mut out = Vec::new();
        write_timestamp(&mut out, 1_796_215_245_999);
        assert_eq!(String::from_utf8_lossy(&out), "2026-12-02T12:40:45Z");
        out.clear();
        write_timestamp(&mut out, 0);
        assert_eq!(String::from_utf8_lossy(&out), "1970-01-01T00:00:00Z");
    }
}
