//! Sentry's rate-limit answers: `X-Sentry-Rate-Limits` (quotas per data
//! category) and `Retry-After` (seconds or an HTTP date). Sentry and its
//! SDKs treat them so: the header's limits apply per category (no category
//! means all), `Retry-After` alone means all categories, and a 429 with
//! neither means 60 seconds.

use std::time::{Duration, SystemTime};

/// How long a 429 without any usable hint holds, as Sentry's SDKs do.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One quota from `X-Sentry-Rate-Limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub retry_after: Duration,
    /// Data categories (`error`, `transaction`, …); empty means all.
    pub categories: Vec<String>,
    /// `key`, `project` or `organization`; empty when absent.
    pub scope: String,
}

impl RateLimit {
    /// Whether this limit covers `category`.
    pub fn covers(&self, category: &str) -> bool {
        self.categories.is_empty() || self.categories.iter().any(|c| c == category)
    }
}

/// Parses `X-Sentry-Rate-Limits`: `retry_after:categories:scope[:reason…]`,
/// comma-separated; entries that do not start with a number are skipped.
pub fn parse_rate_limits(header: &str) -> Vec<RateLimit> {
    header
        .split(',')
        .filter_map(|entry| {
            let mut fields = entry.trim().split(':');
            let seconds: f64 = fields.next()?.trim().parse().ok()?;
            if !seconds.is_finite() || seconds < 0.0 {
                return None;
            }
            let categories = fields
                .next()
                .unwrap_or_default()
                .split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let scope = fields.next().unwrap_or_default().trim().to_owned();
            // Absurdly long limits saturate; callers clamp to their own maximum.
            let retry_after = Duration::try_from_secs_f64(seconds.ceil()).unwrap_or(Duration::MAX);
            Some(RateLimit { retry_after, categories, scope })
        })
        .collect()
}

/// Parses `Retry-After`: delay seconds (integer or decimal) or an HTTP date,
/// relative to `now`. `None` when it is neither.
pub fn parse_retry_after(header: &str, now: SystemTime) -> Option<Duration> {
    let value = header.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds.ceil()).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How long one category of a project must wait after an answer, clamped to
/// `[1 s, max_hold]`: the longest header limit covering it, else
/// `Retry-After`, else (on a 429) [`DEFAULT_RETRY_AFTER`]. `None` when the
/// answer imposes nothing on that category.
pub fn hold_for(
    status: u16,
    rate_limits: Option<&str>,
    retry_after: Option<&str>,
    category: &str,
    now: SystemTime,
    max_hold: Duration,
) -> Option<Duration> {
    let from_header = rate_limits
        .map(parse_rate_limits)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.covers(category))
        .map(|l| l.retry_after)
        .max();
    let hold = match from_header {
        Some(hold) => hold,
        None if status == 429 => retry_after.and_then(|r| parse_retry_after(r, now)).unwrap_or(DEFAULT_RETRY_AFTER),
        None => return None,
    };
    Some(hold.clamp(Duration::from_secs(1), max_hold.max(Duration::from_secs(1))))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn parses_sentrys_header() {
        let limits = parse_rate_limits("60:transaction:key, 2700:default;error;security:organization:quota_exceeded");
        assert_eq!(limits.len(), 2);
        assert_eq!(
            limits[0],
            RateLimit {
                retry_after: Duration::from_secs(60),
                categories: vec!["transaction".into()],
                scope: "key".into()
            }
        );
        assert_eq!(limits[1].categories, ["default", "error", "security"]);
        assert_eq!(limits[1].scope, "organization");
        let all = parse_rate_limits("30::project");
        assert!(all[0].covers("error") && all[0].covers("anything"), "no category means all");
        assert!(parse_rate_limits("garbage, :error:key, -5:error:key").is_empty());
        assert_eq!(parse_rate_limits("1.2:error:key")[0].retry_after, Duration::from_secs(2), "rounded up");
        assert_eq!(parse_rate_limits("1e30::org")[0].retry_after, Duration::MAX, "saturates, never panics");
        assert_eq!(parse_retry_after("1e30", SystemTime::now()), Some(Duration::MAX));
    }

    #[test]
    fn parses_retry_after_as_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("2.5", now), Some(Duration::from_secs(3)));
        // Wed, 21 Oct 2015 07:28:00 GMT is the epoch second 1445412480.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "a past date");
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn holds_follow_sentrys_rules() {
        let now = SystemTime::now();
        let header = Some("60:transaction:key, 600:error:project");
        assert_eq!(hold_for(429, header, Some("5"), "error", now, DAY), Some(Duration::from_secs(600)), "header wins");
        assert_eq!(hold_for(429, header, None, "transaction", now, DAY), Some(Duration::from_secs(60)));
        assert_eq!(
            hold_for(429, None, Some("7"), "error", now, DAY),
            Some(Duration::from_secs(7)),
            "Retry-After alone: all"
        );
        assert_eq!(hold_for(429, None, None, "error", now, DAY), Some(DEFAULT_RETRY_AFTER), "nothing: 60 s");
        assert_eq!(hold_for(200, None, Some("7"), "error", now, DAY), None, "Retry-After without 429 is not a limit");
        assert_eq!(
            hold_for(200, Some("30:error:key"), None, "error", now, DAY),
            Some(Duration::from_secs(30)),
            "a 200 may carry limits"
        );
        assert_eq!(hold_for(429, Some("999999:error:key"), None, "error", now, DAY), Some(DAY), "clamped");
        assert_eq!(hold_for(429, Some("0:error:key"), None, "error", now, DAY), Some(Duration::from_secs(1)));
    }

    proptest! {
        /// Any header: parsing never panics and every hold is within its clamp.
        #[test]
        fn any_header_gives_a_bounded_hold(header in ".{0,200}", retry in ".{0,40}", status in 100u16..600) {
            let hold = hold_for(status, Some(&header), Some(&retry), "error", SystemTime::now(), DAY);
            if let Some(hold) = hold {
                prop_assert!(hold >= Duration::from_secs(1) && hold <= DAY);
            }
        }
    }
}
