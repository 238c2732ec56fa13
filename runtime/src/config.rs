//! Per-topology settings: the `config:` block of a topology file.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a topology runs. Every field has a default; a topology file sets the ones it needs:
///
/// ```yaml
/// config: { message_timeout: 30s, max_spout_pending: 5000, acking: true }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// A tuple tree not completed within this time fails and its spout tuple is replayed.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// The most tuple trees one spout task may have in flight (only with acking on).
    pub max_spout_pending: u32,
    /// Whether tuple trees are tracked (at-least-once). Off: at-most-once, and a spout's `ack`
    /// is called as soon as its tuple is emitted.
    pub acking: bool,
    /// How many acker tasks track tuple trees (only with acking on).
    pub ackers: u32,
    /// The most tuples sent between two tasks in one batch.
    pub batch_size: u32,
    /// The most tuples waiting in one task's input queue; a full queue blocks its producers.
    pub queue_capacity: u32,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            message_timeout: Duration::from_secs(30),
            max_spout_pending: 1000,
            acking: true,
            ackers: 1,
            batch_size: 256,
            queue_capacity: 8192,
        }
    }
}

impl TopologyConfig {
    /// Checks the values against each other; the message says which setting is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.message_timeout.is_zero() {
            return Err("config.message_timeout must be greater than 0".into());
        }
        if self.max_spout_pending == 0 {
            return Err("config.max_spout_pending must be at least 1".into());
        }
        if self.acking && self.ackers == 0 {
            return Err("config.ackers must be at least 1 when acking is on".into());
        }
        if self.batch_size == 0 {
            return Err("config.batch_size must be at least 1".into());
        }
        if self.queue_capacity < self.batch_size {
            return Err(format!(
                "config.queue_capacity ({}) must be at least config.batch_size ({})",
                self.queue_capacity, self.batch_size
            ));
        }
        Ok(())
    }

    /// How many batches one input queue holds.
    pub(crate) fn queue_batches(&self) -> usize {
        (self.queue_capacity / self.batch_size).max(1) as usize
    }
}
