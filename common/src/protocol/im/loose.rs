//! Field types for reading IM's callback bodies straight into structs, as leniently as a
//! `serde_json::Value` tree reads them but without building one (the tree, its ordered maps and
//! their strings were two thirds of a callback's warm CPU).
//!
//! IM sends some integers as strings, and a field of an unexpected type must read as absent
//! rather than fail the whole body: every type here accepts any JSON value and keeps what its
//! readers can use. The one refusal is serde's own for an object naming one of its struct's
//! members twice (see `callback::parse`). Strings without escapes stay borrowed from the body.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// A scalar: a string, a number, or absent (missing, `null`, a boolean, an object, an array:
/// none of which a scalar field's reader can use).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) enum Loose<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Num(Number),
}

impl<'a> Loose<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, from a JSON number or a string of digits (surrounding spaces allowed). An
    /// unsigned number beyond `i64` wraps (`as i64`), as the value-tree reader did before.
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Loose::Num(n) => n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)),
            Loose::Str(s) => s.trim().parse().ok(),
            Loose::Absent => None,
        }
    }

    /// The string, or `""` for anything else.
    pub(crate) fn text(&self) -> String {
        self.as_str().unwrap_or("").to_owned()
    }

    /// The string when it is one and not empty.
    pub(crate) fn nonempty(&self) -> Option<String> {
        self.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
    }

    /// A string, or a number written as JSON writes it (coordinates come as either).
    pub(crate) fn string(&self) -> Option<String> {
        match self {
            Loose::Str(s) => Some(s.to_string()),
            Loose::Num(n) => Some(n.to_string()),
            Loose::Absent => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<Loose<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Loose<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: Error>(self, s: &'de str) -> Result<Loose<'a>, E> {
                Ok(Loose::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<Loose<'a>, E> {
                Ok(Loose::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: Error>(self, s: String) -> Result<Loose<'a>, E> {
                Ok(Loose::Str(Cow::Owned(s)))
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<Loose<'a>, E> {
                Ok(Loose::Num(n.into()))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<Loose<'a>, E> {
                Ok(Loose::Num(n.into()))
            }
            fn visit_f64<E: Error>(self, n: f64) -> Result<Loose<'a>, E> {
                Ok(Number::from_f64(n).map_or(Loose::Absent, Loose::Num))
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<Loose<'a>, E> {
                Ok(Loose::Absent)
            }
            fn visit_unit<E: Error>(self) -> Result<Loose<'a>, E> {
                Ok(Loose::Absent)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose<'a>, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Loose::Absent)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<'a>, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Loose::Absent)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A visitor's answer to every scalar (a borrowed string reaches `visit_str` by serde's default)
/// for a type that only looks inside arrays or objects.
macro_rules! scalars_read_as {
    ($value:expr) => {
        fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// An array field: its items, or whether it was missing/`null` or some other value (the
/// readers that need an array refuse the latter, those that only look into one skip it).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) enum List<T> {
    #[default]
    Absent,
    Items(Vec<T>),
    Other,
}

impl<T> List<T> {
    /// The items; none for anything that is not an array.
    pub(crate) fn items(&self) -> &[T] {
        match self {
            List::Items(items) => items,
            _ => &[],
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_unit<E: Error>(self) -> Result<List<T>, E> {
                Ok(List::Absent)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<T>, A::Error> {
                IgnoredAny.visit_map(map).map(|_| List::Other)
            }
            scalars_read_as!(List::Other);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object field read as `T`, or `None` for any other value. `T`'s own fields are all
/// optional (`#[serde(default)]`), so a missing member reads as absent.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Object<T>(pub(crate) Option<T>);

impl<T: Default> Object<T> {
    /// The object's fields, all absent when it was not an object.
    pub(crate) fn or_default(&self) -> Cow<'_, T>
    where
        T: Clone,
    {
        self.0
            .as_ref()
            .map_or_else(|| Cow::Owned(T::default()), Cow::Borrowed)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Object(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Object<T>, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Object(None))
            }
            fn visit_unit<E: Error>(self) -> Result<Object<T>, E> {
                Ok(Object(None))
            }
            scalars_read_as!(Object(None));
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Probe<'a> {
        #[serde(borrow)]
        s: Loose<'a>,
        l: List<u8>,
        o: Object<Inner>,
    }

    #[derive(serde::Deserialize, Default, Debug, Clone, PartialEq)]
    #[serde(default)]
    struct Inner {
        n: u8,
    }

    fn probe(json: &str) -> Probe<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn scalars_read_as_a_value_tree_reads_them() {
        assert_eq!(probe(r#"{"s":" 42 "}"#).s.int(), Some(42));
        assert_eq!(probe(r#"{"s":-7}"#).s.int(), Some(-7));
        assert_eq!(probe(r#"{"s":18446744073709551615}"#).s.int(), Some(-1));
        assert_eq!(probe(r#"{"s":1.5}"#).s.int(), None);
        assert_eq!(probe(r#"{"s":"x"}"#).s.int(), None);
        assert_eq!(
            probe(r#"{"s":39.90498}"#).s.string().as_deref(),
            Some("39.90498")
        );
        assert_eq!(probe(r#"{"s":1e-7}"#).s.string().as_deref(), Some("1e-7"));
        for other in ["true", "null", "[1,[2]]", r#"{"a":{"b":1}}"#] {
            assert_eq!(
                probe(&format!(r#"{{"s":{other}}}"#)).s,
                Loose::Absent,
                "{other}"
            );
        }
        assert_eq!(probe("{}").s, Loose::Absent);
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        assert!(matches!(
            probe(r#"{"s":"plain 中文"}"#).s,
            Loose::Str(Cow::Borrowed("plain 中文"))
        ));
        let escaped = probe(r#"{"s":"a\"b\u4e2d"}"#).s;
        assert!(matches!(&escaped, Loose::Str(Cow::Owned(s)) if s == "a\"b中"));
    }

    #[test]
    fn lists_and_objects_tell_absent_from_other_values() {
        assert_eq!(probe(r#"{"l":[1,2]}"#).l, List::Items(vec![1, 2]));
        assert_eq!(probe(r#"{"l":null}"#).l, List::Absent);
        assert_eq!(probe("{}").l, List::Absent);
        for other in ["{}", "1", r#""x""#, "false", "-1", "0.5"] {
            assert_eq!(
                probe(&format!(r#"{{"l":{other}}}"#)).l,
                List::Other,
                "{other}"
            );
        }
        assert_eq!(
            probe(r#"{"o":{"n":3,"x":[1]}}"#).o,
            Object(Some(Inner { n: 3 }))
        );
        for other in ["[]", "1", r#""x""#, "null", "true"] {
            let o = probe(&format!(r#"{{"o":{other}}}"#)).o;
            assert_eq!(o, Object(None), "{other}");
            assert_eq!(*o.or_default(), Inner::default());
        }
    }

    #[test]
    fn syntax_errors_still_fail() {
        for bad in [r#"{"s":[1,}"#, r#"{"o":{"n":}}"#, r#"{"l":[1"#] {
            assert!(serde_json::from_str::<Probe<'_>>(bad).is_err(), "{bad}");
        }
    }
}
