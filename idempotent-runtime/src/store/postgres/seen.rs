//! The lock ids of the records this process committed or replayed
//! recently, so that a replay of one of them is read with one statement
//! outside a transaction instead of the in-transaction claim's three
//! (`BEGIN`, the read, `ROLLBACK`).
//!
//! A hint, never an answer: a remembered id is only read first, and when
//! its record is gone (expired, deleted) or is another key's (lock ids
//! collide), the claim goes on as if it had not been remembered. Fresh keys
//! pay one lookup and, once committed, one insert: no round trip.
//!
//! Bounded: two generations of [`GENERATION`] ids each (0.6 MiB of table
//! each when full); when the current one fills, the previous is dropped.
//! At 5,000 new keys a second a key is remembered for at least 11 s, and
//! longer at lower rates; a retry that comes later, or in another process,
//! takes the in-transaction claim and is remembered from then on.

use std::collections::HashSet;
use std::sync::Mutex;

/// Ids per generation: seven eighths of 2^16, the most a table of 2^16
/// buckets holds (9 bytes each) before it would double.
const GENERATION: usize = 57_344;

#[derive(Default)]
pub(super) struct Seen {
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashSet<i64>,
    previous: HashSet<i64>,
}

impl Seen {
    pub(super) fn contains(&self, lock: i64) -> bool {
        let g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        g.current.contains(&lock) || g.previous.contains(&lock)
    }

    pub(super) fn insert(&self, lock: i64) {
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        if g.current.len() >= GENERATION && !g.current.contains(&lock) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(lock);
    }

    pub(super) fn forget(&self, lock: i64) {
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        g.current.remove(&lock);
        g.previous.remove(&lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_generation_and_forgets_older_ones() {
        let seen = Seen::default();
        for i in 0..GENERATION as i64 {
            seen.insert(i);
        }
        assert!(seen.contains(0) && seen.contains(GENERATION as i64 - 1));
        // The next id starts a generation: the full one is still held.
        seen.insert(-1);
        assert!(seen.contains(0) && seen.contains(-1));
        for i in 1..GENERATION as i64 {
            seen.insert(-1 - i);
        }
        seen.insert(i64::MIN);
        assert!(!seen.contains(0), "two generations back");
        assert!(seen.contains(-1) && seen.contains(i64::MIN));
        seen.forget(-1);
        assert!(!seen.contains(-1));
    }
}
