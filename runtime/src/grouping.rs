//! Stream groupings: how the tuples of a stream are divided among a subscriber's tasks.

use std::fmt;
use std::hash::Hasher;

use rustc_hash::FxHasher;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tuple::TaskId;
use crate::value::Value;

/// How a subscribing bolt's tasks share a stream. In a topology file:
/// `grouping: shuffle` or `grouping: { fields: [word] }`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Grouping {
    /// Each tuple goes to one task, spread evenly.
    #[default]
    Shuffle,
    /// Tuples with equal values of these fields go to the same task.
    Fields(Vec<String>),
    /// Every tuple goes to every task.
    All,
    /// Every tuple goes to the task with the lowest id.
    Global,
    /// The emitter picks the task (`emit_direct`); the stream must be declared direct.
    Direct,
    /// Like shuffle, but prefers tasks in the emitter's own worker process.
    LocalOrShuffle,
    /// The emitter does not care; currently the same as shuffle.
    None,
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grouping::Shuffle => f.write_str("shuffle"),
            Grouping::Fields(fields) => write!(f, "fields({})", fields.join(", ")),
            Grouping::All => f.write_str("all"),
            Grouping::Global => f.write_str("global"),
            Grouping::Direct => f.write_str("direct"),
            Grouping::LocalOrShuffle => f.write_str("local_or_shuffle"),
            Grouping::None => f.write_str("none"),
        }
    }
}

const GROUPING_NAMES: &[&str] = &["shuffle", "fields", "all", "global", "direct", "local_or_shuffle", "none"];

impl Serialize for Grouping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Grouping::Fields(fields) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("fields", fields)?;
                map.end()
            }
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Grouping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GroupingVisitor;
        impl<'de> Visitor<'de> for GroupingVisitor {
            type Value = Grouping;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a grouping: shuffle, all, global, direct, local_or_shuffle, none, or { fields: [...] }")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Grouping, E> {
                Ok(match name {
                    "shuffle" => Grouping::Shuffle,
                    "all" => Grouping::All,
                    "global" => Grouping::Global,
                    "direct" => Grouping::Direct,
                    "local_or_shuffle" => Grouping::LocalOrShuffle,
                    "none" => Grouping::None,
                    "fields" => return Err(E::custom("a fields grouping names its fields: { fields: [f1, f2] }")),
                    other => return Err(E::unknown_variant(other, GROUPING_NAMES)),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Grouping, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| de::Error::custom("empty grouping"))?;
                if key != "fields" {
                    return Err(de::Error::custom(format!(
                        "unknown grouping `{key}`: only `fields` takes arguments ({{ fields: [f1, f2] }})"
                    )));
                }
                let fields: Vec<String> = map.next_value()?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!("a grouping has one key; found `{extra}` after `fields`")));
                }
                Ok(Grouping::Fields(fields))
            }
        }
        deserializer.deserialize_any(GroupingVisitor)
    }
}

/// One subscriber of a stream, resolved to task ids and field positions.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    tasks: Vec<TaskId>,
    route: Route,
}

#[derive(Clone, Debug)]
enum Route {
    /// Round-robin over `tasks`, starting at `next`.
    RoundRobin {
        next: usize,
    },
    Fields(Vec<usize>),
    All,
    Global,
    Direct,
}

impl Target {
    /// A subscriber with `tasks` (sorted), where `field_index` resolves a field name of the
    /// stream and `is_local` tells which tasks share the emitter's process.
    pub(crate) fn new(
        grouping: &Grouping,
        mut tasks: Vec<TaskId>,
        field_index: impl Fn(&str) -> usize,
        is_local: impl Fn(TaskId) -> bool,
        emitter_index: u32,
    ) -> Self {
        tasks.sort_unstable();
        let round_robin = |tasks: &[TaskId]| Route::RoundRobin { next: emitter_index as usize % tasks.len().max(1) };
        let route = match grouping {
            Grouping::Shuffle | Grouping::None => round_robin(&tasks),
            Grouping::LocalOrShuffle => {
                let local: Vec<TaskId> = tasks.iter().copied().filter(|t| is_local(*t)).collect();
                if !local.is_empty() {
                    tasks = local;
                }
                round_robin(&tasks)
            }
            Grouping::Fields(names) => Route::Fields(names.iter().map(|n| field_index(n)).collect()),
            Grouping::All => Route::All,
            Grouping::Global => Route::Global,
            Grouping::Direct => Route::Direct,
        };
        Target { tasks, route }
    }

    /// Appends the tasks a tuple with `values` goes to. Direct subscribers receive nothing
    /// here: they are reached with [`Target::accepts_direct`].
    #[inline]
    pub(crate) fn select(&mut self, values: &[Value], out: &mut Vec<TaskId>) {
        match &mut self.route {
            Route::RoundRobin { next } => {
                out.push(self.tasks[*next]);
                *next += 1;
                if *next == self.tasks.len() {
                    *next = 0;
                }
            }
            Route::Fields(indices) => {
                let mut hasher = FxHasher::default();
                for &i in indices.iter() {
                    values[i].stable_hash(&mut hasher);
                }
                let slot = fold_hash(hasher.finish()) % self.tasks.len() as u64;
                out.push(self.tasks[slot as usize]);
            }
            Route::All => out.extend_from_slice(&self.tasks),
            Route::Global => out.push(self.tasks[0]),
            Route::Direct => {}
        }
    }

    /// Whether an `emit_direct` to `task` is delivered to this subscriber.
    pub(crate) fn accepts_direct(&self, task: TaskId) -> bool {
        matches!(self.route, Route::Direct) && self.tasks.contains(&task)
    }
}

/// Mixes the high bits of an Fx hash into the low ones, which the modulo keeps.
#[inline]
fn fold_hash(h: u64) -> u64 {
    h ^ (h >> 29) ^ (h >> 47)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;

    fn target(g: Grouping, tasks: &[TaskId]) -> Target {
        Target::new(&g, tasks.to_vec(), |_| 0, |_| true, 0)
    }

    fn route(t: &mut Target, v: &[Value]) -> Vec<TaskId> {
        let mut out = Vec::new();
        t.select(v, &mut out);
        out
    }

    #[test]
    fn shuffle_spreads_evenly() {
        let mut t = target(Grouping::Shuffle, &[7, 5, 6]);
        let mut counts = [0; 3];
        for _ in 0..300 {
            for task in route(&mut t, &values!["x"]) {
                counts[(task - 5) as usize] += 1;
            }
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn fields_sends_equal_keys_to_one_task_and_uses_every_task() {
        let mut t = target(Grouping::Fields(vec!["w".into()]), &[1, 2, 3, 4]);
        let mut seen = std::collections::HashMap::new();
        for i in 0..1000 {
            let key = format!("k{}", i % 50);
            let task = route(&mut t, &values![key.as_str()])[0];
            assert_eq!(*seen.entry(key).or_insert(task), task);
        }
        let used: std::collections::HashSet<_> = seen.values().collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn all_global_direct() {
        assert_eq!(route(&mut target(Grouping::All, &[3, 1, 2]), &values![1]), vec![1, 2, 3]);
        assert_eq!(route(&mut target(Grouping::Global, &[3, 1, 2]), &values![1]), vec![1]);
        let mut direct = target(Grouping::Direct, &[3, 4]);
        assert!(route(&mut direct, &values![1]).is_empty());
        assert!(direct.accepts_direct(4));
        assert!(!direct.accepts_direct(5));
    }

    #[test]
    fn local_or_shuffle_prefers_local_tasks() {
        let mut t = Target::new(&Grouping::LocalOrShuffle, vec![1, 2, 3, 4], |_| 0, |t| t % 2 == 0, 0);
        for _ in 0..10 {
            assert_eq!(route(&mut t, &values![1])[0] % 2, 0);
        }
    }

    #[test]
    fn yaml_forms() {
        let g: Grouping = serde_yaml::from_str("shuffle").unwrap();
        assert_eq!(g, Grouping::Shuffle);
        let g: Grouping = serde_yaml::from_str("{ fields: [word] }").unwrap();
        assert_eq!(g, Grouping::Fields(vec!["word".into()]));
        let g: Grouping = serde_yaml::from_str("local_or_shuffle").unwrap();
        assert_eq!(g, Grouping::LocalOrShuffle);
        let err = serde_yaml::from_str::<Grouping>("shufle").unwrap_err().to_string();
        assert!(err.contains("unknown variant `shufle`"), "{err}");
        let g = Grouping::Fields(vec!["a".into()]);
        assert_eq!(serde_yaml::from_str::<Grouping>(&serde_yaml::to_string(&g).unwrap()).unwrap(), g);
    }
}
