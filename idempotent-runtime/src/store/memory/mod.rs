//! The in-process store: a sharded hash map with per-record expiry, which
//! evicts its oldest completed records when full ([`WhenFull`]).
//!
//! It was built on moka first. Measured (`BENCHMARKS.md`), moka's per-entry
//! expiry and atomic `compute` cost about 3 µs per claim and completion, a
//! third of a trivial axum handler's time; the claim and completion this store
//! needs are one short lock of one of 1024 shards each, about 0.3 µs. moka as
//! an evicting tier of the completed records alone was measured too, and
//! costs more than this map's own eviction (`docs/design/0003-memory-bound.md`).

use std::future::{ready, Future};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Claim, Store, StoreError};
use crate::store::digest_hash::DigestHashState;

mod builder;
mod evict;
mod shard;

pub use builder::{MemoryStoreBuilder, WhenFull};
use evict::Hand;

use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};
use shard::{at_or_before, lock, lower_epoch, lower_to, Shard, ShardMap, Slot, State};

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

/// Completions are counted in units of which a full store holds
/// `STORE_UNITS`: a completed record weighs the larger of its share of
/// `max_entries` and its share of `max_bytes`. Every `STORE_UNITS >>
/// EPOCH_BITS` units (an eighth of the bound) start a new epoch, and
/// eviction drops the oldest epoch first. Finer epochs order evictions more
/// closely but cost more: a claim that evicts scans one shard to find its
/// oldest epoch, about `2^EPOCH_BITS` records per record evicted.
const STORE_UNITS: u64 = 1 << 32;
const EPOCH_BITS: u32 = 3;
const EPOCH_SHIFT: u32 = 32 - EPOCH_BITS;

/// At most one eviction warning per this period, with the count since the
/// last one.
const WARN_EVERY_MS: u64 = 1000;

/// An in-process store, bounded by entries and bytes.
///
/// Records expire one by one: an in-progress claim when its lease runs out, a
/// completed response after its TTL. Claims are atomic per identity.
///
/// **When full**, by default ([`WhenFull::EvictOldest`]), a new claim evicts
/// the oldest completed records to make room, so that no burst of new keys
/// (a million fresh keys, or a few hundred responses of a megabyte) can lock
/// new keys out until the TTL runs out. In-progress claims are never evicted;
/// a store filled by claims alone refuses new ones with [`StoreError::Full`]
/// (503 `store-full`). Evictions are logged as a warning (target
/// `idempotent`), at most once a second with their count, and counted by
/// [`evicted_count`](MemoryStore::evicted_count).
///
/// **The trade-off:** a completed record that was evicted is gone before its
/// TTL, and a retry of its key then runs the handler again, as it would
/// after the TTL. The oldest records go first, and retries mostly come soon
/// after the request, but under a burst that fills the store the replay
/// window shrinks to however long the store takes to fill. Size the store
/// for your request rate times your TTL so that it never has to evict, and
/// watch for the warning. [`WhenFull::Refuse`] keeps every stored response
/// for its whole TTL and refuses new keys instead. (The policy, how "oldest"
/// is approximated and what it costs: `docs/design/0003-memory-bound.md`.)
///
/// ```
/// use idempotent_runtime::store::memory::{MemoryStore, WhenFull};
///
/// let store = MemoryStore::builder()
///     .max_entries(100_000)
///     .max_bytes(64 * 1024 * 1024)
///     .when_full(WhenFull::EvictOldest) // the default
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
    when_full: WhenFull,
    /// Units of completions so far (see [`STORE_UNITS`]); its bits from
    /// [`EPOCH_SHIFT`] up are the current epoch. Wraps.
    completed: AtomicU64,
    /// Units a completed record weighs for being an entry, and per byte
    /// (the latter in 1/65536 units).
    units_per_entry: u64,
    units_per_byte: u64,
    /// Where eviction is; one evictor at a time.
    hand: Mutex<Hand>,
    /// Completed records evicted so far, and how many of them have been
    /// reported in a warning; when the last warning was (ms since `born`).
    evicted: AtomicU64,
    reported: AtomicU64,
    last_warning_ms: AtomicU64,
    /// When a full store last swept every shard (ms since `born`), so that a
    /// full store does not sweep on every claim.
    last_full_sweep_ms: AtomicU64,
    born: Instant,
}

/// Sweeps every shard once per [`SWEEP_CYCLE`] until the store is dropped,
/// and reports evictions not yet warned of.
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
            inner.report_evictions();
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

    /// `old` is overwritten in place by `new`: the count stays, the bytes
    /// change by the difference (one atomic operation). Returns the bytes
    /// held after.
    fn replaced(&self, old: &Slot, new: &Slot) -> i64 {
        let delta = i64::from(new.weight) - i64::from(old.weight);
        self.bytes.fetch_add(delta, Ordering::Relaxed) + delta
    }

    /// Gives a completed record its epoch, and counts its completion.
    fn stamp(&self, slot: &mut Slot) {
        let by_bytes = (u128::from(slot.weight) * u128::from(self.units_per_byte)) >> 16;
        let units = u64::try_from(by_bytes)
            .unwrap_or(u64::MAX)
            .max(self.units_per_entry)
            .max(1);
        let before = self.completed.fetch_add(units, Ordering::Relaxed);
        slot.epoch = (before >> EPOCH_SHIFT) as u32;
    }

    /// The epoch records completing now get.
    fn epoch(&self) -> u32 {
        (self.completed.load(Ordering::Relaxed) >> EPOCH_SHIFT) as u32
    }

    fn entry_count(&self) -> u64 {
        self.entries.load(Ordering::Relaxed).max(0) as u64
    }

    fn weighted_size(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// Counts `slot` in if it fits within the bound. Each counter is taken
    /// in one atomic step and given back if it went past, so that claims
    /// racing in other shards cannot pass the bound together (checked, then
    /// counted, two of them could: 101 records in a store of 100).
    fn try_add(&self, slot: &Slot) -> bool {
        let max_entries = i64::try_from(self.max_entries).unwrap_or(i64::MAX);
        if self.entries.fetch_add(1, Ordering::Relaxed) >= max_entries {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let weight = i64::from(slot.weight);
        let max_bytes = i64::try_from(self.max_bytes).unwrap_or(i64::MAX);
        if self.bytes.fetch_add(weight, Ordering::Relaxed) + weight > max_bytes {
            self.removed(slot);
            return false;
        }
        true
    }

    /// Room for one more claim.
    fn has_room(&self) -> bool {
        self.entry_count() < self.max_entries
            && self.weighted_size().saturating_add(ENTRY_OVERHEAD) <= self.max_bytes
    }

    /// Within the bound (a completion may have taken the store past it).
    fn within_bound(&self) -> bool {
        self.entry_count() <= self.max_entries && self.weighted_size() <= self.max_bytes
    }

    fn ms_since_born(&self) -> u64 {
        (self.born.elapsed().as_millis() as u64).max(1)
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
        if shard.may_hold_expired(now) {
            self.scan(&mut shard, now, None);
        }
    }

    /// Drops the expired records of `shard` and, with `evict_upto`, its
    /// completed records of that epoch or earlier; recounts what the shard
    /// tracks. Returns how many live records were evicted.
    fn scan(&self, shard: &mut ShardMap, now: Instant, evict_upto: Option<u32>) -> u64 {
        let ShardMap {
            map,
            claims,
            claims_after,
            done_after,
            oldest_done,
        } = shard;
        (*claims, *claims_after, *done_after, *oldest_done) = (0, None, None, None);
        let mut evicted = 0;
        map.retain(|_, slot| {
            let live = slot.live(now);
            let keep = if slot.is_claim() {
                if live {
                    *claims += 1;
                    lower_to(claims_after, slot.expires);
                }
                live
            } else if live && !evict_upto.is_some_and(|upto| at_or_before(slot.epoch, upto)) {
                lower_to(done_after, slot.expires);
                lower_epoch(oldest_done, slot.epoch);
                true
            } else {
                evicted += u64::from(live);
                false
            };
            if !keep {
                self.removed(slot);
            }
            keep
        });
        if map.capacity() > 64 && map.len() * 4 < map.capacity() {
            let len = map.len();
            map.shrink_to(len * 2);
        }
        evicted
    }
}

impl MemoryStore {
    /// A builder with the default bounds and [`WhenFull::EvictOldest`].
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::new()
    }

    /// Records held (expired ones are counted until they are swept).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Approximate bytes held by records.
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Completed records evicted to make room since the store was built
    /// (always 0 under [`WhenFull::Refuse`]). Records that expired are not
    /// counted.
    pub fn evicted_count(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// Sweeps every shard, at most every 100 ms: the store looks full, and
    /// expired records may be what fills it.
    fn sweep_all_if_due(&self) {
        let now_ms = self.inner.ms_since_born();
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
        // Evicting makes room, but concurrent claims may take it first.
        let mut evictions = 0;
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
                    self.inner.replaced(e.get(), &slot);
                    let (was_claim, mark) = (e.get().is_claim(), slot.mark());
                    **e.get_mut() = slot;
                    shard.untrack(was_claim);
                    shard.track(mark);
                    return Ok(Claim::Acquired);
                }
                Entry::Vacant(v) if self.inner.try_add(&slot) => {
                    let mark = slot.mark();
                    v.insert(Box::new(slot));
                    shard.track(mark);
                    return Ok(Claim::Acquired);
                }
                Entry::Vacant(_) => {}
            }
            drop(shard);
            if !swept {
                // Expired records go before any live one is evicted.
                self.sweep_all_if_due();
                swept = true;
            } else if self.inner.when_full == WhenFull::EvictOldest
                && evictions < 4
                && self.inner.evict_until(Inner::has_room)
            {
                evictions += 1;
            } else {
                return Err(StoreError::Full);
            }
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
                mark: shard::Mark,
                bytes: i64,
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
                // In place, in the claim's box; a completed record is
                // stamped there with its epoch.
                (Some(new), Some(old)) => {
                    let was_claim = old.is_claim();
                    let bytes = self.inner.replaced(old, &new);
                    *old = new;
                    if !old.is_claim() {
                        self.inner.stamp(old);
                    }
                    Then::Replaced {
                        was_claim,
                        mark: old.mark(),
                        bytes,
                    }
                }
                (Some(new), None) => Then::Insert(new),
                (None, Some(_)) => Then::Remove,
                (None, None) => Then::Nothing,
            }
        });
        // A completion may take the store past its bound by its response.
        let over = match then {
            Then::Refuse => return false,
            Then::Nothing => false,
            Then::Replaced {
                was_claim,
                mark,
                bytes,
            } => {
                shard.untrack(was_claim);
                shard.track(mark);
                bytes.max(0) as u64 > self.inner.max_bytes
            }
            Then::Insert(mut slot) => {
                if !slot.is_claim() {
                    self.inner.stamp(&mut slot);
                }
                self.inner.added(&slot);
                shard.track(slot.mark());
                shard.map.insert(id.clone(), Box::new(slot));
                !self.inner.within_bound()
            }
            Then::Remove => {
                self.inner.remove(&mut shard, id);
                false
            }
        };
        drop(shard);
        if over && self.inner.when_full == WhenFull::EvictOldest {
            self.inner.evict_until(Inner::within_bound);
        }
        true
    }
}

impl Store for MemoryStore {
    fn is_process_local(&self) -> bool {
        true
    }

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
            .field("when_full", &self.inner.when_full)
            .field("evicted", &self.evicted_count())
            .finish()
    }
}

#[cfg(test)]
mod tests;
