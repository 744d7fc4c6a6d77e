//! The store's rotation schedule, from `DescribeSecret`.

use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::types::RotationRulesType;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The rotation interval of a secret whose rotation is enabled (or not said to be disabled):
/// its `ScheduleExpression` when that is `rate(N days)` / `rate(N hours)`, else
/// `AutomaticallyAfterDays`. `cron(...)` schedules have no fixed interval and give `None`.
pub(crate) fn rotation_interval(describe: &DescribeSecretOutput) -> Option<Duration> {
    if describe.rotation_enabled() == Some(false) {
        return None;
    }
    interval_of_rules(describe.rotation_rules()?)
}

fn interval_of_rules(rules: &RotationRulesType) -> Option<Duration> {
    rules
        .schedule_expression()
        .and_then(parse_rate)
        .or_else(|| {
            rules
                .automatically_after_days()
                .and_then(|days| u64::try_from(days).ok())
                .filter(|days| *days > 0)
                .map(|days| Duration::from_secs(days * DAY))
        })
}

/// `rate(N day[s])` or `rate(N hour[s])`, N > 0.
pub(crate) fn parse_rate(expression: &str) -> Option<Duration> {
    let inner = expression
        .trim()
        .strip_prefix("rate(")?
        .strip_suffix(')')?
        .trim();
    let (count, unit) = inner.split_once(char::is_whitespace)?;
    let count: u64 = count.parse().ok().filter(|n| *n > 0)?;
    let unit = match unit.trim() {
        "day" | "days" => DAY,
        "hour" | "hours" => HOUR,
        _ => return None,
    };
    count.checked_mul(unit).map(Duration::from_secs)
}

/// `NextRotationDate`, when rotation is not disabled.
pub(crate) fn next_rotation_at(describe: &DescribeSecretOutput) -> Option<SystemTime> {
    if describe.rotation_enabled() == Some(false) {
        return None;
    }
    describe
        .next_rotation_date()
        .and_then(|d| SystemTime::try_from(*d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::DateTime;

    #[test]
    fn rates_parse() {
        assert_eq!(
            parse_rate("rate(7 days)"),
            Some(Duration::from_secs(7 * DAY))
        );
        assert_eq!(parse_rate("rate(1 day)"), Some(Duration::from_secs(DAY)));
        assert_eq!(
            parse_rate(" rate(4 hours) "),
            Some(Duration::from_secs(4 * HOUR))
        );
        assert_eq!(parse_rate("rate(1 hour)"), Some(Duration::from_secs(HOUR)));
        for bad in [
            "rate(0 days)",
            "rate(2 weeks)",
            "cron(0 16 1,15 * ? *)",
            "rate(x days)",
            "",
        ] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn rules_prefer_the_schedule_and_respect_disabled_rotation() {
        let rules = RotationRulesType::builder()
            .automatically_after_days(30)
            .schedule_expression("rate(12 hours)")
            .build();
        let describe = DescribeSecretOutput::builder()
            .rotation_enabled(true)
            .rotation_rules(rules.clone())
            .next_rotation_date(DateTime::from_secs(1_900_000_000))
            .build();
        assert_eq!(
            rotation_interval(&describe),
            Some(Duration::from_secs(12 * HOUR))
        );
        assert_eq!(
            next_rotation_at(&describe),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000))
        );

        let cron = RotationRulesType::builder()
            .automatically_after_days(30)
            .schedule_expression("cron(0 16 1,15 * ? *)")
            .build();
        let describe = DescribeSecretOutput::builder().rotation_rules(cron).build();
        assert_eq!(
            rotation_interval(&describe),
            Some(Duration::from_secs(30 * DAY))
        );

        let disabled = DescribeSecretOutput::builder()
            .rotation_enabled(false)
            .rotation_rules(rules)
            .next_rotation_date(DateTime::from_secs(1_900_000_000))
            .build();
        assert_eq!(rotation_interval(&disabled), None);
        assert_eq!(next_rotation_at(&disabled), None);

        // moto leaves `AutomaticallyAfterDays: 0` on a secret that never had rotation.
        let zero = DescribeSecretOutput::builder()
            .rotation_rules(
                RotationRulesType::builder()
                    .automatically_after_days(0)
                    .build(),
            )
            .build();
        assert_eq!(rotation_interval(&zero), None);
    }
}
