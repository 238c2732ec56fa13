//! Tuple values and field lists.
//!
//! A tuple is a short list of [`Value`]s whose names come from the [`Fields`] its stream
//! declares. Strings are [`SmolStr`]s: words and keys up to 23 bytes live inline, so the common
//! tuple moves between tasks without a heap allocation.

use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use smol_str::SmolStr;

/// One field of a tuple.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(SmolStr),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// The values of one tuple; two fit inline without allocating.
pub type Values = SmallVec<[Value; 2]>;

/// Builds [`Values`] from expressions convertible into [`Value`]:
/// `values!["word", 3]`.
#[macro_export]
macro_rules! values {
    () => { $crate::Values::new() };
    ($($v:expr),+ $(,)?) => {{
        let mut values = $crate::Values::new();
        $( values.push($crate::Value::from($v)); )+
        values
    }};
}

impl Value {
    /// The string inside a `Str`, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `Int`, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number inside an `Int` or a `Float`, as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Feeds the value to `hasher` in a form that is the same in every process and on every
    /// run, so a fields grouping sends a key to the same task wherever it is computed.
    pub fn stable_hash(&self, hasher: &mut impl Hasher) {
        match self {
            Value::Null => hasher.write_u8(0),
            Value::Bool(b) => hasher.write_u8(if *b { 2 } else { 1 }),
            Value::Int(i) => {
                hasher.write_u8(3);
                hasher.write_u64(*i as u64);
            }
            Value::Float(f) => {
                hasher.write_u8(4);
                hasher.write_u64(f.to_bits());
            }
            Value::Str(s) => {
                hasher.write_u8(5);
                hasher.write(s.as_bytes());
            }
            Value::Bytes(b) => {
                hasher.write_u8(6);
                hasher.write(b);
            }
        }
    }

    /// The value as JSON (bytes become an array of numbers).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Value::Str(s) => s.as_str().into(),
            Value::Bytes(b) => b.clone().into(),
        }
    }

    /// The value of a YAML/JSON scalar, for constants written in topology files.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s.into()),
            other => Value::Str(other.to_string().into()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => write!(f, "{b:?}"),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(SmolStr::new(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(SmolStr::from(s))
    }
}
impl From<SmolStr> for Value {
    fn from(s: SmolStr) -> Self {
        Value::Str(s)
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Str(SmolStr::new(s))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u64> for Value {
    /// Saturates at `i64::MAX`.
    fn from(i: u64) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    /// Saturates at `i64::MAX`.
    fn from(i: usize) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

/// The names of a stream's fields, in order. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fields(Arc<[SmolStr]>);

impl Fields {
    /// A field list from names.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        Fields(names.into_iter().map(|n| SmolStr::new(n.as_ref())).collect())
    }

    /// The position of `name`, if the stream has that field.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|f| f == name)
    }

    /// Whether the stream has a field called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    /// The field names.
    pub fn names(&self) -> &[SmolStr] {
        &self.0
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        f.write_str("]")
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Fields {
    fn from(names: [S; N]) -> Self {
        Fields::new(names)
    }
}

impl<S: AsRef<str>> From<Vec<S>> for Fields {
    fn from(names: Vec<S>) -> Self {
        Fields::new(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHasher;

    fn hash(v: &Value) -> u64 {
        let mut h = FxHasher::default();
        v.stable_hash(&mut h);
        h.finish()
    }

    #[test]
    fn stable_hash_distinguishes_types_and_is_repeatable() {
        assert_eq!(hash(&Value::from("a")), hash(&Value::from("a")));
        assert_ne!(hash(&Value::Int(1)), hash(&Value::Float(1.0)));
        assert_ne!(hash(&Value::from("1")), hash(&Value::Int(1)));
    }

    #[test]
    fn values_macro_converts_each_argument() {
        let v = values!["w", 3, true];
        assert_eq!(v.as_slice(), &[Value::from("w"), Value::Int(3), Value::Bool(true)]);
    }

    #[test]
    fn fields_lookup() {
        let f = Fields::from(["word", "count"]);
        assert_eq!(f.index_of("count"), Some(1));
        assert!(!f.contains("line"));
        assert_eq!(f.to_string(), "[word, count]");
    }

    #[test]
    fn json_round_trip_of_scalars() {
        for v in [Value::Null, Value::Bool(true), Value::Int(-4), Value::from("x")] {
            assert_eq!(Value::from_json(&v.to_json()), v);
        }
    }
}
