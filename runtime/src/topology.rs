//! Topologies: components wired by stream subscriptions, checked before they run.
//!
//! A [`Topology`] is always valid: both ways of making one, [`TopologyBuilder`] in Rust and
//! [`Registry::load_file`](crate::Registry::load_file) from YAML, go through the same checks
//! (unique ids, parallelism ≥ 1, inputs from existing components and streams, grouping fields
//! the upstream declares, no cycles, what each component's factory requires of its inputs).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use smol_str::SmolStr;

use crate::component::{BoltFactory, InputStream, SpoutFactory, StreamDecl};
use crate::config::TopologyConfig;
use crate::grouping::Grouping;
use crate::tuple::DEFAULT_STREAM;

/// Why a topology was rejected: where (the file or topology name, and the component) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    /// The topology file, or the topology's name when it was built in Rust.
    pub origin: String,
    /// The component at fault, when one is.
    pub component: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.component {
            Some(c) => write!(f, "{}: component '{}': {}", self.origin, c, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for TopologyError {}

impl TopologyError {
    pub(crate) fn topology(origin: &str, message: impl Into<String>) -> Self {
        TopologyError { origin: origin.into(), component: None, message: message.into() }
    }

    pub(crate) fn component(origin: &str, component: &str, message: impl Into<String>) -> Self {
        TopologyError { origin: origin.into(), component: Some(component.into()), message: message.into() }
    }
}

/// A bolt's subscription to a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// The upstream component's id.
    pub from: SmolStr,
    /// The upstream stream's name.
    pub stream: SmolStr,
    /// How the bolt's tasks share the stream.
    pub grouping: Grouping,
}

/// Whether a component is a spout or a bolt, with its factory.
#[derive(Clone)]
pub enum Role {
    /// A source of tuples.
    Spout(Arc<dyn SpoutFactory>),
    /// A processing step.
    Bolt(Arc<dyn BoltFactory>),
}

/// One component of a checked topology.
#[derive(Clone)]
pub struct Component {
    /// The component's id.
    pub id: SmolStr,
    /// The registered kind it was made from (`rust` for components built in code).
    pub kind: SmolStr,
    /// How many tasks run it.
    pub parallelism: u32,
    /// Spout or bolt, and its factory.
    pub role: Role,
    /// The streams it subscribes to (none for a spout).
    pub inputs: Vec<Input>,
    /// The streams it emits.
    pub outputs: Vec<StreamDecl>,
}

impl Component {
    /// Whether this is a spout.
    pub fn is_spout(&self) -> bool {
        matches!(self.role, Role::Spout(_))
    }

    /// The args of this component that may change while it runs (its factory's
    /// `reloadable`).
    pub fn reloadable(&self) -> &[&str] {
        match &self.role {
            Role::Spout(factory) => factory.reloadable(),
            Role::Bolt(factory) => factory.reloadable(),
        }
    }

    /// The declared stream called `name`.
    pub fn output(&self, name: &str) -> Option<&StreamDecl> {
        self.outputs.iter().find(|s| s.name == name)
    }
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Component")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("parallelism", &self.parallelism)
            .field("spout", &self.is_spout())
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// A checked topology, ready to run. Components are kept in declaration order.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The topology's name.
    pub name: String,
    /// How many worker processes it asks for in a cluster.
    pub workers: u32,
    /// Its settings.
    pub config: TopologyConfig,
    /// Its components.
    pub components: Vec<Component>,
}

impl Topology {
    /// The component called `id`.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}

/// A component before the checks: what the builder and the YAML loader collect.
pub(crate) struct Draft {
    pub id: String,
    pub kind: String,
    pub parallelism: u32,
    pub role: Role,
    pub inputs: Vec<(String, Option<String>, Grouping)>,
}

/// Runs every check and resolves each component's output streams in dependency order.
pub(crate) fn check(
    origin: &str,
    name: &str,
    workers: u32,
    config: TopologyConfig,
    drafts: Vec<Draft>,
) -> Result<Topology, TopologyError> {
    check_name(name).map_err(|m| TopologyError::topology(origin, format!("topology name: {m}")))?;
    config.validate().map_err(|m| TopologyError::topology(origin, m))?;
    if workers == 0 {
        return Err(TopologyError::topology(origin, "workers must be at least 1"));
    }
    if !drafts.iter().any(|d| matches!(d.role, Role::Spout(_))) {
        return Err(TopologyError::topology(origin, "a topology needs at least one spout"));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, d) in drafts.iter().enumerate() {
        let err = |m: String| TopologyError::component(origin, &d.id, m);
        check_name(&d.id).map_err(|m| err(format!("id: {m}")))?;
        if index.insert(d.id.as_str(), i).is_some() {
            return Err(err("two components have this id".into()));
        }
        if d.parallelism == 0 {
            return Err(err("parallelism must be at least 1".into()));
        }
        if matches!(d.role, Role::Bolt(_)) && d.inputs.is_empty() {
            return Err(err("a bolt needs at least one input".into()));
        }
        for (from, _, _) in &d.inputs {
            if !index.contains_key(from.as_str()) && !drafts.iter().any(|o| &o.id == from) {
                return Err(err(format!("input from '{from}', which is not a component of the topology")));
            }
        }
    }
    let order = dependency_order(&drafts, &index).map_err(|cycle| {
        TopologyError::component(origin, &cycle[0], format!("inputs form a cycle: {}", cycle.join(" -> ")))
    })?;

    let mut outputs: Vec<Option<Vec<StreamDecl>>> = vec![None; drafts.len()];
    let mut inputs: Vec<Vec<Input>> = vec![Vec::new(); drafts.len()];
    for i in order {
        let d = &drafts[i];
        let err = |m: String| TopologyError::component(origin, &d.id, m);
        let declared = match &d.role {
            Role::Spout(factory) => factory.declare(),
            Role::Bolt(factory) => {
                let mut streams = Vec::new();
                for (from, stream, grouping) in &d.inputs {
                    let stream_name = stream.as_deref().unwrap_or(DEFAULT_STREAM);
                    let upstream = outputs[index[from.as_str()]].as_ref().expect("dependency order");
                    let decl = upstream.iter().find(|s| s.name == stream_name).ok_or_else(|| {
                        let names: Vec<&str> = upstream.iter().map(|s| s.name.as_str()).collect();
                        err(format!(
                            "input from '{from}' on stream '{stream_name}', which '{from}' does not emit (its streams: {})",
                            if names.is_empty() { "none".into() } else { names.join(", ") }
                        ))
                    })?;
                    check_grouping(grouping, decl, from).map_err(err)?;
                    inputs[i].push(Input { from: from.into(), stream: stream_name.into(), grouping: grouping.clone() });
                    streams.push(InputStream {
                        component: from.into(),
                        stream: stream_name.into(),
                        fields: decl.fields.clone(),
                    });
                }
                factory.declare(&streams).map_err(|e| err(e.to_string()))?
            }
        };
        for (j, s) in declared.iter().enumerate() {
            check_name(&s.name).map_err(|m| err(format!("stream name: {m}")))?;
            if declared[..j].iter().any(|o| o.name == s.name) {
                return Err(err(format!("declares stream '{}' twice", s.name)));
            }
        }
        outputs[i] = Some(declared);
    }

    let components = drafts
        .into_iter()
        .zip(outputs)
        .zip(inputs)
        .map(|((d, outputs), inputs)| Component {
            id: d.id.into(),
            kind: d.kind.into(),
            parallelism: d.parallelism,
            role: d.role,
            inputs,
            outputs: outputs.expect("every component resolved"),
        })
        .collect();
    Ok(Topology { name: name.to_string(), workers, config, components })
}

fn check_grouping(grouping: &Grouping, decl: &StreamDecl, from: &str) -> Result<(), String> {
    match grouping {
        Grouping::Fields(fields) => {
            if fields.is_empty() {
                return Err(format!("fields grouping on '{from}' names no field"));
            }
            for f in fields {
                if !decl.fields.contains(f) {
                    return Err(format!(
                        "fields grouping on `{f}`, which stream '{}' of '{from}' does not declare (its fields: {})",
                        decl.name, decl.fields
                    ));
                }
            }
        }
        Grouping::Direct if !decl.direct => {
            return Err(format!("direct grouping on stream '{}' of '{from}', which is not a direct stream", decl.name));
        }
        _ if decl.direct && *grouping != Grouping::Direct => {
            return Err(format!(
                "stream '{}' of '{from}' is a direct stream: subscribe to it with grouping direct",
                decl.name
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Components ordered so that each comes after everything it reads from, or a cycle.
fn dependency_order(drafts: &[Draft], index: &HashMap<&str, usize>) -> Result<Vec<usize>, Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        i: usize,
        drafts: &[Draft],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<String>> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = path.iter().position(|&p| p == i).expect("on path");
                let mut cycle: Vec<String> = path[start..].iter().map(|&p| drafts[p].id.clone()).collect();
                cycle.push(drafts[i].id.clone());
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        path.push(i);
        for (from, _, _) in &drafts[i].inputs {
            visit(index[from.as_str()], drafts, index, marks, path, order)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; drafts.len()];
    let mut order = Vec::with_capacity(drafts.len());
    for i in 0..drafts.len() {
        visit(i, drafts, index, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Topology, component and stream names: they become parts of znode paths and file names.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 128 {
        return Err(format!("'{name}' is longer than 128 characters"));
    }
    if name.starts_with("__") {
        return Err(format!("'{name}': names starting with `__` are reserved for the system"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("'{name}' contains {c:?}; use letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

/// Builds a topology in Rust.
///
/// ```
/// use squall_runtime::prelude::*;
/// # struct Lines; impl Spout for Lines { fn next_tuple(&mut self, _: &mut SpoutOutput<'_>) {} }
/// # struct Print; impl Bolt for Print {
/// #     fn execute(&mut self, _: &Tuple, _: &mut BoltOutput<'_>) -> Result<(), BoxError> { Ok(()) } }
/// let mut builder = TopologyBuilder::new("demo");
/// builder.spout("lines", 1, spout_fn(["line"], |_| Lines));
/// builder.bolt("print", 2, bolt_fn(Vec::<&str>::new(), |_| Print)).shuffle("lines");
/// let topology = builder.build().unwrap();
/// assert_eq!(topology.components.len(), 2);
/// ```
pub struct TopologyBuilder {
    name: String,
    workers: u32,
    config: TopologyConfig,
    drafts: Vec<Draft>,
}

/// Declares the inputs of a bolt added with [`TopologyBuilder::bolt`].
pub struct BoltDeclarer<'a> {
    draft: &'a mut Draft,
}

impl BoltDeclarer<'_> {
    /// Subscribes to `stream` of `from` with `grouping`.
    pub fn input(&mut self, from: &str, stream: &str, grouping: Grouping) -> &mut Self {
        self.draft.inputs.push((from.into(), Some(stream.into()), grouping));
        self
    }

    /// Subscribes to the default stream of `from` with `grouping`.
    pub fn grouping(&mut self, from: &str, grouping: Grouping) -> &mut Self {
        self.draft.inputs.push((from.into(), None, grouping));
        self
    }

    /// Shuffle grouping on the default stream of `from`.
    pub fn shuffle(&mut self, from: &str) -> &mut Self {
        self.grouping(from, Grouping::Shuffle)
    }

    /// Fields grouping on the default stream of `from`.
    pub fn fields(&mut self, from: &str, fields: &[&str]) -> &mut Self {
        self.grouping(from, Grouping::Fields(fields.iter().map(|f| f.to_string()).collect()))
    }

    /// All grouping on the default stream of `from`.
    pub fn all(&mut self, from: &str) -> &mut Self {
        self.grouping(from, Grouping::All)
    }

    /// Global grouping on the default stream of `from`.
    pub fn global(&mut self, from: &str) -> &mut Self {
        self.grouping(from, Grouping::Global)
    }

    /// Local-or-shuffle grouping on the default stream of `from`.
    pub fn local_or_shuffle(&mut self, from: &str) -> &mut Self {
        self.grouping(from, Grouping::LocalOrShuffle)
    }
}

impl TopologyBuilder {
    /// An empty topology called `name`, with default settings and one worker.
    pub fn new(name: &str) -> Self {
        TopologyBuilder { name: name.into(), workers: 1, config: TopologyConfig::default(), drafts: Vec::new() }
    }

    /// Replaces the settings.
    pub fn config(&mut self, config: TopologyConfig) -> &mut Self {
        self.config = config;
        self
    }

    /// Sets how many worker processes the topology asks for in a cluster.
    pub fn workers(&mut self, workers: u32) -> &mut Self {
        self.workers = workers;
        self
    }

    /// Adds a spout run by `parallelism` tasks.
    pub fn spout(&mut self, id: &str, parallelism: u32, factory: Arc<dyn SpoutFactory>) -> &mut Self {
        self.drafts.push(Draft {
            id: id.into(),
            kind: "rust".into(),
            parallelism,
            role: Role::Spout(factory),
            inputs: Vec::new(),
        });
        self
    }

    /// Adds a bolt run by `parallelism` tasks; declare its inputs on the returned value.
    pub fn bolt(&mut self, id: &str, parallelism: u32, factory: Arc<dyn BoltFactory>) -> BoltDeclarer<'_> {
        self.drafts.push(Draft {
            id: id.into(),
            kind: "rust".into(),
            parallelism,
            role: Role::Bolt(factory),
            inputs: Vec::new(),
        });
        BoltDeclarer { draft: self.drafts.last_mut().expect("just pushed") }
    }

    /// Checks the topology and returns it ready to run.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let origin = format!("topology '{}'", self.name);
        check(&origin, &self.name, self.workers, self.config, self.drafts)
    }
}
