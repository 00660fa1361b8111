//! The lock ids of the records this process committed or replayed
//! recently, so that a replay of one of them is read with one statement
//! outside a transaction instead of the in-transaction claim's three
//! (`BEGIN`, the read, `ROLLBACK`).
//!
//! A hint, never an answer: a remembered id only makes the request read
//! its own record (by scope and digest) first, and when that key has no
//! live completed record (gone, a lease-path claim, or the id was
//! remembered for another key whose lock id collides), the claim goes on as
//! if it had not been remembered. Fresh keys pay one lookup and, once
//! committed, one insert: no round trip.
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
    /// Whether `lock` is remembered; one found in the previous generation
    /// moves to the current one, so a key replayed again and again stays.
    pub(super) fn contains(&self, lock: i64) -> bool {
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        if g.current.contains(&lock) {
            return true;
        }
        if g.previous.remove(&lock) {
            g.insert(lock);
            return true;
        }
        false
    }

    pub(super) fn insert(&self, lock: i64) {
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(lock);
    }

    pub(super) fn forget(&self, lock: i64) {
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        g.current.remove(&lock);
        g.previous.remove(&lock);
    }
}

impl Generations {
    fn insert(&mut self, lock: i64) {
        if self.current.len() >= GENERATION && !self.current.contains(&lock) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_generation_and_forgets_older_ones() {
        let seen = Seen::default();
        let g = GENERATION as i64;
        for i in 0..g {
            seen.insert(i);
        }
        assert!(seen.contains(g - 1));
        // The next id starts a generation; the full one is still held, and
        // a hit there moves the id to the current one.
        seen.insert(-1);
        assert!(seen.contains(1), "one generation back");
        for i in 2..g {
            seen.insert(-i);
        }
        seen.insert(i64::MIN);
        assert!(!seen.contains(0), "two generations back, never hit");
        assert!(seen.contains(1), "hit, so moved forward");
        assert!(seen.contains(-1) && seen.contains(i64::MIN));
        seen.forget(-1);
        assert!(!seen.contains(-1));
    }
}
