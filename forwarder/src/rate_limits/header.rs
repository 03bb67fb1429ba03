//! Sentry's rate-limit headers: `X-Sentry-Rate-Limits` (quotas per data
//! category) and `Retry-After` (seconds or an HTTP date). Sentry and its
//! SDKs treat them so: the header's limits apply per category (no category
//! means all), and `Retry-After` alone means all categories. What the
//! forwarder makes of them is the rest of [`super`].

use std::time::{Duration, SystemTime};

/// One quota from `X-Sentry-Rate-Limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub retry_after: Duration,
    /// Data categories (`error`, `transaction`, …); empty means all.
    pub categories: Vec<String>,
    /// `key`, `project` or `organization`; empty when absent.
    pub scope: String,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(all[0].categories.is_empty(), "no category means all");
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
}
