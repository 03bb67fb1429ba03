//! Sentry's data categories: the names its rate limits
//! (`X-Sentry-Rate-Limits: 60:transaction:organization`) are given in.
//!
//! Ingest names the categories of what each record carries (the record's
//! `cyclops-categories` header), so that the forwarder, told by Sentry that
//! one category is over its quota, holds only the records of that category
//! and keeps delivering the rest of the project. The names follow Relay's
//! `DataCategory` as Sentry's SDKs match them: an envelope item's type picks
//! the category; an event's `type` decides between `error`, `transaction`
//! and `security`.

/// The category of an event (a store body, or an envelope's `event` item),
/// by its `type`: events without one are errors, as in Sentry.
pub fn of_event(event_type: Option<&str>) -> &'static str {
    match event_type {
        Some("transaction") => "transaction",
        Some("csp" | "hpkp" | "expectct" | "expectstaple") => "security",
        Some("feedback") => "feedback",
        _ => "error",
    }
}

/// The category of an envelope item of type `item_type` (`internal` for
/// client reports, which no quota limits); `None` for a type that cannot be
/// a category's name. An item type this build does not
/// know is its own category, so that a limit on it still matches, if it is
/// a plausible name (lowercase letters, digits, `_`; at most 32).
pub fn of_item(item_type: &str) -> Option<&str> {
    Some(match item_type {
        "event" => "error",
        "transaction" => "transaction",
        "security" | "raw_security" => "security",
        "nel" => "error",
        "attachment" => "attachment",
        "session" | "sessions" => "session",
        "profile" => "profile",
        "profile_chunk" => "profile_chunk",
        "replay_event" | "replay_recording" | "replay_video" => "replay",
        "check_in" => "monitor",
        "span" | "otel_span" => "span",
        "statsd" | "metric_buckets" => "metric_bucket",
        "feedback" => "feedback",
        "user_report" => "user_report",
        "log" | "otel_log" => "log_item",
        "client_report" => "internal",
        // Kept only when it could be a category's name: it goes into a
        // record header of the contract.
        other
            if other.len() <= 32
                && other.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            other
        }
        _ => return None,
    })
}

/// Adds `category` to `into` unless it is there already (records carry a
/// handful at most).
pub fn add(into: &mut Vec<String>, category: &str) {
    if !into.iter().any(|c| c == category) {
        into.push(category.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn events_are_errors_unless_their_type_says_otherwise() {
        assert_eq!(of_event(None), "error");
        assert_eq!(of_event(Some("default")), "error");
        assert_eq!(of_event(Some("transaction")), "transaction");
        assert_eq!(of_event(Some("csp")), "security");
    }

    #[test]
    fn items_map_to_relays_categories_and_unknown_types_keep_their_name() {
        assert_eq!(of_item("event"), Some("error"));
        assert_eq!(of_item("replay_recording"), Some("replay"));
        assert_eq!(of_item("check_in"), Some("monitor"));
        assert_eq!(of_item("client_report"), Some("internal"));
        assert_eq!(of_item("something_new"), Some("something_new"));
        assert_eq!(of_item("Weird,Type"), None, "never a malformed header");
    }

    #[test]
    fn add_keeps_each_category_once() {
        let mut v = Vec::new();
        add(&mut v, "error");
        add(&mut v, "attachment");
        add(&mut v, "error");
        assert_eq!(v, strings(&["error", "attachment"]));
    }
}
