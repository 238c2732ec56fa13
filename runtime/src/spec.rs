//! The topology file: YAML as users write it, before kinds are resolved.
//!
//! ```yaml
//! name: wordcount
//! workers: 2
//! config: { message_timeout: 30s, max_spout_pending: 5000 }
//! spouts:
//!   - { id: lines, kind: file, parallelism: 1, args: { path: input.txt } }
//! bolts:
//!   - id: split
//!     kind: split
//!     parallelism: 2
//!     args: { field: line }
//!     inputs: [ { from: lines, grouping: shuffle } ]
//! ```
//!
//! Each component is read on its own so that an error names it.

use serde::{Deserialize, Serialize};

use crate::config::TopologyConfig;
use crate::grouping::Grouping;
use crate::topology::TopologyError;

/// A parsed topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// The topology's name.
    pub name: String,
    /// How many worker processes it asks for in a cluster.
    #[serde(default = "one")]
    pub workers: u32,
    /// Settings.
    #[serde(default)]
    pub config: TopologyConfig,
    /// Spouts, in order.
    #[serde(default)]
    pub spouts: Vec<SpoutSpec>,
    /// Bolts, in order.
    #[serde(default)]
    pub bolts: Vec<BoltSpec>,
}

/// A spout in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoutSpec {
    /// The component id.
    pub id: String,
    /// The registered kind.
    pub kind: String,
    /// How many tasks run it.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// The kind's arguments.
    #[serde(default)]
    pub args: serde_yaml::Value,
}

/// A bolt in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoltSpec {
    /// The component id.
    pub id: String,
    /// The registered kind.
    pub kind: String,
    /// How many tasks run it.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// The kind's arguments.
    #[serde(default)]
    pub args: serde_yaml::Value,
    /// The streams it subscribes to.
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
}

/// A subscription in a topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The upstream component.
    pub from: String,
    /// The upstream stream (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The grouping (default: shuffle).
    #[serde(default)]
    pub grouping: Grouping,
}

fn one() -> u32 {
    1
}

/// The top level, with components still unparsed so each can be read on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default = "one")]
    workers: u32,
    #[serde(default)]
    config: serde_yaml::Value,
    #[serde(default)]
    spouts: Vec<serde_yaml::Value>,
    #[serde(default)]
    bolts: Vec<serde_yaml::Value>,
}

impl TopologySpec {
    /// The task count and the args of the component called `id` (spout or bolt), to change them.
    pub fn component_mut(&mut self, id: &str) -> Option<(&mut u32, &mut serde_yaml::Value)> {
        let spouts = self.spouts.iter_mut().map(|s| (&s.id, &mut s.parallelism, &mut s.args));
        let bolts = self.bolts.iter_mut().map(|b| (&b.id, &mut b.parallelism, &mut b.args));
        spouts.chain(bolts).find(|(c, ..)| *c == id).map(|(_, parallelism, args)| (parallelism, args))
    }

    /// Parses a topology file's text; `origin` (the file name) starts every error message.
    pub fn parse(yaml: &str, origin: &str) -> Result<TopologySpec, TopologyError> {
        let raw: RawSpec = serde_yaml::from_str(yaml)
            .map_err(|e| TopologyError::topology(origin, format!("invalid topology file: {e}")))?;
        let config = if raw.config.is_null() {
            TopologyConfig::default()
        } else {
            serde_yaml::from_value(raw.config).map_err(|e| TopologyError::topology(origin, format!("config: {e}")))?
        };
        let spouts = raw
            .spouts
            .into_iter()
            .enumerate()
            .map(|(i, v)| component(v, origin, "spouts", i))
            .collect::<Result<_, _>>()?;
        let bolts = raw
            .bolts
            .into_iter()
            .enumerate()
            .map(|(i, v)| component(v, origin, "bolts", i))
            .collect::<Result<_, _>>()?;
        Ok(TopologySpec { name: raw.name, workers: raw.workers, config, spouts, bolts })
    }
}

fn component<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    origin: &str,
    list: &str,
    index: usize,
) -> Result<T, TopologyError> {
    let id = value.get("id").and_then(|v| v.as_str()).map(str::to_string);
    serde_yaml::from_value(value).map_err(|e| match id {
        Some(id) => TopologyError::component(origin, &id, e.to_string()),
        None => TopologyError::topology(origin, format!("{list}[{index}]: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let yaml = r#"
name: wordcount
workers: 2
config: { message_timeout: 30s, max_spout_pending: 5000 }
spouts:
  - { id: lines, kind: file, parallelism: 1, args: { path: input.txt } }
bolts:
  - id: count
    kind: count
    parallelism: 2
    args: { key: word }
    inputs: [ { from: lines, grouping: { fields: [word] } } ]
"#;
        let spec = TopologySpec::parse(yaml, "t.yaml").unwrap();
        assert_eq!(spec.workers, 2);
        assert_eq!(spec.config.max_spout_pending, 5000);
        assert_eq!(spec.config.message_timeout, std::time::Duration::from_secs(30));
        assert_eq!(spec.bolts[0].inputs[0].grouping, Grouping::Fields(vec!["word".into()]));
    }

    #[test]
    fn unknown_component_field_names_the_component() {
        let yaml = "name: t\nspouts:\n  - { id: lines, kind: file, parallelsm: 2 }\n";
        let err = TopologySpec::parse(yaml, "t.yaml").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml: component 'lines': unknown field `parallelsm`"), "{err}");
    }

    #[test]
    fn unknown_config_field_is_rejected() {
        let err = TopologySpec::parse("name: t\nconfig: { max_pending: 3 }\n", "t.yaml").unwrap_err().to_string();
        assert!(err.contains("config: unknown field `max_pending`"), "{err}");
    }
}
