//! Deadlines kept in memory: at most one per key, taken in time order.
//!
//! The in-process backend's first-response clocks ([`super::backend::Backend::schedule`] and
//! [`super::backend::Backend::due`]); the Redis backend keeps the same in a sorted set. Taking
//! what is due costs the number taken, not the number of conversations open.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use crate::domain::UnixMillis;

#[derive(Debug)]
pub struct Deadlines<K> {
    by_time: BTreeSet<(UnixMillis, K)>,
    at: HashMap<K, UnixMillis>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            at: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Sets `key`'s deadline to `at`, replacing the one it had.
    pub fn schedule(&mut self, key: K, at: UnixMillis) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Forgets `key`'s deadline, if it had one.
    pub fn cancel(&mut self, key: &K) {
        if let Some(at) = self.at.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    /// Takes up to `limit` keys whose deadline is at or before `now`, earliest first.
    pub fn due(&mut self, now: UnixMillis, limit: usize) -> Vec<K> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.by_time.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.at.remove(&key);
                out.push(key);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_takes_what_has_come_in_time_order_once() {
        let mut d = Deadlines::default();
        d.schedule("b", 20);
        d.schedule("a", 10);
        d.schedule("c", 30);
        assert_eq!(d.due(5, 10), Vec::<&str>::new());
        assert_eq!(d.due(20, 10), ["a", "b"]);
        assert_eq!(d.due(20, 10), Vec::<&str>::new(), "taken once");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_new_deadline_replaces_the_old_one() {
        let mut d = Deadlines::default();
        d.schedule("a", 10);
        d.schedule("a", 50);
        assert_eq!(d.due(40, 10), Vec::<&str>::new());
        assert_eq!(d.due(50, 10), ["a"]);
        assert!(d.is_empty());
    }

    #[test]
    fn due_stops_at_the_limit_and_cancel_forgets() {
        let mut d = Deadlines::default();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            d.schedule(k, i as u64);
        }
        d.cancel(&"b");
        assert_eq!(d.due(100, 1), ["a"]);
        assert_eq!(d.due(100, 10), ["c"]);
    }
}
