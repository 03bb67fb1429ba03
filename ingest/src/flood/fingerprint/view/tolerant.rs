//! The tolerant serde readers [`super`] is built from: a value of an
//! unexpected type reads as absent instead of failing, and what is not kept
//! is still checked as a full `serde_json::Value` parse would check it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// An object read key by key; any other JSON value reads as `Default`.
pub(super) trait Fields<'de>: Default {
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// A value this reader does not keep, still checked as the full parse
/// checks it: serde's `IgnoredAny` would skip without serde_json's nesting
/// limit (128), number range (`1e400`) and string escape checks (lone
/// surrogates), and so accept events that a `Value` parse rejects.
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_none<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        // `deserialize_any`, not `deserialize_ignored_any`: see the type's doc.
        d.deserialize_any(V)
    }
}

/// A key, borrowed from the input when it has no escapes.
pub(super) struct Key<'de>(pub(super) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Defines the tolerant visitor of a type: `visit_map` per `$on_map`, `visit_seq`
/// per `$on_seq`, and every scalar as `$other`.
macro_rules! tolerant {
    ($ty:ident, $expecting:literal, |$map:ident| $on_map:expr, |$seq:ident| $on_seq:expr, |$scalar:ident| $other:expr) => {
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<'de>(::std::marker::PhantomData<&'de ()>);
                impl<'de> Visitor<'de> for V<'de> {
                    type Value = $ty<'de>;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<Self::Value, A::Error> {
                        $on_map
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut $seq: A) -> Result<Self::Value, A::Error> {
                        $on_seq
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Str(Cow::Borrowed(v));
                        Ok($other)
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Str(Cow::Owned(v.to_owned()));
                        Ok($other)
                    }
                    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Str(Cow::Owned(v));
                        Ok($other)
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                        let $scalar = Scalar::U64(v);
                        Ok($other)
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Other;
                        Ok($other)
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Other;
                        Ok($other)
                    }
                    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Bool(v);
                        Ok($other)
                    }
                    fn visit_unit<E>(self) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Null;
                        Ok($other)
                    }
                    fn visit_none<E>(self) -> Result<Self::Value, E> {
                        let $scalar = Scalar::Null;
                        Ok($other)
                    }
                }
                d.deserialize_any(V(::std::marker::PhantomData))
            }
        }
    };
}

/// A JSON scalar as the tolerant visitors see it.
pub(super) enum Scalar<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    Bool(bool),
    Null,
    Other,
}

pub(super) fn skip_seq<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

pub(super) fn read_object<'de, T: Fields<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<T, A::Error> {
    let mut value = T::default();
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        value.field(&key, map)?;
    }
    Ok(value)
}

/// A string, or `None` for any other value.
pub(super) struct Text<'a>(pub(super) Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match Loose::deserialize(d)?.0 {
            Scalar::Str(s) => Some(s),
            _ => None,
        }))
    }
}

/// `$name` reads any value: through `$t`'s fields when it is an object, else as `$t::default()`.
macro_rules! object {
    ($name:ident, $t:ident) => {
        struct $name<'a>($t<'a>);
        tolerant!(
            $name,
            "any value",
            |map| Ok($name(read_object(&mut map)?)),
            |seq| {
                skip_seq(&mut seq)?;
                Ok($name($t::default()))
            },
            |_s| $name($t::default())
        );
    };
}
/// `crashed`: only `true` counts.
pub(super) struct Crashed(pub(super) bool);

impl<'de> Deserialize<'de> for Crashed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Crashed(matches!(Loose::deserialize(d)?.0, Scalar::Bool(true))))
    }
}

/// A non-negative integer, or `None` for any other value.
pub(super) struct LineNo(pub(super) Option<u64>);

impl<'de> Deserialize<'de> for LineNo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LineNo(match Loose::deserialize(d)?.0 {
            Scalar::U64(n) => Some(n),
            _ => None,
        }))
    }
}

/// Any value, kept only when it is a scalar.
pub(super) struct Loose<'a>(pub(super) Scalar<'a>);

tolerant!(
    Loose,
    "any value",
    |map| {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Loose(Scalar::Other))
    },
    |seq| {
        skip_seq(&mut seq)?;
        Ok(Loose(Scalar::Other))
    },
    |s| Loose(s)
);

/// An array of `$item`, or `None` for any other value.
macro_rules! list {
    ($name:ident, $item:ident, $out:ident) => {
        struct $name<'a>(Option<Vec<$out<'a>>>);
        tolerant!(
            $name,
            "any value",
            |map| {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok($name(None))
            },
            |seq| {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some($item(item)) = seq.next_element::<$item<'de>>()? {
                    items.push(item);
                }
                Ok($name(Some(items)))
            },
            |_s| $name(None)
        );
    };
}
