//! Tuples as JSON objects, written straight into a buffer.
//!
//! The same object as [`Tuple::to_json`], keys in field order, but serialized straight from the
//! tuple without building a `serde_json::Map` per tuple: sinks write one of these per tuple.

use serde::ser::{Serialize, SerializeMap, Serializer};
use squall_runtime::{Tuple, Value};

/// Appends `tuple` to `out` as one compact JSON object, e.g. `{"word":"fox","count":3}`.
pub(crate) fn write_tuple(tuple: &Tuple, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, &JsonTuple(tuple))
}

struct JsonTuple<'a>(&'a Tuple);

impl Serialize for JsonTuple<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names = self.0.fields().names();
        let mut map = serializer.serialize_map(Some(names.len()))?;
        for (name, value) in names.iter().zip(self.0.values()) {
            map.serialize_entry(name.as_str(), &JsonValue(value))?;
        }
        map.end()
    }
}

struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            // As in `Value::to_json`: JSON has no NaN or infinity.
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Float(_) => serializer.serialize_unit(),
            Value::Str(s) => serializer.serialize_str(s),
            Value::Bytes(b) => serializer.collect_seq(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_runtime::tuple::StreamSource;
    use squall_runtime::{Fields, values};

    fn json(fields: &[&str], values: squall_runtime::Values) -> String {
        let source = StreamSource::intern("c", "default", &Fields::new(fields));
        let mut out = Vec::new();
        write_tuple(&Tuple::new(source, 0, values), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_keep_field_order() {
        assert_eq!(json(&["word", "count"], values!["fox", 3]), r#"{"word":"fox","count":3}"#);
    }

    #[test]
    fn every_value_type_matches_to_json() {
        let fields = ["n", "b", "i", "f", "nan", "s", "bytes"];
        let row = values![Value::Null, true, -4, 2.5, f64::NAN, "q\"uote\n", vec![1u8, 255]];
        let source = StreamSource::intern("c", "default", &Fields::new(fields));
        let tuple = Tuple::new(source, 0, row.clone());
        let written: serde_json::Value = serde_json::from_str(&json(&fields, row)).unwrap();
        assert_eq!(written, tuple.to_json());
    }
}
