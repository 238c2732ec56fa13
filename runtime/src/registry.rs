//! Component kinds by name: how a topology file's `kind:` becomes a factory.
//!
//! A kind is a config struct that deserializes from the component's `args` (with
//! `deny_unknown_fields`, so a misspelt argument is an error) and implements [`SpoutFactory`]
//! or [`BoltFactory`]. Built-in kinds come from `squall-operators`; a user crate adds its own
//! and hands the registry to `squall::main`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::component::{BoltFactory, BoxError, SpoutFactory};
use crate::spec::TopologySpec;
use crate::topology::{Draft, Role, Topology, TopologyError, check};

type MakeSpout = Arc<dyn Fn(serde_yaml::Value) -> Result<Arc<dyn SpoutFactory>, BoxError> + Send + Sync>;
type MakeBolt = Arc<dyn Fn(serde_yaml::Value) -> Result<Arc<dyn BoltFactory>, BoxError> + Send + Sync>;

/// The component kinds a binary knows.
#[derive(Clone, Default)]
pub struct Registry {
    spouts: BTreeMap<String, MakeSpout>,
    bolts: BTreeMap<String, MakeBolt>,
}

/// A missing `args:` reads as an empty mapping, so kinds whose arguments all have defaults
/// need none.
fn args_value(args: serde_yaml::Value) -> serde_yaml::Value {
    if args.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { args }
}

/// Deserializes a kind's arguments; an error names the argument at fault (`rate: invalid type…`).
fn parse_args<C: DeserializeOwned>(args: serde_yaml::Value) -> Result<C, BoxError> {
    serde_path_to_error::deserialize(args_value(args)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // An unknown field's message already names it.
        if path == "." || message.starts_with("unknown field") {
            message.into()
        } else {
            format!("{path}: {message}").into()
        }
    })
}

impl Registry {
    /// A registry with no kinds.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers spout kind `kind`, configured by `C`.
    pub fn spout<C: SpoutFactory + DeserializeOwned>(&mut self, kind: &str) -> &mut Self {
        let make: MakeSpout = Arc::new(|args| {
            let config: C = parse_args(args)?;
            Ok(Arc::new(config) as Arc<dyn SpoutFactory>)
        });
        self.spouts.insert(kind.to_string(), make);
        self
    }

    /// Registers bolt kind `kind`, configured by `C`.
    pub fn bolt<C: BoltFactory + DeserializeOwned>(&mut self, kind: &str) -> &mut Self {
        let make: MakeBolt = Arc::new(|args| {
            let config: C = parse_args(args)?;
            Ok(Arc::new(config) as Arc<dyn BoltFactory>)
        });
        self.bolts.insert(kind.to_string(), make);
        self
    }

    /// The names of the spout kinds.
    pub fn spout_kinds(&self) -> impl Iterator<Item = &str> {
        self.spouts.keys().map(String::as_str)
    }

    /// The names of the bolt kinds.
    pub fn bolt_kinds(&self) -> impl Iterator<Item = &str> {
        self.bolts.keys().map(String::as_str)
    }

    /// Reads, parses and checks a topology file.
    pub fn load_file(&self, path: &Path) -> Result<Topology, TopologyError> {
        let origin = path.display().to_string();
        let yaml = std::fs::read_to_string(path)
            .map_err(|e| TopologyError::topology(&origin, format!("cannot read the topology file: {e}")))?;
        self.load_str(&yaml, &origin)
    }

    /// Parses and checks a topology file's text; `origin` names it in errors.
    pub fn load_str(&self, yaml: &str, origin: &str) -> Result<Topology, TopologyError> {
        self.build(&TopologySpec::parse(yaml, origin)?, origin)
    }

    /// Resolves the kinds of a parsed topology file and checks the result.
    pub fn build(&self, spec: &TopologySpec, origin: &str) -> Result<Topology, TopologyError> {
        let mut drafts = Vec::new();
        for s in &spec.spouts {
            let err = |m: String| TopologyError::component(origin, &s.id, m);
            let make = self.spouts.get(&s.kind).ok_or_else(|| err(self.unknown_kind(&s.kind, "spout")))?;
            let factory = make(s.args.clone()).map_err(|e| err(format!("invalid args for kind '{}': {e}", s.kind)))?;
            drafts.push(Draft {
                id: s.id.clone(),
                kind: s.kind.clone(),
                parallelism: s.parallelism,
                role: Role::Spout(factory),
                inputs: Vec::new(),
            });
        }
        for b in &spec.bolts {
            let err = |m: String| TopologyError::component(origin, &b.id, m);
            let make = self.bolts.get(&b.kind).ok_or_else(|| err(self.unknown_kind(&b.kind, "bolt")))?;
            let factory = make(b.args.clone()).map_err(|e| err(format!("invalid args for kind '{}': {e}", b.kind)))?;
            drafts.push(Draft {
                id: b.id.clone(),
                kind: b.kind.clone(),
                parallelism: b.parallelism,
                role: Role::Bolt(factory),
                inputs: b.inputs.iter().map(|i| (i.from.clone(), i.stream.clone(), i.grouping.clone())).collect(),
            });
        }
        check(origin, &spec.name, spec.workers, spec.config.clone(), drafts)
    }

    fn unknown_kind(&self, kind: &str, role: &str) -> String {
        let (known, other, other_role): (Vec<&str>, bool, &str) = if role == "spout" {
            (self.spout_kinds().collect(), self.bolts.contains_key(kind), "bolt")
        } else {
            (self.bolt_kinds().collect(), self.spouts.contains_key(kind), "spout")
        };
        if other {
            format!("'{kind}' is a {other_role} kind and cannot be used as a {role}")
        } else {
            format!("unknown {role} kind '{kind}' (known {role} kinds: {})", known.join(", "))
        }
    }
}
