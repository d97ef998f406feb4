//! Counted places: how many of something are held at once, in all and per key (connections per
//! client address, uploads per device id). A place is taken with [`Places::take`] and given back
//! when its [`Ticket`] is dropped, however the holder ends (finished, failed, cancelled), so a
//! count can never leak.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Places in all and per key; `None` means no limit of that kind.
pub struct Places<K> {
    total: Option<usize>,
    per_key: Option<usize>,
    held: Mutex<(usize, HashMap<K, usize>)>,
}

impl<K: Hash + Eq + Clone> Places<K> {
    pub fn new(total: Option<usize>, per_key: Option<usize>) -> Arc<Places<K>> {
        Arc::new(Places { total, per_key, held: Mutex::new((0, HashMap::new())) })
    }

    /// A place for `key`, or `None` when the total or `key`'s share is full.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Ticket<K>> {
        let mut held = self.held();
        let (total, per_key) = &mut *held;
        let mine = per_key.entry(key.clone()).or_default();
        if self.total.is_some_and(|max| *total >= max) || self.per_key.is_some_and(|max| *mine >= max) {
            if *mine == 0 {
                per_key.remove(&key);
            }
            return None;
        }
        *total += 1;
        *mine += 1;
        Some(Ticket { places: self.clone(), key })
    }

    fn held(&self) -> MutexGuard<'_, (usize, HashMap<K, usize>)> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One held place; given back when dropped.
pub struct Ticket<K: Hash + Eq + Clone> {
    places: Arc<Places<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        let mut held = self.places.held();
        let (total, per_key) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_key.get_mut(&self.key) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_in_all_and_per_key_and_come_back_when_a_ticket_drops() {
        let places = Places::new(Some(3), Some(2));
        let a1 = places.take("a").unwrap();
        let _a2 = places.take("a").unwrap();
        assert!(places.take("a").is_none(), "a's share is full");
        let _b1 = places.take("b").unwrap();
        assert!(places.take("c").is_none(), "the total is full");
        drop(a1);
        assert!(places.take("c").is_some(), "a dropped ticket gives its place back");
        assert_eq!(places.held().1.get("c"), None, "an empty share is forgotten");
    }
}
