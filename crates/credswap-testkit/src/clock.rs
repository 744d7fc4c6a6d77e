//! UTC timestamps as PostgreSQL writes and reads them (`2026-12-06 14:10:09.123`), without a
//! date-time crate: the server log's `%m` prefix and `VALID UNTIL` literals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `at` as `YYYY-MM-DD HH:MM:SS.mmm+00`, a timestamp literal PostgreSQL reads.
pub(crate) fn timestamp_literal(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let day = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}+00",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        since.subsec_millis()
    )
}

/// The time at the start of a server log line (`%m`: `2026-12-06 14:10:09.123 UTC ...`).
pub(crate) fn parse_log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.get(..23)?;
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let millis = u64::try_from(num(20..23)?).ok()?;
    Some(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?) + Duration::from_millis(millis),
    )
}

/// The most of `times` that fall in any window of `window` (`[t, t + window)`).
pub fn most_in_any(times: &[SystemTime], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end]
            .duration_since(sorted[start])
            .unwrap_or_default()
            >= window
        {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_round_trips_through_the_log_format() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_566_209_123);
        let literal = timestamp_literal(at);
        assert_eq!(literal, "2026-12-06 14:10:09.123+00");
        let line = format!("{} UTC [42] LOG:  connection authorized", &literal[..23]);
        assert_eq!(parse_log_time(&line), Some(at));
        assert_eq!(parse_log_time("not a log line"), None);
    }

    #[test]
    fn counts_the_busiest_window() {
        let t = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        let times = [t(0), t(500), t(999), t(1000), t(1400), t(3000)];
        assert_eq!(
            most_in_any(&times, Duration::from_secs(1)),
            4,
            "500 to 1400"
        );
        assert_eq!(most_in_any(&[], Duration::from_secs(1)), 0);
    }
}
