//! Watches: the events a change causes ([`EventType`], [`WatchEvent`]) and the registry of who
//! watches what ([`WatchRegistry`]), with ZooKeeper's trigger rules (`DataTree`, `WatchManager`).
//!
//! The tree reports the events of every change; the registry turns each event into the sessions
//! to notify. Rules, as in ZooKeeper:
//! - `getData` and `exists` set a one-shot **data** watch (`exists` also on a missing node);
//!   `getChildren` sets a one-shot **child** watch.
//! - NodeCreated, NodeDataChanged and NodeDeleted fire data watches on the path; NodeDeleted also
//!   fires child watches on the path; NodeChildrenChanged fires child watches on the parent.
//! - One-shot watches are removed when they fire; a session is notified once per event even when
//!   it holds several watches that match.
//! - `addWatch` persistent watches stay and see data and child events of their path;
//!   persistent-recursive watches stay and see data events (created, changed, deleted) of the
//!   path and every descendant, never NodeChildrenChanged.
//!
//! ```
//! use squall_coordinator::watch::{EventType, WatchEvent, WatchKind, WatchRegistry};
//! let mut watches = WatchRegistry::default();
//! watches.add(7, "/a", WatchKind::Data);
//! let event = WatchEvent::new(EventType::NodeDataChanged, "/a", 42);
//! assert_eq!(watches.trigger(&event), vec![7]);
//! assert!(watches.trigger(&event).is_empty(), "one-shot");
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{SessionId, ZnodeTree, Zxid};

/// The type of a watch notification (`Watcher.Event.EventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// 1: the node was created.
    NodeCreated,
    /// 2: the node was deleted.
    NodeDeleted,
    /// 3: the node's data changed.
    NodeDataChanged,
    /// 4: a child was created or deleted.
    NodeChildrenChanged,
}

impl EventType {
    /// ZooKeeper's number for this event type.
    pub fn code(self) -> i32 {
        match self {
            EventType::NodeCreated => 1,
            EventType::NodeDeleted => 2,
            EventType::NodeDataChanged => 3,
            EventType::NodeChildrenChanged => 4,
        }
    }
}

/// One event a change caused: what happened, to which path, in which transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventType,
    /// The path it happened to (the parent, for NodeChildrenChanged).
    pub path: String,
    /// The transaction that caused it (sent in notifications since ZooKeeper 3.9).
    pub zxid: Zxid,
}

impl WatchEvent {
    /// An event from its parts.
    pub fn new(kind: EventType, path: impl Into<String>, zxid: Zxid) -> WatchEvent {
        WatchEvent { kind, path: path.into(), zxid }
    }
}

/// How a watch was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// `getData(watch=true)`: one-shot, fires on NodeDataChanged and NodeDeleted.
    Data,
    /// `exists(watch=true)`: one-shot, also fires on NodeCreated when the node was missing.
    Exist,
    /// `getChildren(watch=true)`: one-shot, fires on NodeChildrenChanged and NodeDeleted.
    Child,
    /// `addWatch` mode 0: stays; data and child events of the path.
    Persistent,
    /// `addWatch` mode 1: stays; data events of the path and all its descendants.
    PersistentRecursive,
}

/// The watch types of `checkWatches`/`removeWatches` (`Watcher.WatcherType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatcherType {
    /// 1: one-shot child watches.
    Children,
    /// 2: one-shot data and exist watches.
    Data,
    /// 3: every watch on the path.
    Any,
    /// 4: persistent watches.
    Persistent,
    /// 5: persistent-recursive watches.
    PersistentRecursive,
}

impl WatcherType {
    /// The type for a wire number.
    pub fn from_code(code: i32) -> Option<WatcherType> {
        Some(match code {
            1 => WatcherType::Children,
            2 => WatcherType::Data,
            3 => WatcherType::Any,
            4 => WatcherType::Persistent,
            5 => WatcherType::PersistentRecursive,
            _ => return None,
        })
    }
}

const STANDARD: u8 = 1;
const PERSISTENT: u8 = 2;
const RECURSIVE: u8 = 4;

/// One of ZooKeeper's two watch tables: path → watching sessions → mode bits.
#[derive(Debug, Default, Clone)]
struct WatchTable {
    by_path: HashMap<String, BTreeMap<SessionId, u8>>,
    by_session: HashMap<SessionId, BTreeSet<String>>,
    recursive: usize,
}

impl WatchTable {
    fn add(&mut self, session: SessionId, path: &str, mode: u8) {
        let modes = self.by_path.entry(path.to_string()).or_default().entry(session).or_insert(0);
        if mode == RECURSIVE && *modes & RECURSIVE == 0 {
            self.recursive += 1;
        }
        *modes |= mode;
        self.by_session.entry(session).or_default().insert(path.to_string());
    }

    fn modes(&self, session: SessionId, path: &str) -> u8 {
        self.by_path.get(path).and_then(|w| w.get(&session)).copied().unwrap_or(0)
    }

    /// Clears `mask` from a session's modes on a path; true when something was cleared.
    fn remove(&mut self, session: SessionId, path: &str, mask: u8) -> bool {
        let Some(watchers) = self.by_path.get_mut(path) else { return false };
        let Some(modes) = watchers.get_mut(&session) else { return false };
        let cleared = *modes & mask;
        if cleared & RECURSIVE != 0 {
            self.recursive -= 1;
        }
        *modes &= !mask;
        if *modes == 0 {
            watchers.remove(&session);
            if watchers.is_empty() {
                self.by_path.remove(path);
            }
            if let Some(paths) = self.by_session.get_mut(&session) {
                paths.remove(path);
                if paths.is_empty() {
                    self.by_session.remove(&session);
                }
            }
        }
        cleared != 0
    }

    fn remove_session(&mut self, session: SessionId) {
        for path in self.by_session.get(&session).cloned().unwrap_or_default() {
            self.remove(session, &path, STANDARD | PERSISTENT | RECURSIVE);
        }
    }

    /// The sessions an event on `path` reaches: every watcher of the path itself (one-shot
    /// watches are consumed) and the recursive watchers of its ancestors.
    fn trigger(&mut self, path: &str, into: &mut BTreeSet<SessionId>) {
        let fired: Vec<(SessionId, u8)> =
            self.by_path.get(path).map(|w| w.iter().map(|(&s, &m)| (s, m)).collect()).unwrap_or_default();
        for (session, modes) in fired {
            into.insert(session);
            if modes & STANDARD != 0 {
                self.remove(session, path, STANDARD);
            }
        }
        if self.recursive == 0 {
            return;
        }
        let mut ancestor = path;
        while let Some((parent, _)) = crate::path::split_parent(ancestor) {
            if parent == ancestor {
                break;
            }
            if let Some(watchers) = self.by_path.get(parent) {
                into.extend(watchers.iter().filter(|(_, m)| **m & RECURSIVE != 0).map(|(s, _)| *s));
            }
            ancestor = parent;
        }
    }

    fn len(&self) -> usize {
        self.by_path.values().map(BTreeMap::len).sum()
    }
}

/// The paths a reconnecting client asks to watch again (`SetWatches2`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchReplay {
    /// One-shot data watches.
    pub data: Vec<String>,
    /// One-shot exist watches.
    pub exist: Vec<String>,
    /// One-shot child watches.
    pub child: Vec<String>,
    /// Persistent watches.
    pub persistent: Vec<String>,
    /// Persistent-recursive watches.
    pub persistent_recursive: Vec<String>,
}

/// Which session watches which path, and how; see the module doc for the rules.
#[derive(Debug, Default, Clone)]
pub struct WatchRegistry {
    data: WatchTable,
    child: WatchTable,
}

impl WatchRegistry {
    /// Registers a watch; registering the same one twice is the same as once.
    pub fn add(&mut self, session: SessionId, path: &str, kind: WatchKind) {
        match kind {
            WatchKind::Data | WatchKind::Exist => self.data.add(session, path, STANDARD),
            WatchKind::Child => self.child.add(session, path, STANDARD),
            WatchKind::Persistent => {
                self.data.add(session, path, PERSISTENT);
                self.child.add(session, path, PERSISTENT);
            }
            WatchKind::PersistentRecursive => self.data.add(session, path, RECURSIVE),
        }
    }

    /// The sessions to notify of `event`, in ascending order, each once; one-shot watches that
    /// fired are removed.
    pub fn trigger(&mut self, event: &WatchEvent) -> Vec<SessionId> {
        let mut sessions = BTreeSet::new();
        match event.kind {
            EventType::NodeCreated | EventType::NodeDataChanged => self.data.trigger(&event.path, &mut sessions),
            EventType::NodeDeleted => {
                self.data.trigger(&event.path, &mut sessions);
                self.child.trigger(&event.path, &mut sessions);
            }
            EventType::NodeChildrenChanged => self.child.trigger(&event.path, &mut sessions),
        }
        sessions.into_iter().collect()
    }

    /// Every notification a batch of events causes, in event order: (session, event).
    pub fn trigger_all<'a>(&mut self, events: &'a [WatchEvent]) -> Vec<(SessionId, &'a WatchEvent)> {
        events.iter().flat_map(|e| self.trigger(e).into_iter().map(move |s| (s, e))).collect()
    }

    /// Whether the session holds a watch of this type on the path (`checkWatches`).
    pub fn contains(&self, session: SessionId, path: &str, kind: WatcherType) -> bool {
        let (data, child) = (self.data.modes(session, path), self.child.modes(session, path));
        match kind {
            WatcherType::Children => child & STANDARD != 0,
            WatcherType::Data => data & STANDARD != 0,
            WatcherType::Persistent => data & PERSISTENT != 0,
            WatcherType::PersistentRecursive => data & RECURSIVE != 0,
            WatcherType::Any => data != 0 || child != 0,
        }
    }

    /// Removes the session's watches of this type on the path (`removeWatches`); false (ZooKeeper
    /// answers NoWatcher) when there was none.
    pub fn remove(&mut self, session: SessionId, path: &str, kind: WatcherType) -> bool {
        match kind {
            WatcherType::Children => self.child.remove(session, path, STANDARD),
            WatcherType::Data => self.data.remove(session, path, STANDARD),
            WatcherType::Persistent => {
                let child = self.child.remove(session, path, PERSISTENT);
                self.data.remove(session, path, PERSISTENT) | child
            }
            WatcherType::PersistentRecursive => self.data.remove(session, path, RECURSIVE),
            WatcherType::Any => {
                let all = STANDARD | PERSISTENT | RECURSIVE;
                let child = self.child.remove(session, path, all);
                self.data.remove(session, path, all) | child
            }
        }
    }

    /// Forgets every watch of a session (it closed or expired).
    pub fn remove_session(&mut self, session: SessionId) {
        self.data.remove_session(session);
        self.child.remove_session(session);
    }

    /// The number of (session, path) pairs watched, data and child tables counted apart.
    pub fn len(&self) -> usize {
        self.data.len() + self.child.len()
    }

    /// Whether no watch is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-registers a reconnecting session's watches against the current tree
    /// (`DataTree.setWatches`) and returns the events the session missed, which fire at once
    /// instead: a data watch on a missing node fires NodeDeleted and on a node changed after
    /// `relative_zxid` NodeDataChanged; an exist watch on a node that now exists fires NodeCreated;
    /// a child watch on a missing node fires NodeDeleted and on a node whose children changed
    /// after `relative_zxid` NodeChildrenChanged. Persistent watches are re-added unchecked.
    pub fn replay(
        &mut self,
        tree: &ZnodeTree,
        session: SessionId,
        relative_zxid: Zxid,
        watches: &WatchReplay,
    ) -> Vec<WatchEvent> {
        let mut fired = Vec::new();
        let mut fire = |kind, path: &str, zxid| fired.push(WatchEvent::new(kind, path, zxid));
        for path in &watches.data {
            match tree.stat(path) {
                None => fire(EventType::NodeDeleted, path, -1),
                Some(stat) if stat.mzxid > relative_zxid => fire(EventType::NodeDataChanged, path, stat.mzxid),
                Some(_) => self.add(session, path, WatchKind::Data),
            }
        }
        for path in &watches.exist {
            match tree.stat(path) {
                Some(stat) => fire(EventType::NodeCreated, path, stat.czxid),
                None => self.add(session, path, WatchKind::Exist),
            }
        }
        for path in &watches.child {
            match tree.stat(path) {
                None => fire(EventType::NodeDeleted, path, -1),
                Some(stat) if stat.pzxid > relative_zxid => fire(EventType::NodeChildrenChanged, path, stat.pzxid),
                Some(_) => self.add(session, path, WatchKind::Child),
            }
        }
        for path in &watches.persistent {
            self.add(session, path, WatchKind::Persistent);
        }
        for path in &watches.persistent_recursive {
            self.add(session, path, WatchKind::PersistentRecursive);
        }
        fired
    }
}

#[cfg(test)]
mod tests;
