//! A `squall` binary with a component kind of its own: the `shout` bolt upper-cases a field.
//! This is the example of docs/topology.md, "Adding your own kinds".
//!
//! `cargo run --example custom_kind -- local examples/shout.yaml`

use serde::Deserialize;
use squall::prelude::*;

/// Args of the `shout` bolt: `{ field: line }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShoutConfig {
    #[serde(default = "default_field")]
    field: String,
}

fn default_field() -> String {
    "line".into()
}

impl BoltFactory for ShoutConfig {
    fn declare(&self, inputs: &[InputStream]) -> Result<Vec<StreamDecl>, BoxError> {
        for input in inputs {
            input.require(&self.field, "field")?; // rejects the topology before it runs
        }
        Ok(vec![StreamDecl::default_stream(["shout"])])
    }

    fn create(&self, _ctx: &TaskContext) -> Result<Box<dyn Bolt>, BoxError> {
        Ok(Box::new(Shout { field: self.field.clone() }))
    }
}

struct Shout {
    field: String,
}

impl Bolt for Shout {
    fn execute(&mut self, input: &Tuple, out: &mut BoltOutput<'_>) -> Result<(), BoxError> {
        let text = input.get_str(&self.field).ok_or("the field is not a string")?;
        out.emit(values![text.to_uppercase()]); // anchored to the input
        Ok(()) // acks the input; an Err fails it and its spout tuple is replayed
    }
}

fn main() -> std::process::ExitCode {
    let mut registry = squall::operators::registry();
    registry.bolt::<ShoutConfig>("shout");
    squall::main(registry)
}
