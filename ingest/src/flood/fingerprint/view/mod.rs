//! The few fields of an event that its fingerprint, its event id and the
//! flood report read, taken in one pass without building a JSON tree.
//!
//! SDKs send these fields in many shapes (an exception list as an array, as
//! `{"values": [...]}` or as one bare object; strings where numbers were
//! meant), so every reader here is tolerant: a field of an unexpected type
//! reads as absent, exactly as `Value::get(..).and_then(Value::as_str)`
//! would, and is skipped without allocating. Strings are borrowed from the
//! input unless they hold escapes. A key given twice keeps its last value,
//! as `serde_json::Value` does.
//!
//! The same readers run over a parsed `Value` (`&Value` is a serde
//! deserializer), so the text path and the `Value` path cannot disagree.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[macro_use]
mod tolerant;

use tolerant::{Crashed, Fields, Key, LineNo, Loose, Scalar, Skip, Text, read_object, skip_seq};

/// What the rules read of one event.
#[derive(Debug, Default)]
pub struct EventView<'a> {
    pub event_id: EventId<'a>,
    /// `exception` then `sentry.interfaces.Exception`.
    pub exception: Option<Exceptions<'a>>,
    pub legacy_exception: Option<Exceptions<'a>>,
    pub stacktrace: Frames<'a>,
    pub legacy_stacktrace: Frames<'a>,
    pub threads: Vec<Thread<'a>>,
    pub logentry: Option<Template<'a>>,
    pub legacy_message: Option<Template<'a>>,
    pub message: Message<'a>,
    pub culprit: Option<Cow<'a, str>>,
    pub transaction: Option<Cow<'a, str>>,
    pub release: Option<Cow<'a, str>>,
    pub server_name: Option<Cow<'a, str>>,
    /// The event's `type` (`error`, `default`, `transaction`, `csp`…).
    pub ty: Option<Cow<'a, str>>,
}

/// The top-level `event_id` as sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum EventId<'a> {
    /// Absent or `null`.
    #[default]
    Missing,
    Text(Cow<'a, str>),
    /// Neither a string nor `null`.
    Invalid,
}

#[derive(Debug, Default)]
pub struct Exception<'a> {
    pub ty: Option<Cow<'a, str>>,
    pub value: Option<Cow<'a, str>>,
    pub frames: Frames<'a>,
}

/// An exception container: a list, `{"values": [...]}`, or one bare
/// exception object (recognised by a `type` or `value` key, whatever its value).
#[derive(Debug, Default)]
pub struct Exceptions<'a>(pub Vec<Exception<'a>>);

/// The frames of a stack trace; empty when it has no `frames` array.
#[derive(Debug, Default)]
pub struct Frames<'a>(pub Vec<Frame<'a>>);

#[derive(Debug, Default)]
pub struct Frame<'a> {
    pub filename: Option<Cow<'a, str>>,
    pub module: Option<Cow<'a, str>>,
    pub abs_path: Option<Cow<'a, str>>,
    pub function: Option<Cow<'a, str>>,
    pub lineno: Option<u64>,
}

impl Frame<'_> {
    /// The frame's file: its filename, else its module, else its absolute path.
    pub fn file(&self) -> &str {
        [&self.filename, &self.module, &self.abs_path].into_iter().find_map(|f| f.as_deref()).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
pub struct Thread<'a> {
    pub crashed: bool,
    pub frames: Frames<'a>,
}

/// `logentry`-style objects: the template (`message`) or, lacking one, `formatted`.
#[derive(Debug, Default)]
pub struct Template<'a> {
    pub message: Option<Cow<'a, str>>,
    pub formatted: Option<Cow<'a, str>>,
}

impl Template<'_> {
    pub fn text(&self) -> Option<&str> {
        self.message.as_deref().or(self.formatted.as_deref())
    }
}

/// The top-level `message`: a string, or a `logentry`-style object.
#[derive(Debug, Default)]
pub enum Message<'a> {
    #[default]
    None,
    Text(Cow<'a, str>),
    Object(Template<'a>),
}

object!(AnyFrame, Frame);
object!(AnyException, Exception);
object!(AnyThread, Thread);
object!(AnyTemplate, Template);
object!(AnyStacktrace, Frames);

list!(FrameList, AnyFrame, Frame);
list!(ExceptionList, AnyException, Exception);
list!(ThreadList, AnyThread, Thread);

impl<'de> Fields<'de> for Frame<'de> {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "filename" => self.filename = map.next_value::<Text>()?.0,
            "module" => self.module = map.next_value::<Text>()?.0,
            "abs_path" => self.abs_path = map.next_value::<Text>()?.0,
            "function" => self.function = map.next_value::<Text>()?.0,
            "lineno" => self.lineno = map.next_value::<LineNo>()?.0,
            _ => {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Frames<'de> {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "frames" => self.0 = map.next_value::<FrameList>()?.0.unwrap_or_default(),
            _ => {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Exception<'de> {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "type" => self.ty = map.next_value::<Text>()?.0,
            "value" => self.value = map.next_value::<Text>()?.0,
            "stacktrace" => self.frames = map.next_value::<AnyStacktrace>()?.0,
            _ => {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Thread<'de> {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "crashed" => self.crashed = map.next_value::<Crashed>()?.0,
            "stacktrace" => self.frames = map.next_value::<AnyStacktrace>()?.0,
            _ => {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Template<'de> {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "message" => self.message = map.next_value::<Text>()?.0,
            "formatted" => self.formatted = map.next_value::<Text>()?.0,
            _ => {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

/// While reading an exception container: its `values` array if any, and,
/// for the bare form, the exception fields themselves.
#[derive(Default)]
struct ExceptionsReader<'a> {
    values: Option<Vec<Exception<'a>>>,
    bare: Exception<'a>,
    has_type_or_value: bool,
}

impl<'de> Deserialize<'de> for Exceptions<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ExceptionsAny::deserialize(d)?.0)
    }
}

struct ExceptionsAny<'a>(Exceptions<'a>);

tolerant!(
    ExceptionsAny,
    "any value",
    |map| {
        let mut r = ExceptionsReader::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match key.as_ref() {
                "values" => r.values = map.next_value::<ExceptionList>()?.0,
                "type" => {
                    r.has_type_or_value = true;
                    r.bare.ty = map.next_value::<Text>()?.0;
                }
                "value" => {
                    r.has_type_or_value = true;
                    r.bare.value = map.next_value::<Text>()?.0;
                }
                "stacktrace" => r.bare.frames = map.next_value::<AnyStacktrace>()?.0,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(ExceptionsAny(Exceptions(match r.values {
            Some(values) => values,
            None if r.has_type_or_value => vec![r.bare],
            None => Vec::new(),
        })))
    },
    |seq| {
        let mut items = Vec::new();
        while let Some(AnyException(e)) = seq.next_element::<AnyException<'de>>()? {
            items.push(e);
        }
        Ok(ExceptionsAny(Exceptions(items)))
    },
    |_s| ExceptionsAny(Exceptions::default())
);

/// `threads`: `{"values": [...]}` or a bare list.
struct Threads<'a>(Vec<Thread<'a>>);

tolerant!(
    Threads,
    "any value",
    |map| {
        let mut threads = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match key.as_ref() {
                "values" => threads = map.next_value::<ThreadList>()?.0.unwrap_or_default(),
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Threads(threads))
    },
    |seq| {
        let mut items = Vec::new();
        while let Some(AnyThread(t)) = seq.next_element::<AnyThread<'de>>()? {
            items.push(t);
        }
        Ok(Threads(items))
    },
    |_s| Threads(Vec::new())
);

struct AnyMessage<'a>(Message<'a>);

tolerant!(
    AnyMessage,
    "any value",
    |map| Ok(AnyMessage(Message::Object(read_object(&mut map)?))),
    |seq| {
        skip_seq(&mut seq)?;
        Ok(AnyMessage(Message::None))
    },
    |s| AnyMessage(match s {
        Scalar::Str(s) => Message::Text(s),
        _ => Message::None,
    })
);

struct AnyEventId<'a>(EventId<'a>);

impl<'de> Deserialize<'de> for AnyEventId<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(AnyEventId(match Loose::deserialize(d)?.0 {
            Scalar::Str(s) => EventId::Text(s),
            Scalar::Null => EventId::Missing,
            _ => EventId::Invalid,
        }))
    }
}

impl<'de> Fields<'de> for EventView<'de> {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "event_id" => self.event_id = map.next_value::<AnyEventId>()?.0,
            "exception" => self.exception = Some(map.next_value::<Exceptions>()?),
            "sentry.interfaces.Exception" => self.legacy_exception = Some(map.next_value::<Exceptions>()?),
            "stacktrace" => self.stacktrace = map.next_value::<AnyStacktrace>()?.0,
            "sentry.interfaces.Stacktrace" => self.legacy_stacktrace = map.next_value::<AnyStacktrace>()?.0,
            "threads" => self.threads = map.next_value::<Threads>()?.0,
            "logentry" => self.logentry = Some(map.next_value::<AnyTemplate>()?.0),
            "sentry.interfaces.Message" => self.legacy_message = Some(map.next_value::<AnyTemplate>()?.0),
            "message" => self.message = map.next_value::<AnyMessage>()?.0,
            "culprit" => self.culprit = map.next_value::<Text>()?.0,
            "transaction" => self.transaction = map.next_value::<Text>()?.0,
            "release" => self.release = map.next_value::<Text>()?.0,
            "server_name" => self.server_name = map.next_value::<Text>()?.0,
            "type" => self.ty = map.next_value::<Text>()?.0,
            _ => {
                map.next_value::<Skip>()?;
            }
        }
        Ok(())
    }
}

/// An event must be a JSON object: anything else is an error here.
impl<'de> Deserialize<'de> for EventView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'de>(PhantomData<&'de ()>);
        impl<'de> Visitor<'de> for V<'de> {
            type Value = EventView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                read_object(&mut map)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl EventView<'_> {
    /// The message template the event carries, modern or legacy.
    pub fn message_text(&self) -> Option<&str> {
        let template = [&self.logentry, &self.legacy_message].into_iter().flatten().find_map(Template::text);
        template.or(match &self.message {
            Message::Text(m) => Some(m),
            Message::Object(m) => m.text(),
            Message::None => None,
        })
    }

    /// A one-line title as Sentry shows it: the outermost exception's
    /// `Type: value` (the last of the list), else the message, else the
    /// culprit or transaction.
    pub fn title(&self) -> String {
        let exception = [&self.exception, &self.legacy_exception].into_iter().flatten().flat_map(|e| e.0.last()).last();
        if let Some(e) = exception {
            return match (e.ty.as_deref(), e.value.as_deref()) {
                (Some(ty), Some(value)) => format!("{ty}: {value}"),
                (Some(text), None) | (None, Some(text)) => text.to_owned(),
                (None, None) => "<unlabeled exception>".to_owned(),
            };
        }
        self.message_text()
            .or(self.culprit.as_deref())
            .or(self.transaction.as_deref())
            .unwrap_or("<unlabeled event>")
            .to_owned()
    }
}

impl<'a> EventView<'a> {
    /// Reads a parsed event; a non-object reads as an empty event.
    pub fn of_value(event: &'a serde_json::Value) -> Self {
        Self::deserialize(event).unwrap_or_default()
    }

    /// Reads an event's JSON text in one pass. Errors on anything that is
    /// not one JSON object.
    pub fn of_text(json: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}
