use super::*;
use crate::{Caller, CreateRequest, Txn};
use EventType::{NodeChildrenChanged, NodeCreated, NodeDataChanged, NodeDeleted};

fn ev(kind: EventType, path: &str) -> WatchEvent {
    WatchEvent::new(kind, path, 9)
}

#[test]
fn event_codes_match_zookeeper() {
    let codes: Vec<i32> =
        [NodeCreated, NodeDeleted, NodeDataChanged, NodeChildrenChanged].map(EventType::code).to_vec();
    assert_eq!(codes, vec![1, 2, 3, 4]);
    assert_eq!(WatcherType::from_code(1), Some(WatcherType::Children));
    assert_eq!(WatcherType::from_code(5), Some(WatcherType::PersistentRecursive));
    assert_eq!(WatcherType::from_code(0), None);
    assert_eq!(WatcherType::from_code(6), None);
}

#[test]
fn data_watches_are_one_shot() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::Data);
    w.add(2, "/a", WatchKind::Data);
    assert!(w.trigger(&ev(NodeChildrenChanged, "/a")).is_empty(), "data watches ignore child events");
    assert_eq!(w.trigger(&ev(NodeDataChanged, "/a")), vec![1, 2]);
    assert!(w.trigger(&ev(NodeDataChanged, "/a")).is_empty());
    assert!(w.is_empty());
    w.add(1, "/a", WatchKind::Data);
    assert_eq!(w.trigger(&ev(NodeDeleted, "/a")), vec![1]);
    assert!(w.is_empty());
}

#[test]
fn exist_watch_fires_on_creation() {
    let mut tree = ZnodeTree::default();
    let mut w = WatchRegistry::default();
    assert_eq!(tree.exists(Caller::new(1, &[]), "/later"), Ok(None));
    w.add(1, "/later", WatchKind::Exist);
    w.add(2, "/", WatchKind::Child);
    let made = tree.create(Txn::new(3, 0), Caller::new(5, &[]), CreateRequest::new("/later", vec![])).unwrap();
    let notes = w.trigger_all(&made.events);
    assert_eq!(notes, vec![(1, &made.events[0]), (2, &made.events[1])]);
    assert_eq!(notes[0].1.kind, NodeCreated);
    assert_eq!(notes[1].1.path, "/");
    assert!(w.is_empty());
}

#[test]
fn child_watches_fire_on_children_changed_and_deleted() {
    let mut w = WatchRegistry::default();
    w.add(1, "/p", WatchKind::Child);
    assert!(w.trigger(&ev(NodeDataChanged, "/p")).is_empty(), "child watches ignore data events");
    assert!(w.trigger(&ev(NodeCreated, "/p")).is_empty());
    assert_eq!(w.trigger(&ev(NodeChildrenChanged, "/p")), vec![1]);
    assert!(w.trigger(&ev(NodeChildrenChanged, "/p")).is_empty());
    w.add(1, "/p", WatchKind::Child);
    assert_eq!(w.trigger(&ev(NodeDeleted, "/p")), vec![1]);
    assert!(w.is_empty());
}

#[test]
fn one_notification_per_session_and_event() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::Data);
    w.add(1, "/a", WatchKind::Exist);
    w.add(1, "/a", WatchKind::Child);
    w.add(2, "/a", WatchKind::Child);
    assert_eq!(w.len(), 3);
    assert_eq!(w.trigger(&ev(NodeDeleted, "/a")), vec![1, 2]);
    assert!(w.is_empty(), "both tables' one-shot watches are consumed");
}

#[test]
fn watches_on_other_paths_do_not_fire() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::Data);
    w.add(1, "/a", WatchKind::Child);
    w.add(2, "/a/b/c", WatchKind::Data);
    assert!(w.trigger(&ev(NodeDataChanged, "/a/b")).is_empty(), "one-shot watches cover their path only");
    assert!(w.trigger(&ev(NodeChildrenChanged, "/a/b")).is_empty());
    assert!(w.trigger(&ev(NodeDataChanged, "/ab")).is_empty());
    assert_eq!(w.len(), 3);
}

#[test]
fn persistent_watches_stay_and_see_data_and_child_events() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::Persistent);
    for _ in 0..2 {
        assert_eq!(w.trigger(&ev(NodeDataChanged, "/a")), vec![1]);
        assert_eq!(w.trigger(&ev(NodeChildrenChanged, "/a")), vec![1]);
        assert_eq!(w.trigger(&ev(NodeCreated, "/a")), vec![1]);
        assert_eq!(w.trigger(&ev(NodeDeleted, "/a")), vec![1]);
    }
    assert!(w.trigger(&ev(NodeDataChanged, "/a/b")).is_empty(), "not recursive");
    assert!(w.contains(1, "/a", WatcherType::Persistent));
}

#[test]
fn persistent_recursive_watches_cover_the_subtree_without_child_events() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::PersistentRecursive);
    w.add(2, "/", WatchKind::PersistentRecursive);
    w.add(3, "/a/b", WatchKind::Data);
    assert_eq!(w.trigger(&ev(NodeCreated, "/a/b/c")), vec![1, 2]);
    assert_eq!(w.trigger(&ev(NodeDataChanged, "/a/b")), vec![1, 2, 3]);
    assert_eq!(w.trigger(&ev(NodeDeleted, "/a")), vec![1, 2]);
    assert_eq!(w.trigger(&ev(NodeDataChanged, "/x")), vec![2]);
    assert!(w.trigger(&ev(NodeChildrenChanged, "/a")).is_empty(), "never NodeChildrenChanged");
    assert!(w.trigger(&ev(NodeChildrenChanged, "/")).is_empty());
    assert!(w.trigger(&ev(NodeDataChanged, "/ab")).iter().all(|&s| s != 1), "/ab is not under /a");
    assert!(w.contains(1, "/a", WatcherType::PersistentRecursive));
    assert!(!w.contains(1, "/a", WatcherType::Persistent));
}

#[test]
fn tree_events_drive_recursive_watches() {
    let mut tree = ZnodeTree::default();
    let me = Caller::new(5, &[]);
    let mut w = WatchRegistry::default();
    w.add(1, "/app", WatchKind::PersistentRecursive);
    let mut seen = Vec::new();
    for (zxid, path) in [(1, "/app"), (2, "/app/x"), (3, "/other")] {
        let made = tree.create(Txn::new(zxid, 0), me, CreateRequest::new(path, vec![])).unwrap();
        seen.extend(w.trigger_all(&made.events).into_iter().map(|(s, e)| (s, e.kind, e.path.clone())));
    }
    let deleted = tree.delete(Txn::new(4, 0), me, "/app/x", -1).unwrap();
    seen.extend(w.trigger_all(&deleted.events).into_iter().map(|(s, e)| (s, e.kind, e.path.clone())));
    assert_eq!(
        seen,
        vec![
            (1, NodeCreated, "/app".to_string()),
            (1, NodeCreated, "/app/x".to_string()),
            (1, NodeDeleted, "/app/x".to_string())
        ]
    );
}

#[test]
fn contains_and_remove_follow_watcher_types() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::Data);
    w.add(1, "/a", WatchKind::Child);
    assert!(w.contains(1, "/a", WatcherType::Data));
    assert!(w.contains(1, "/a", WatcherType::Children));
    assert!(w.contains(1, "/a", WatcherType::Any));
    assert!(!w.contains(2, "/a", WatcherType::Any));
    assert!(!w.contains(1, "/a", WatcherType::Persistent));
    assert!(!w.remove(1, "/a", WatcherType::Persistent), "NoWatcher");
    assert!(w.remove(1, "/a", WatcherType::Data));
    assert!(!w.remove(1, "/a", WatcherType::Data));
    assert!(w.contains(1, "/a", WatcherType::Children));
    assert!(w.remove(1, "/a", WatcherType::Any));
    assert!(w.is_empty());

    w.add(1, "/p", WatchKind::Persistent);
    w.add(1, "/p", WatchKind::PersistentRecursive);
    assert!(w.remove(1, "/p", WatcherType::Persistent));
    assert!(w.trigger(&ev(NodeChildrenChanged, "/p")).is_empty(), "persistent child half removed too");
    assert_eq!(w.trigger(&ev(NodeDataChanged, "/p/q")), vec![1], "recursive stays");
    assert!(w.remove(1, "/p", WatcherType::PersistentRecursive));
    assert!(w.trigger(&ev(NodeDataChanged, "/p/q")).is_empty(), "recursive removed");
    assert!(w.is_empty());
}

#[test]
fn removing_a_session_forgets_its_watches() {
    let mut w = WatchRegistry::default();
    w.add(1, "/a", WatchKind::Data);
    w.add(1, "/b", WatchKind::PersistentRecursive);
    w.add(1, "/c", WatchKind::Persistent);
    w.add(2, "/a", WatchKind::Data);
    w.remove_session(1);
    assert_eq!(w.len(), 1);
    assert_eq!(w.trigger(&ev(NodeDataChanged, "/b/x")), Vec::<SessionId>::new());
    assert_eq!(w.trigger(&ev(NodeDataChanged, "/a")), vec![2]);
}

#[test]
fn replay_fires_what_was_missed_and_rewatches_the_rest() {
    let mut tree = ZnodeTree::default();
    let me = Caller::new(5, &[]);
    for (zxid, path) in [(1, "/same"), (2, "/changed"), (3, "/parent")] {
        tree.create(Txn::new(zxid, 0), me, CreateRequest::new(path, vec![])).unwrap();
    }
    // The client last saw zxid 3; then /changed got new data and /parent a child.
    tree.set_data(Txn::new(4, 0), me, "/changed", vec![1], -1).unwrap();
    tree.create(Txn::new(5, 0), me, CreateRequest::new("/parent/kid", vec![])).unwrap();
    let replay = WatchReplay {
        data: vec!["/same".into(), "/changed".into(), "/gone".into()],
        exist: vec!["/same".into(), "/absent".into()],
        child: vec!["/same".into(), "/parent".into(), "/gone".into()],
        persistent: vec!["/p".into()],
        persistent_recursive: vec!["/r".into()],
    };
    let mut w = WatchRegistry::default();
    let fired = w.replay(&tree, 7, 3, &replay);
    let fired: Vec<(EventType, &str)> = fired.iter().map(|e| (e.kind, e.path.as_str())).collect();
    assert_eq!(
        fired,
        vec![
            (NodeDataChanged, "/changed"),
            (NodeDeleted, "/gone"),
            (NodeCreated, "/same"),
            (NodeChildrenChanged, "/parent"),
            (NodeDeleted, "/gone"),
        ]
    );
    assert!(w.contains(7, "/same", WatcherType::Data));
    assert!(w.contains(7, "/absent", WatcherType::Data), "exist watch re-registered");
    assert!(w.contains(7, "/same", WatcherType::Children));
    assert!(!w.contains(7, "/changed", WatcherType::Any));
    assert!(w.contains(7, "/p", WatcherType::Persistent));
    assert!(w.contains(7, "/r", WatcherType::PersistentRecursive));
    assert_eq!(w.trigger(&ev(NodeCreated, "/absent")), vec![7]);
}
