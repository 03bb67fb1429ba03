//! The first, `Value`-walking implementation of the fingerprint rules, kept
//! as the oracle that [`super::view`] must agree with on any input.

use serde_json::Value;

use super::{Hasher, Rule};

fn text(value: Option<&Value>) -> &str {
    value.and_then(Value::as_str).unwrap_or_default()
}

/// The exception values under one key, in any of the forms SDKs used.
fn exception_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => match map.get("values") {
            Some(Value::Array(items)) => items.iter().collect(),
            // The oldest form: a single exception object.
            _ if map.contains_key("type") || map.contains_key("value") => vec![v],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The exception values of an event, modern or legacy.
fn exceptions(event: &Value) -> Vec<&Value> {
    ["exception", "sentry.interfaces.Exception"].iter().filter_map(|k| event.get(*k)).flat_map(exception_list).collect()
}

fn frames(stacktrace: Option<&Value>) -> &[Value] {
    stacktrace.and_then(|s| s.get("frames")).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn hash_frames(h: &mut Hasher, frames: &[Value]) {
    for frame in frames {
        let file = [frame.get("filename"), frame.get("module"), frame.get("abs_path")]
            .into_iter()
            .find_map(|v| v.and_then(Value::as_str))
            .unwrap_or_default();
        h.field(file);
        h.field(text(frame.get("function")));
        h.field(&frame.get("lineno").and_then(Value::as_u64).map(|n| n.to_string()).unwrap_or_default());
    }
}

/// The frames of `threads`, the crashed thread first, threads without frames left out.
fn thread_frames(event: &Value) -> Vec<&[Value]> {
    let list = match event.get("threads") {
        Some(Value::Object(t)) => t.get("values").and_then(Value::as_array),
        Some(Value::Array(items)) => Some(items),
        _ => None,
    };
    let mut threads: Vec<&Value> = list.map(|l| l.iter().collect()).unwrap_or_default();
    threads.sort_by_key(|t| t.get("crashed").and_then(Value::as_bool) != Some(true));
    threads.into_iter().map(|t| frames(t.get("stacktrace"))).filter(|f| !f.is_empty()).collect()
}

/// The message template an event carries, modern or legacy.
fn message(event: &Value) -> Option<&str> {
    for key in ["logentry", "sentry.interfaces.Message"] {
        if let Some(entry) = event.get(key) {
            let template =
                [entry.get("message"), entry.get("formatted")].into_iter().find_map(|v| v.and_then(Value::as_str));
            if template.is_some() {
                return template;
            }
        }
    }
    match event.get("message") {
        Some(Value::String(m)) => Some(m),
        Some(Value::Object(m)) => {
            [m.get("message"), m.get("formatted")].into_iter().find_map(|v| v.and_then(Value::as_str))
        }
        _ => None,
    }
}

/// The fingerprint of an event payload (parsed JSON).
pub fn of_event(event: &Value) -> String {
    let excs = exceptions(event);
    if excs.iter().any(|e| !frames(e.get("stacktrace")).is_empty()) {
        let mut h = Hasher::new(Rule::ExceptionFrames);
        for e in &excs {
            h.field(text(e.get("type")));
            hash_frames(&mut h, frames(e.get("stacktrace")));
        }
        return h.finish(Rule::ExceptionFrames);
    }
    if !excs.is_empty() {
        let mut h = Hasher::new(Rule::ExceptionValue);
        for e in &excs {
            h.field(text(e.get("type")));
            h.field(text(e.get("value")));
        }
        return h.finish(Rule::ExceptionValue);
    }
    let top =
        ["stacktrace", "sentry.interfaces.Stacktrace"].iter().map(|k| frames(event.get(*k))).find(|f| !f.is_empty());
    if let Some(top) = top {
        let mut h = Hasher::new(Rule::Stacktrace);
        hash_frames(&mut h, top);
        return h.finish(Rule::Stacktrace);
    }
    let threads = thread_frames(event);
    if !threads.is_empty() {
        let mut h = Hasher::new(Rule::Stacktrace);
        for frames in threads {
            hash_frames(&mut h, frames);
        }
        return h.finish(Rule::Stacktrace);
    }
    let mut h = Hasher::new(Rule::Message);
    h.field(message(event).unwrap_or_default());
    h.field(
        [event.get("culprit"), event.get("transaction")]
            .into_iter()
            .find_map(|v| v.and_then(Value::as_str))
            .unwrap_or_default(),
    );
    h.finish(Rule::Message)
}

/// Random events built from the keys the rules read, in every shape and type.
mod differential {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::super::{EventId, EventView, of_event, of_view};

    const KEYS: &[&str] = &[
        "exception",
        "sentry.interfaces.Exception",
        "values",
        "type",
        "value",
        "stacktrace",
        "sentry.interfaces.Stacktrace",
        "frames",
        "filename",
        "module",
        "abs_path",
        "function",
        "lineno",
        "threads",
        "crashed",
        "logentry",
        "sentry.interfaces.Message",
        "message",
        "formatted",
        "culprit",
        "transaction",
        "event_id",
        "vars",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (0u64..40).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-c\"\\\\é\\n]{0,4}".prop_map(Value::String),
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    /// An object with each of `fields` present or not, in a random order.
    fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
        let parts: Vec<_> =
            fields.into_iter().map(|(k, v)| prop::option::weighted(0.7, v).prop_map(move |v| (k, v))).collect();
        (parts, Just(()))
            .prop_flat_map(|(parts, ())| Just(parts).prop_shuffle())
            .prop_map(|parts| {
                Value::Object(parts.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect::<Map<_, _>>())
            })
            .boxed()
    }

    /// Mostly `shape`, sometimes anything at all.
    fn or_noise(shape: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        prop_oneof![4 => shape, 1 => json()].boxed()
    }

    fn list(item: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        prop::collection::vec(item, 0..4).prop_map(Value::Array).boxed()
    }

    fn text() -> BoxedStrategy<Value> {
        prop_oneof![4 => "[a-c]{0,2}".prop_map(Value::String), 1 => leaf()].boxed()
    }

    fn stacktrace() -> BoxedStrategy<Value> {
        let frame = or_noise(object(vec![
            ("filename", text()),
            ("module", text()),
            ("abs_path", text()),
            ("function", text()),
            ("lineno", prop_oneof![(0u64..3).prop_map(Value::from), leaf()].boxed()),
            ("vars", json().boxed()),
        ]));
        or_noise(object(vec![("frames", or_noise(list(frame))), ("registers", json().boxed())]))
    }

    fn exceptions() -> BoxedStrategy<Value> {
        let exception = || or_noise(object(vec![("type", text()), ("value", text()), ("stacktrace", stacktrace())]));
        or_noise(
            prop_oneof![list(exception()), object(vec![("values", or_noise(list(exception())))]), exception()].boxed(),
        )
    }

    fn template() -> BoxedStrategy<Value> {
        or_noise(object(vec![("message", text()), ("formatted", text()), ("params", json().boxed())]))
    }

    fn event() -> impl Strategy<Value = Value> {
        let thread = or_noise(object(vec![
            ("crashed", prop_oneof![any::<bool>().prop_map(Value::Bool), leaf()].boxed()),
            ("stacktrace", stacktrace()),
        ]));
        let threads = or_noise(prop_oneof![list(thread.clone()), object(vec![("values", list(thread))])].boxed());
        object(vec![
            ("event_id", text()),
            ("exception", exceptions()),
            ("sentry.interfaces.Exception", exceptions()),
            ("stacktrace", stacktrace()),
            ("sentry.interfaces.Stacktrace", stacktrace()),
            ("threads", threads),
            ("logentry", template()),
            ("sentry.interfaces.Message", template()),
            ("message", prop_oneof![text(), template()].boxed()),
            ("culprit", text()),
            ("transaction", text()),
            ("breadcrumbs", json().boxed()),
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_view_agrees_with_the_value_walking_rules(event in event()) {
            let expected = super::of_event(&event);
            prop_assert_eq!(&of_event(&event), &expected, "Value path");
            let text = serde_json::to_string(&event).expect("serialises");
            let view = EventView::of_text(&text).expect("an object reads");
            prop_assert_eq!(&of_view(&view), &expected, "text path");
            let id = match event.get("event_id") {
                None | Some(Value::Null) => EventId::Missing,
                Some(Value::String(s)) => EventId::Text(s.as_str().into()),
                Some(_) => EventId::Invalid,
            };
            prop_assert_eq!(view.event_id, id);
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_on_both_paths() {
        let text = r#"{"message":"first","culprit":"c","message":"last"}"#;
        let value: Value = serde_json::from_str(text).expect("json");
        let view = EventView::of_text(text).expect("reads");
        assert_eq!(of_view(&view), of_event(&value));
        assert_eq!(of_view(&view), super::of_event(&serde_json::json!({"message": "last", "culprit": "c"})));
    }

    #[test]
    fn only_objects_are_events() {
        for text in ["[]", "1", "\"x\"", "null", "{", "{}x"] {
            assert!(EventView::of_text(text).is_err(), "{text}");
        }
    }
}
