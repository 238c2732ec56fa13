//! Tuples: values plus where they came from and which tuple trees they belong to.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::value::{Fields, Value, Values};

/// A task's number, unique within a topology. Tasks are numbered from 0 in the order their
/// components are declared; acker tasks come last.
pub type TaskId = u32;

/// The name of the stream a component emits to when it names none.
pub const DEFAULT_STREAM: &str = "default";

/// Where a tuple was emitted: component, stream and the stream's fields.
///
/// Sources are interned for the life of the process ([`StreamSource::intern`]): a tuple holds a
/// plain `&'static` reference, so moving tuples between threads touches no shared reference
/// count. Memory is bounded by the number of distinct streams ever declared.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StreamSource {
    /// The emitting component's id.
    pub component: SmolStr,
    /// The stream's name.
    pub stream: SmolStr,
    /// The stream's declared fields.
    pub fields: Fields,
}

impl StreamSource {
    /// The one shared source with these parts.
    pub fn intern(component: &str, stream: &str, fields: &Fields) -> &'static StreamSource {
        static SOURCES: OnceLock<Mutex<HashSet<&'static StreamSource>>> = OnceLock::new();
        let wanted = StreamSource { component: component.into(), stream: stream.into(), fields: fields.clone() };
        let mut sources = SOURCES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = sources.get(&wanted) {
            return found;
        }
        let leaked: &'static StreamSource = Box::leak(Box::new(wanted));
        sources.insert(leaked);
        leaked
    }
}

/// Membership of a tuple in one tuple tree: the tree's root id and this tuple's edge id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The id of the spout tuple at the root of the tree.
    pub root: u64,
    /// The random id of the edge that delivered this tuple.
    pub edge: u64,
}

/// The trees a tuple belongs to; almost always one.
pub type Anchors = SmallVec<[Anchor; 1]>;

/// A tuple as a bolt receives it.
#[derive(Clone, Debug)]
pub struct Tuple {
    pub(crate) values: Values,
    pub(crate) source: &'static StreamSource,
    pub(crate) source_task: TaskId,
    pub(crate) anchors: Anchors,
}

impl Tuple {
    /// A tuple from its parts, for tests of bolts outside a running topology.
    pub fn new(source: &'static StreamSource, source_task: TaskId, values: Values) -> Self {
        Tuple { values, source, source_task, anchors: Anchors::new() }
    }

    /// The value of the field called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.source.fields.index_of(name).and_then(|i| self.values.get(i))
    }

    /// The string value of the field called `name`, if it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// The value at position `index`.
    pub fn value(&self, index: usize) -> Option<&Value> {
        self.values.get(index)
    }

    /// All values, in field order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The values, taken out of the tuple.
    pub fn into_values(self) -> Values {
        self.values
    }

    /// The stream's field names.
    pub fn fields(&self) -> &Fields {
        &self.source.fields
    }

    /// The id of the component that emitted this tuple.
    pub fn component(&self) -> &str {
        &self.source.component
    }

    /// The stream this tuple was emitted on.
    pub fn stream(&self) -> &str {
        &self.source.stream
    }

    /// The task that emitted this tuple.
    pub fn source_task(&self) -> TaskId {
        self.source_task
    }

    /// The tuple as a JSON object `{field: value, ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::with_capacity(self.values.len());
        for (name, value) in self.source.fields.names().iter().zip(&self.values) {
            map.insert(name.to_string(), value.to_json());
        }
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;

    #[test]
    fn fields_by_name() {
        let source = StreamSource::intern("count", DEFAULT_STREAM, &Fields::from(["word", "count"]));
        assert!(std::ptr::eq(source, StreamSource::intern("count", DEFAULT_STREAM, &Fields::from(["word", "count"]))));
        let t = Tuple::new(source, 3, values!["fox", 2]);
        assert_eq!(t.get_str("word"), Some("fox"));
        assert_eq!(t.get("count"), Some(&Value::Int(2)));
        assert_eq!(t.get("missing"), None);
        assert_eq!(t.to_json(), serde_json::json!({"word": "fox", "count": 2}));
        assert_eq!((t.component(), t.stream(), t.source_task()), ("count", "default", 3));
    }
}
