//! Eviction: when full, completed records go oldest epoch first, from one
//! shard after another; never a claim. And the warning that says so.

use std::sync::atomic::Ordering;

use std::time::Instant;

use super::shard::{at_or_before, lower_epoch};
use super::{lock, Inner, SHARDS, WARN_EVERY_MS};

/// The eviction hand goes round the shards, evicting from each the
/// completed records of epoch `upto` or earlier; once round, everything up
/// to `upto` is gone, and `upto` moves on to the oldest epoch it saw left.
pub(super) struct Hand {
    pub(super) next: usize,
    pub(super) upto: u32,
    /// The oldest epoch seen left in the shards visited this round.
    pub(super) seen: Option<u32>,
    /// `completed` when a whole round found no completed record: until a
    /// record completes, there is nothing to evict.
    pub(super) futile_at: Option<u64>,
}

impl Inner {
    /// Evicts completed records, oldest epoch first, until `enough` holds.
    /// Returns whether it does: false when no completed record is left.
    pub(super) fn evict_until(&self, enough: impl Fn(&Self) -> bool) -> bool {
        let mut hand = self.hand.lock().unwrap_or_else(|e| e.into_inner());
        if enough(self) {
            return true;
        }
        let completed = self.completed.load(Ordering::Relaxed);
        if hand.futile_at == Some(completed) {
            return false;
        }
        let now = Instant::now();
        let mut evicted = 0;
        // Two rounds find any completed record there is: the first may only
        // learn which epoch is the oldest left.
        let mut enough_now = false;
        for _ in 0..3 * SHARDS {
            if enough(self) {
                enough_now = true;
                break;
            }
            let upto = hand.upto;
            {
                let mut shard = lock(&self.shards[hand.next]);
                if shard.may_hold_done_upto(upto) || shard.may_hold_expired(now) {
                    evicted += self.scan(&mut shard, now, Some(upto));
                }
                if let Some(oldest) = shard.oldest_done {
                    lower_epoch(&mut hand.seen, oldest);
                }
            }
            hand.next = (hand.next + 1) % SHARDS;
            if hand.next == 0 {
                // Round done: nothing of epoch `upto` or earlier is left
                // (but what completed behind the hand in epoch `upto`).
                let newest = self.epoch();
                let next = match hand.seen.take() {
                    None => {
                        if !enough(self) {
                            hand.futile_at = Some(completed);
                            hand.upto = newest;
                            break;
                        }
                        newest
                    }
                    Some(seen) if at_or_before(seen, upto) => upto.wrapping_add(1),
                    Some(seen) => seen,
                };
                hand.upto = if at_or_before(next, newest) {
                    next
                } else {
                    newest
                };
            }
        }
        drop(hand);
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
            self.report_evictions();
        }
        enough_now || enough(self)
    }

    /// Warns of the evictions not yet reported, at most once per
    /// [`WARN_EVERY_MS`].
    pub(super) fn report_evictions(&self) {
        let evicted = self.evicted.load(Ordering::Relaxed);
        if evicted == self.reported.load(Ordering::Relaxed) {
            return;
        }
        let now_ms = self.ms_since_born();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if (last != 0 && now_ms.saturating_sub(last) < WARN_EVERY_MS)
            || self
                .last_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let count = evicted.saturating_sub(self.reported.swap(evicted, Ordering::Relaxed));
        tracing::warn!(
            target: "idempotent",
            evicted = count,
            evicted_total = evicted,
            entries = self.entry_count(),
            max_entries = self.max_entries,
            bytes = self.weighted_size(),
            max_bytes = self.max_bytes,
            "memory store full: evicted {count} completed records, oldest first; a retry of an evicted key runs its handler again (raise max_entries or max_bytes to keep records for their whole ttl)"
        );
    }
}
