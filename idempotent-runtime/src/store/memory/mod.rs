//! The in-process store: a sharded hash map with per-record expiry.
//!
//! It was built on moka first. Measured (`BENCHMARKS.md`), moka's per-entry
//! expiry and atomic `compute` cost about 3 µs per claim and completion, a
//! third of a trivial axum handler's time; the claim and completion this store
//! needs are one short lock of one of 1024 shards each, about 0.3 µs.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Claim, Store, StoreError};
use crate::store::digest_hash::DigestHashState;

mod shard;

use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};
use shard::{lock, lower_to, Shard, ShardMap, Slot, State};

/// Default bound on the number of records.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Default bound on the bytes of records (approximate: keys, headers, bodies).
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// Bytes a record costs besides its response (key, bookkeeping, map slot).
const ENTRY_OVERHEAD: u64 = 160;

/// Shards of the map: claims on different shards never wait for each
/// other, and a shard is small enough (a thousandth of the store) that
/// growing its table or sweeping it holds its lock only briefly.
const SHARDS: usize = 1024;

/// Expired records are invisible at once; their memory is reclaimed by a
/// sweep of every shard once per this period (a few shards every
/// [`SWEEP_TICK`], on the runtime crate's background thread), and by a sweep
/// of all shards when the store looks full. A shard none of whose records
/// can have expired yet is skipped without a scan.
const SWEEP_CYCLE: Duration = Duration::from_secs(10);
const SWEEP_TICK: Duration = Duration::from_millis(100);

/// An in-process store, bounded by entries and bytes.
///
/// Records expire one by one: an in-progress claim when its lease runs out, a
/// completed response after its TTL. Claims are atomic per identity.
///
/// The bound is hard: this store **never evicts a live record to make room**
/// (neither an in-progress claim nor a completed response whose TTL has not run
/// out, since either would let a retry execute a second time). A claim that would
/// go past the bound fails with [`StoreError::Full`], which handlers answer with
/// 503 and `Retry-After`. Size it for your request rate times your TTL.
///
/// ```
/// use idempotent_runtime::store::memory::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .max_entries(100_000)
///     .max_bytes(64 * 1024 * 1024)
///     .build();
/// assert_eq!(store.entry_count(), 0);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    /// Picks the shard (from other bits than the map's own hash uses).
    hasher: DigestHashState,
    /// Records and bytes held, expired ones included until swept. Changed
    /// only under the lock of the shard that holds the record.
    entries: AtomicI64,
    bytes: AtomicI64,
    max_entries: u64,
    max_bytes: u64,
    /// When a full store last swept every shard (ms since `born`), so that a
    /// full store does not sweep on every claim.
    last_full_sweep_ms: AtomicU64,
    born: Instant,
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_entries: u64,
    max_bytes: u64,
}

impl MemoryStoreBuilder {
    /// The most records kept at once (default 1,000,000).
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }

    /// The most bytes of records kept at once (default 512 MiB).
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let map_hasher = DigestHashState::new();
        let inner = Arc::new(Inner {
            shards: (0..SHARDS)
                .map(|_| {
                    Shard(Mutex::new(ShardMap::new(HashMap::with_hasher(
                        map_hasher.clone(),
                    ))))
                })
                .collect(),
            hasher: DigestHashState::new(),
            entries: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            last_full_sweep_ms: AtomicU64::new(0),
            born: Instant::now(),
        });
        spawn_sweeper(Arc::downgrade(&inner));
        MemoryStore { inner }
    }
}

/// Sweeps every shard once per [`SWEEP_CYCLE`] until the store is dropped.
fn spawn_sweeper(store: Weak<Inner>) {
    let per_tick = SHARDS.div_ceil((SWEEP_CYCLE.as_millis() / SWEEP_TICK.as_millis()) as usize);
    crate::background::background().spawn(async move {
        let mut next = 0usize;
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_TICK, SWEEP_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else {
                return;
            };
            let now = Instant::now();
            for _ in 0..per_tick {
                inner.sweep(next, now);
                next = (next + 1) % SHARDS;
            }
        }
    });
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl Inner {
    fn shard(&self, id: &RecordId) -> MutexGuard<'_, ShardMap> {
        // Bits 32.. of the seeded hash: the map inside uses the low bits
        // (bucket) and the top seven (tag) of its own, differently seeded one.
        let i = (self.hasher.hash_one(id) >> 32) as usize % SHARDS;
        lock(&self.shards[i])
    }

    fn added(&self, slot: &Slot) {
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(i64::from(slot.weight), Ordering::Relaxed);
    }

    fn removed(&self, slot: &Slot) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.bytes
            .fetch_sub(i64::from(slot.weight), Ordering::Relaxed);
    }

    /// Calls `f` with the live record of `id` (one probe of the map),
    /// removing an expired one first.
    fn with_live<R>(
        &self,
        shard: &mut ShardMap,
        id: &RecordId,
        now: Instant,
        f: impl FnOnce(Option<&mut Slot>) -> R,
    ) -> R {
        let expired = match shard.map.get_mut(id) {
            Some(slot) if slot.live(now) => return f(Some(slot)),
            Some(_) => true,
            None => false,
        };
        if expired {
            self.remove(shard, id);
        }
        f(None)
    }

    fn remove(&self, shard: &mut ShardMap, id: &RecordId) {
        if let Some(old) = shard.map.remove(id) {
            self.removed(&old);
            shard.untrack(old.is_claim());
        }
    }

    /// Drops the expired records of shard `i`, unless none can have expired.
    fn sweep(&self, i: usize, now: Instant) {
        let mut shard = lock(&self.shards[i]);
        if !shard.may_hold_expired(now) {
            return;
        }
        let ShardMap {
            map,
            claims,
            claims_after,
            done_after,
        } = &mut *shard;
        (*claims, *claims_after, *done_after) = (0, None, None);
        map.retain(|_, slot| {
            let keep = slot.live(now);
            if !keep {
                self.removed(slot);
            } else if slot.is_claim() {
                *claims += 1;
                lower_to(claims_after, slot.expires);
            } else {
                lower_to(done_after, slot.expires);
            }
            keep
        });
        if shard.map.capacity() > 64 && shard.map.len() * 4 < shard.map.capacity() {
            let len = shard.map.len();
            shard.map.shrink_to(len * 2);
        }
    }
}

impl MemoryStore {
    /// A builder with the default bounds.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Records held (expired ones are counted until they are swept).
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.load(Ordering::Relaxed).max(0) as u64
    }

    /// Approximate bytes held by records.
    pub fn weighted_size(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    fn has_room(&self) -> bool {
        self.entry_count() < self.inner.max_entries
            && self.weighted_size().saturating_add(ENTRY_OVERHEAD) <= self.inner.max_bytes
    }

    /// Sweeps every shard, at most every 100 ms: the store looks full, and
    /// expired records may be what fills it.
    fn sweep_all_if_due(&self) {
        let now_ms = (self.inner.born.elapsed().as_millis() as u64).max(1);
        let last = &self.inner.last_full_sweep_ms;
        let prev = last.load(Ordering::Relaxed);
        if (prev == 0 || now_ms.saturating_sub(prev) >= 100)
            && last
                .compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let now = Instant::now();
            for i in 0..SHARDS {
                self.inner.sweep(i, now);
            }
        }
    }

    fn claim_now(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        use std::collections::hash_map::Entry;
        let mut swept = false;
        loop {
            let now = Instant::now();
            let mut shard = self.inner.shard(id);
            let slot = Slot::new(Record::InProgress { fingerprint, owner }, lease, now);
            // One probe: the key is cloned for the entry, which costs no
            // allocation for a handler's static scope.
            match shard.map.entry(id.clone()) {
                Entry::Occupied(e) if e.get().live(now) => {
                    return Ok(Claim::Existing(e.get().record()));
                }
                // An expired record is replaced in place: the count stays.
                Entry::Occupied(mut e) => {
                    self.inner.removed(e.get());
                    self.inner.added(&slot);
                    let (was_claim, expires) = (e.get().is_claim(), slot.expires);
                    **e.get_mut() = slot;
                    shard.untrack(was_claim);
                    shard.track(true, expires);
                    return Ok(Claim::Acquired);
                }
                Entry::Vacant(v) if self.has_room() => {
                    self.inner.added(&slot);
                    let expires = slot.expires;
                    v.insert(Box::new(slot));
                    shard.track(true, expires);
                    return Ok(Claim::Acquired);
                }
                Entry::Vacant(_) => {}
            }
            drop(shard);
            if swept {
                return Err(StoreError::Full);
            }
            self.sweep_all_if_due();
            swept = true;
        }
    }

    /// Applies `next` to the record atomically when `owner` holds the claim,
    /// or, if `or_absent`, when there is no record at all. `next` gets the
    /// claim's fingerprint; `None` removes the record.
    fn if_owner(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        or_absent: bool,
        next: impl FnOnce(Option<Fingerprint>, Instant) -> Option<Slot>,
    ) -> bool {
        enum Then {
            Refuse,
            Nothing,
            /// Written in place over a slot that was (or not) a claim.
            Replaced {
                was_claim: bool,
                is_claim: bool,
                expires: Instant,
            },
            Insert(Slot),
            Remove,
        }
        let now = Instant::now();
        let mut shard = self.inner.shard(id);
        let then = self.inner.with_live(&mut shard, id, now, |current| {
            let fingerprint = match current.as_ref().map(|s| &s.state) {
                Some(State::Claim {
                    owner: o,
                    fingerprint,
                }) if *o == owner.to_bytes() => Some(Fingerprint::from_bytes(*fingerprint)),
                None if or_absent => None,
                _ => return Then::Refuse,
            };
            match (next(fingerprint, now), current) {
                // In place, in the claim's box.
                (Some(new), Some(old)) => {
                    self.inner.removed(old);
                    self.inner.added(&new);
                    let then = Then::Replaced {
                        was_claim: old.is_claim(),
                        is_claim: new.is_claim(),
                        expires: new.expires,
                    };
                    *old = new;
                    then
                }
                (Some(new), None) => Then::Insert(new),
                (None, Some(_)) => Then::Remove,
                (None, None) => Then::Nothing,
            }
        });
        match then {
            Then::Refuse => return false,
            Then::Nothing => {}
            Then::Replaced {
                was_claim,
                is_claim,
                expires,
            } => {
                shard.untrack(was_claim);
                shard.track(is_claim, expires);
            }
            Then::Insert(slot) => {
                self.inner.added(&slot);
                shard.track(slot.is_claim(), slot.expires);
                shard.map.insert(id.clone(), Box::new(slot));
            }
            Then::Remove => self.inner.remove(&mut shard, id),
        }
        true
    }
}

impl Store for MemoryStore {
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        ready(self.claim_now(id, fingerprint, owner, lease))
    }

    fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.if_owner(id, owner, false, |fingerprint, now| {
            fingerprint
                .map(|fingerprint| Slot::new(Record::InProgress { fingerprint, owner }, lease, now))
        })))
    }

    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.if_owner(id, owner, true, |_, now| {
            Some(Slot::new(
                Record::Completed {
                    fingerprint,
                    response,
                },
                ttl,
                now,
            ))
        })))
    }

    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.if_owner(id, owner, false, |_, _| None)))
    }

    fn get(
        &self,
        id: &RecordId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let mut shard = self.inner.shard(id);
        let record = self
            .inner
            .with_live(&mut shard, id, Instant::now(), |s| s.map(|s| s.record()));
        ready(Ok(record))
    }

    fn delete(&self, id: &RecordId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let now = Instant::now();
        let mut shard = self.inner.shard(id);
        let live = self.inner.with_live(&mut shard, id, now, |s| s.is_some());
        self.inner.remove(&mut shard, id);
        ready(Ok(live))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entry_count())
            .field("bytes", &self.weighted_size())
            .field("max_entries", &self.inner.max_entries)
            .field("max_bytes", &self.inner.max_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests;
