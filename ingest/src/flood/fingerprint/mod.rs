//! The flood filter's notion of "the same error": a fingerprint per event,
//! computed the same way on every ingest instance.
//!
//! The first rule that applies wins, so that the most specific signal an SDK
//! sent decides:
//!
//! 1. **exception frames** — any exception (modern `exception`, or the old
//!    `sentry.interfaces.Exception`) with stack frames: every exception's type
//!    plus each frame's file (or module), function and line.
//! 2. **exception type/value** — exceptions without frames: types and values.
//! 3. **stacktrace** — a top-level `stacktrace` (or `sentry.interfaces.Stacktrace`)
//!    with frames; else the stack traces of `threads` (Java, Cocoa and native
//!    SDKs report crashes there), the crashed thread's first.
//! 4. **message** — `logentry`/`sentry.interfaces.Message` (the template
//!    before parameters, so that `"user %s failed"` groups across users) or a
//!    plain `message`, together with `culprit` (or `transaction`).
//!
//! Volatile fields (timestamps, event ids, breadcrumbs, local variables,
//! request data, tags) never enter a fingerprint. The result is the rule's
//! name and a 128-bit xxh3 hash in hex, e.g. `exc-frames:5f0c…`; it is stable
//! across versions of this code unless these rules change.

#[cfg(test)]
mod oracle;
mod view;

use std::borrow::Cow;

use serde_json::Value;
pub use view::{EventId, EventView};
use view::{Exception, Frame, Thread};
use xxhash_rust::xxh3::Xxh3;

/// Which rule produced a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    ExceptionFrames,
    ExceptionValue,
    Stacktrace,
    Message,
    /// A GET beacon whose data is not an event: its URL without volatile parameters.
    Url,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Self::ExceptionFrames => "exc-frames",
            Self::ExceptionValue => "exc-value",
            Self::Stacktrace => "stacktrace",
            Self::Message => "message",
            Self::Url => "url",
        }
    }
}

/// Feeds length-prefixed fields, so that `("ab", "c")` and `("a", "bc")` differ.
struct Hasher(Xxh3);

impl Hasher {
    fn new(rule: Rule) -> Self {
        let mut h = Self(Xxh3::new());
        h.field(rule.name());
        h
    }

    fn field(&mut self, value: &str) {
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
    }

    fn finish(self, rule: Rule) -> String {
        format!("{}:{:032x}", rule.name(), self.0.digest128())
    }
}

/// The fingerprint of an event payload (parsed JSON).
pub fn of_event(event: &Value) -> String {
    of_view(&EventView::of_value(event))
}

fn hash_frames(h: &mut Hasher, frames: &[Frame]) {
    for frame in frames {
        h.field(frame.file());
        h.field(frame.function.as_deref().unwrap_or_default());
        h.field(&frame.lineno.map(|n| n.to_string()).unwrap_or_default());
    }
}

fn text<'s>(field: &'s Option<Cow<str>>) -> &'s str {
    field.as_deref().unwrap_or_default()
}

/// The fingerprint of an event read with [`EventView`].
pub fn of_view(event: &EventView) -> String {
    let excs: Vec<&Exception> =
        [&event.exception, &event.legacy_exception].into_iter().flatten().flat_map(|e| &e.0).collect();
    if excs.iter().any(|e| !e.frames.0.is_empty()) {
        let mut h = Hasher::new(Rule::ExceptionFrames);
        for e in &excs {
            h.field(text(&e.ty));
            hash_frames(&mut h, &e.frames.0);
        }
        return h.finish(Rule::ExceptionFrames);
    }
    if !excs.is_empty() {
        let mut h = Hasher::new(Rule::ExceptionValue);
        for e in &excs {
            h.field(text(&e.ty));
            h.field(text(&e.value));
        }
        return h.finish(Rule::ExceptionValue);
    }
    let top = [&event.stacktrace, &event.legacy_stacktrace].into_iter().find(|f| !f.0.is_empty());
    if let Some(top) = top {
        let mut h = Hasher::new(Rule::Stacktrace);
        hash_frames(&mut h, &top.0);
        return h.finish(Rule::Stacktrace);
    }
    // Threads' stack traces, the crashed thread's first, threads without frames left out.
    let mut threads: Vec<&Thread> = event.threads.iter().filter(|t| !t.frames.0.is_empty()).collect();
    if !threads.is_empty() {
        threads.sort_by_key(|t| !t.crashed);
        let mut h = Hasher::new(Rule::Stacktrace);
        for thread in threads {
            hash_frames(&mut h, &thread.frames.0);
        }
        return h.finish(Rule::Stacktrace);
    }
    let mut h = Hasher::new(Rule::Message);
    h.field(event.message_text().unwrap_or_default());
    h.field([&event.culprit, &event.transaction].into_iter().find_map(|v| v.as_deref()).unwrap_or_default());
    h.finish(Rule::Message)
}

/// Query parameters that change between two sends of the same beacon.
const VOLATILE_PARAMS: [&str; 5] =
    ["sentry_key", "sentry_secret", "sentry_version", "sentry_client", "sentry_timestamp"];

/// The fingerprint of a GET beacon: its event (`sentry_data`, already
/// decoded from JSON or the legacy base64 form) when there is one, else the
/// path and the sorted non-volatile query parameters.
pub fn of_beacon(path: &str, query: &str, event: Option<&Value>) -> String {
    if let Some(event @ Value::Object(_)) = event {
        return of_event(event);
    }
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !VOLATILE_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((_, data)) = params.iter().find(|(k, _)| k == "sentry_data")
        && let Ok(event @ Value::Object(_)) = serde_json::from_str::<Value>(data)
    {
        return of_event(&event);
    }
    params.sort();
    let mut h = Hasher::new(Rule::Url);
    h.field(path);
    for (k, v) in &params {
        h.field(k);
        h.field(v);
    }
    h.finish(Rule::Url)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frame(file: &str, function: &str, line: u64) -> Value {
        json!({"filename": file, "function": function, "lineno": line, "vars": {"x": fastrand::u64(..)}})
    }

    fn volatile() -> Value {
        json!({
            "event_id": uuid_like(),
            "timestamp": fastrand::f64() * 1e9,
            "breadcrumbs": [{"message": fastrand::u64(..).to_string()}],
            "tags": {"request": fastrand::u32(..)},
        })
    }

    fn uuid_like() -> String {
        format!("{:032x}", fastrand::u128(..))
    }

    fn with_volatile(mut event: Value) -> Value {
        if let (Some(e), Value::Object(v)) = (event.as_object_mut(), volatile()) {
            e.extend(v);
        }
        event
    }

    #[track_caller]
    fn same_and_different(make: impl Fn(&str) -> Value, rule: Rule) {
        let a = of_event(&with_volatile(make("a")));
        assert!(a.starts_with(rule.name()), "{a}");
        assert_eq!(a, of_event(&with_volatile(make("a"))), "volatile fields must not matter");
        assert_ne!(a, of_event(&with_volatile(make("b"))), "the rule's own fields must matter");
    }

    #[test]
    fn exception_frames() {
        same_and_different(
            |f| {
                json!({"exception": {"values": [{"type": "ValueError", "value": fastrand::u64(..).to_string(),
                "stacktrace": {"frames": [frame("app.py", f, 10), frame("lib.py", "g", 20)]}}]}})
            },
            Rule::ExceptionFrames,
        );
        // The type is part of it too.
        let ty = |t: &str| json!({"exception": [{"type": t, "stacktrace": {"frames": [frame("a.py", "f", 1)]}}]});
        assert_ne!(of_event(&ty("KeyError")), of_event(&ty("IndexError")));
    }

    #[test]
    fn exception_type_and_value_without_frames() {
        same_and_different(
            |v| json!({"exception": {"values": [{"type": "ValueError", "value": v}]}}),
            Rule::ExceptionValue,
        );
    }

    #[test]
    fn top_level_stacktrace() {
        same_and_different(
            |f| json!({"message": fastrand::u64(..).to_string(), "stacktrace": {"frames": [frame("main.rs", f, 3)]}}),
            Rule::Stacktrace,
        );
    }

    #[test]
    fn legacy_interfaces() {
        same_and_different(
            |f| {
                json!({"sentry.interfaces.Exception": {"type": "E", "value": "v",
                "stacktrace": {"frames": [frame("x.py", f, 1)]}}})
            },
            Rule::ExceptionFrames,
        );
        same_and_different(
            |f| json!({"sentry.interfaces.Stacktrace": {"frames": [frame("x.py", f, 1)]}}),
            Rule::Stacktrace,
        );
        same_and_different(
            |m| json!({"sentry.interfaces.Message": {"message": m, "params": [fastrand::u32(..)]}}),
            Rule::Message,
        );
    }

    #[test]
    fn thread_stacktraces_crashed_first() {
        same_and_different(
            |f| {
                json!({"threads": {"values": [
                    {"id": 1, "stacktrace": {"frames": [frame("Other.java", "idle", 1)]}},
                    {"id": 2, "crashed": true, "stacktrace": {"frames": [frame("Main.java", f, 9)]}}
                ]}})
            },
            Rule::Stacktrace,
        );
    }

    #[test]
    fn message_and_culprit() {
        same_and_different(|m| json!({"message": m, "culprit": "views.home"}), Rule::Message);
        same_and_different(|c| json!({"message": "same", "culprit": c}), Rule::Message);
        // Parameters are volatile: the template decides.
        let logentry =
            |p: u32| json!({"logentry": {"message": "user %s failed", "formatted": format!("user {p} failed")}});
        assert_eq!(of_event(&logentry(1)), of_event(&logentry(2)));
    }

    #[test]
    fn fields_do_not_run_into_each_other() {
        let a = json!({"message": "ab", "culprit": "c"});
        let b = json!({"message": "a", "culprit": "bc"});
        assert_ne!(of_event(&a), of_event(&b));
    }

    #[test]
    fn beacons() {
        let data = |m: &str| {
            let event = json!({"message": m, "event_id": uuid_like(), "timestamp": fastrand::u32(..)}).to_string();
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("sentry_key", &uuid_like())
                .append_pair("sentry_data", &event)
                .finish()
        };
        let a = of_beacon("/api/1/store/", &data("boom"), None);
        assert!(a.starts_with("message:"), "{a}");
        assert_eq!(a, of_beacon("/api/1/store/", &data("boom"), None));
        assert_ne!(a, of_beacon("/api/1/store/", &data("bang"), None));
        let decoded = json!({"message": "boom", "event_id": uuid_like()});
        assert_eq!(a, of_beacon("/api/1/store/", "sentry_data=BASE64", Some(&decoded)), "a decoded event decides");
        let url = |ts: u32, page: &str| format!("sentry_key=k&sentry_timestamp={ts}&page={page}&sentry_data=not-json");
        let u = of_beacon("/api/1/store/", &url(1, "home"), None);
        assert!(u.starts_with("url:"));
        assert_eq!(u, of_beacon("/api/1/store/", &url(2, "home"), None), "timestamps are volatile");
        assert_ne!(u, of_beacon("/api/1/store/", &url(1, "cart"), None));
    }

    #[test]
    fn known_value_is_stable() {
        // Pins the algorithm: changing it changes every instance's counters.
        let fp = of_event(&json!({"message": "hello", "culprit": "here"}));
        assert_eq!(fp, of_event(&json!({"culprit": "here", "message": "hello"})));
        assert_eq!(fp, "message:774345b01e337d372827b321b3527e4c");
    }
}
