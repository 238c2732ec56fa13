//! Storm's acker: tracks every tuple tree with one 64-bit XOR.
//!
//! Every edge of a tree (a tuple sent to a task) has a random 64-bit id. The spout reports the
//! XOR of the edges it created ([`AckerMsg::Init`]); a bolt reports, for each input it acks, the
//! input's edge XOR the edges of the tuples it anchored to it ([`AckerMsg::Ack`]). Each edge
//! thus enters the XOR twice, and the value returns to zero exactly when every tuple of the tree
//! has been acked (a false zero has probability 2⁻⁶⁴ per update). Messages may arrive in any
//! order: a tree completes when its value is zero and its `Init` has been seen.
//!
//! Entries live in two generations rotated every message timeout, so a tree whose spout timed it
//! out is forgotten after at most two timeouts.

use rustc_hash::FxHashMap;

use crate::tuple::TaskId;

/// A message to an acker task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckerMsg {
    /// A spout emitted the root of a tree; `xor` is the XOR of the edges it created.
    Init { root: u64, xor: u64, spout: TaskId },
    /// Edges created or acked in the tree, XORed together.
    Ack { root: u64, xor: u64 },
    /// A tuple of the tree failed.
    Fail { root: u64 },
}

/// What an acker tells a spout task about one of its trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AckEvent {
    pub root: u64,
    pub ok: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    xor: u64,
    spout: Option<TaskId>,
    failed: bool,
}

/// The state of one acker task.
#[derive(Default)]
pub(crate) struct Acker {
    current: FxHashMap<u64, Entry>,
    previous: FxHashMap<u64, Entry>,
}

impl Acker {
    /// Applies one message; returns the spout to notify and the event, when the tree is
    /// decided.
    pub(crate) fn handle(&mut self, msg: AckerMsg) -> Option<(TaskId, AckEvent)> {
        let root = match msg {
            AckerMsg::Init { root, .. } | AckerMsg::Ack { root, .. } | AckerMsg::Fail { root } => root,
        };
        let mut entry = self.current.remove(&root).or_else(|| self.previous.remove(&root)).unwrap_or(Entry {
            xor: 0,
            spout: None,
            failed: false,
        });
        match msg {
            AckerMsg::Init { xor, spout, .. } => {
                entry.xor ^= xor;
                entry.spout = Some(spout);
            }
            AckerMsg::Ack { xor, .. } => entry.xor ^= xor,
            AckerMsg::Fail { .. } => entry.failed = true,
        }
        match entry.spout {
            Some(spout) if entry.failed => Some((spout, AckEvent { root, ok: false })),
            Some(spout) if entry.xor == 0 => Some((spout, AckEvent { root, ok: true })),
            _ => {
                self.current.insert(root, entry);
                None
            }
        }
    }

    /// Forgets the trees not touched for a whole generation.
    pub(crate) fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// How many trees are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_completes_when_every_edge_is_acked_in_any_order() {
        let (e1, e2, e3) = (0x1111, 0x2222_0000, 0x4444_0000_0000);
        let mut a = Acker::default();
        // A downstream ack arrives before the spout's Init.
        assert_eq!(a.handle(AckerMsg::Ack { root: 9, xor: e2 }), None);
        assert_eq!(a.handle(AckerMsg::Init { root: 9, xor: e1, spout: 4 }), None);
        // The bolt that got e1 emitted e2 and e3 and acked e1.
        assert_eq!(a.handle(AckerMsg::Ack { root: 9, xor: e1 ^ e2 ^ e3 }), None);
        let done = a.handle(AckerMsg::Ack { root: 9, xor: e3 });
        assert_eq!(done, Some((4, AckEvent { root: 9, ok: true })));
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn fail_is_reported_once_the_spout_is_known() {
        let mut a = Acker::default();
        assert_eq!(a.handle(AckerMsg::Fail { root: 1 }), None);
        let failed = a.handle(AckerMsg::Init { root: 1, xor: 5, spout: 2 });
        assert_eq!(failed, Some((2, AckEvent { root: 1, ok: false })));
    }

    #[test]
    fn rotation_forgets_untouched_trees_but_keeps_touched_ones() {
        let mut a = Acker::default();
        a.handle(AckerMsg::Init { root: 1, xor: 5, spout: 0 });
        a.handle(AckerMsg::Init { root: 2, xor: 6, spout: 0 });
        a.rotate();
        a.handle(AckerMsg::Ack { root: 2, xor: 1 });
        a.rotate();
        assert_eq!(a.len(), 1);
        assert_eq!(a.handle(AckerMsg::Ack { root: 2, xor: 7 }), Some((0, AckEvent { root: 2, ok: true })));
    }
}
