//! Session liveness, kept in the leader's memory and never written to the Raft log.
//!
//! Clients ping the replica they are connected to; replicas forward those pings to the leader,
//! which moves each session's deadline. When a deadline passes, the leader proposes one
//! `ExpireSession` command, and only that reaches the log. A new leader cannot know when each
//! session last pinged, so it gives every session a fresh timeout ([`SessionTracker::reset`]):
//! a leader change delays expiry, never hastens it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::SessionId;

/// The bounds of a negotiated session timeout, in ticks (ZooKeeper's minSessionTimeout and
/// maxSessionTimeout defaults).
pub const MIN_TIMEOUT_TICKS: u32 = 2;
/// See [`MIN_TIMEOUT_TICKS`].
pub const MAX_TIMEOUT_TICKS: u32 = 20;

/// The timeout a server grants for `requested_ms`: clamped to [2, 20] ticks.
pub fn negotiate_timeout(requested_ms: i32, tick: Duration) -> Duration {
    let tick_ms = tick.as_millis().max(1) as i64;
    let ms =
        i64::from(requested_ms).clamp(tick_ms * i64::from(MIN_TIMEOUT_TICKS), tick_ms * i64::from(MAX_TIMEOUT_TICKS));
    Duration::from_millis(ms as u64)
}

/// Deadlines of the live sessions, on the leader.
#[derive(Debug, Default)]
pub struct SessionTracker {
    sessions: HashMap<SessionId, Tracked>,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    timeout: Duration,
    deadline: Instant,
}

impl SessionTracker {
    /// Starts tracking `session`, whose deadline is `timeout` from `now`.
    pub fn add(&mut self, session: SessionId, timeout: Duration, now: Instant) {
        self.sessions.insert(session, Tracked { timeout, deadline: now + timeout });
    }

    /// Moves the deadline of `session` to a full timeout from `now`; false if it is not tracked
    /// (expired or closed).
    pub fn touch(&mut self, session: SessionId, now: Instant) -> bool {
        match self.sessions.get_mut(&session) {
            Some(t) => {
                t.deadline = t.deadline.max(now + t.timeout);
                true
            }
            None => false,
        }
    }

    /// Stops tracking `session`.
    pub fn remove(&mut self, session: SessionId) {
        self.sessions.remove(&session);
    }

    /// Whether `session` is tracked.
    pub fn contains(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// The sessions whose deadline has passed, in id order.
    pub fn expired(&self, now: Instant) -> Vec<SessionId> {
        let mut expired: Vec<SessionId> =
            self.sessions.iter().filter(|(_, t)| t.deadline <= now).map(|(id, _)| *id).collect();
        expired.sort_unstable();
        expired
    }

    /// Replaces the tracked sessions with `sessions`, each given a full timeout from `now`:
    /// what a new leader does with the sessions it finds in the state machine.
    pub fn reset(&mut self, sessions: impl IntoIterator<Item = (SessionId, Duration)>, now: Instant) {
        self.sessions =
            sessions.into_iter().map(|(id, timeout)| (id, Tracked { timeout, deadline: now + timeout })).collect();
    }

    /// How many sessions are tracked.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_clamped_to_two_and_twenty_ticks() {
        let tick = Duration::from_millis(100);
        assert_eq!(negotiate_timeout(50, tick), Duration::from_millis(200));
        assert_eq!(negotiate_timeout(1500, tick), Duration::from_millis(1500));
        assert_eq!(negotiate_timeout(30_000, tick), Duration::from_millis(2000));
        assert_eq!(negotiate_timeout(-1, tick), Duration::from_millis(200));
    }

    #[test]
    fn a_session_expires_only_after_a_full_timeout_without_pings() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(1000);
        let mut tracker = SessionTracker::default();
        tracker.add(1, timeout, t0);
        tracker.add(2, timeout, t0);
        assert!(tracker.touch(1, t0 + Duration::from_millis(900)));
        assert_eq!(tracker.expired(t0 + Duration::from_millis(999)), Vec::<SessionId>::new());
        assert_eq!(tracker.expired(t0 + Duration::from_millis(1000)), vec![2]);
        assert_eq!(tracker.expired(t0 + Duration::from_millis(1900)), vec![1, 2]);
        tracker.remove(2);
        assert!(!tracker.touch(2, t0));
    }

    #[test]
    fn a_new_leader_gives_every_session_a_fresh_timeout() {
        let t0 = Instant::now();
        let mut tracker = SessionTracker::default();
        tracker.add(1, Duration::from_millis(100), t0);
        let later = t0 + Duration::from_secs(10);
        tracker.reset([(1, Duration::from_millis(100)), (3, Duration::from_millis(500))], later);
        assert!(tracker.expired(later + Duration::from_millis(99)).is_empty());
        assert_eq!(tracker.expired(later + Duration::from_millis(100)), vec![1]);
        assert_eq!(tracker.len(), 2);
    }
}
