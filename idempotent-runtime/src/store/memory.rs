//! The in-process store: a sharded hash map with per-record expiry.
//!
//! It was built on moka first. Measured (`BENCHMARKS.md`), moka's per-entry
//! expiry and atomic `compute` cost about 3 µs per claim and completion, a
//! third of a trivial axum handler's time; the claim and completion this store
//! needs are one short lock of one of 64 shards each, about 0.3 µs.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Claim, Store, StoreError};
use crate::store::digest_hash::DigestHashState;
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

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

/// Records are boxed: a map bucket is then 64 bytes instead of 160, which
/// matters because a table just past a doubling is half empty.
type Map = HashMap<RecordId, Box<Slot>, DigestHashState>;

/// A shard's records, and when a sweep could find one of them expired.
///
/// Claims and completed records are tracked apart: under a long `ttl` every
/// completed record outlives its claim's lease by far, and a shard whose
/// in-progress claims have all completed has nothing to sweep until its
/// earliest completed record expires. Tracking one earliest expiry for both
/// made every sweep scan every record once the first lease had passed.
struct ShardMap {
    map: Map,
    /// In-progress claims held here, expired ones included until removed.
    claims: u32,
    /// No claim here expires before this: the earliest lease written since
    /// `claims` was last zero (renewed claims may make it early, never late).
    claims_after: Option<Instant>,
    /// No completed record here expires before this: the earliest written
    /// since the last sweep (records replaced since may make it early).
    done_after: Option<Instant>,
}

/// `earliest` becomes `t` if that is earlier (or it was unset).
fn lower_to(earliest: &mut Option<Instant>, t: Instant) {
    *earliest = Some(earliest.map_or(t, |e| e.min(t)));
}

impl ShardMap {
    fn new(map: Map) -> Self {
        Self {
            map,
            claims: 0,
            claims_after: None,
            done_after: None,
        }
    }

    /// Notes that a slot of this kind, expiring then, was written here
    /// (inserted or written in place).
    fn track(&mut self, is_claim: bool, expires: Instant) {
        if is_claim {
            self.claims += 1;
            lower_to(&mut self.claims_after, expires);
        } else {
            lower_to(&mut self.done_after, expires);
        }
    }

    /// Notes that a slot of this kind left (removed or overwritten).
    fn untrack(&mut self, was_claim: bool) {
        if was_claim {
            self.claims = self.claims.saturating_sub(1);
            if self.claims == 0 {
                self.claims_after = None;
            }
        }
    }

    /// Whether a record here may have expired by `now`.
    fn may_hold_expired(&self, now: Instant) -> bool {
        // `claims_after` is unset whenever no claim is held.
        let passed = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        passed(self.done_after) || passed(self.claims_after)
    }
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

/// One lock and map, on a cache line of its own.
#[repr(align(128))]
struct Shard(Mutex<ShardMap>);

/// A record, compact (72 bytes besides its response).
struct Slot {
    state: State,
    expires: Instant,
    /// What the record counts against `max_bytes`.
    weight: u32,
}

enum State {
    Claim {
        fingerprint: [u8; 32],
        owner: [u8; 16],
    },
    Done {
        fingerprint: [u8; 32],
        response: Arc<StoredResponse>,
    },
}

impl Slot {
    fn new(record: Record, lifetime: Duration, now: Instant) -> Self {
        let (state, weight) = match record {
            Record::InProgress { fingerprint, owner } => (
                State::Claim {
                    fingerprint: *fingerprint.as_bytes(),
                    owner: owner.to_bytes(),
                },
                ENTRY_OVERHEAD,
            ),
            Record::Completed {
                fingerprint,
                response,
            } => {
                let weight = ENTRY_OVERHEAD.saturating_add(response.weight() as u64);
                (
                    State::Done {
                        fingerprint: *fingerprint.as_bytes(),
                        response,
                    },
                    weight,
                )
            }
        };
        Self {
            state,
            // Lifetimes are capped by the life cycle; saturate regardless.
            expires: now
                .checked_add(lifetime)
                .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400)),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    fn record(&self) -> Record {
        match &self.state {
            State::Claim { fingerprint, owner } => Record::InProgress {
                fingerprint: Fingerprint::from_bytes(*fingerprint),
                owner: OwnerToken::from_bytes(*owner),
            },
            State::Done {
                fingerprint,
                response,
            } => Record::Completed {
                fingerprint: Fingerprint::from_bytes(*fingerprint),
                response: response.clone(),
            },
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }

    fn is_claim(&self) -> bool {
        matches!(self.state, State::Claim { .. })
    }
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

fn lock(shard: &Shard) -> MutexGuard<'_, ShardMap> {
    // A panic while holding the lock cannot leave a half-written map entry.
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
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
mod tests {
    use super::*;
    use crate::IdempotencyKey;

    fn id(i: usize) -> RecordId {
        RecordId::new(
            "s",
            None,
            &IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap(),
        )
    }

    fn now<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("the memory store answers at once"),
        }
    }

    /// Every claim up to the bound is kept (a cache's admission policy would
    /// drop some), and the one past it is refused loudly.
    #[test]
    fn full_store_keeps_every_claim_and_refuses_the_next() {
        let store = MemoryStore::builder().max_entries(1000).build();
        let fp = Fingerprint::of_bytes(b"x");
        let lease = Duration::from_secs(60);
        for i in 0..1000 {
            let c = store
                .claim_now(&id(i), fp, OwnerToken::generate(), lease)
                .unwrap();
            assert_eq!(c, Claim::Acquired, "claim {i}");
        }
        for i in 0..1000 {
            assert!(now(store.get(&id(i))).unwrap().is_some(), "claim {i} kept");
        }
        assert!(matches!(
            store.claim_now(&id(1000), fp, OwnerToken::generate(), lease),
            Err(StoreError::Full)
        ));
        assert_eq!(store.entry_count(), 1000);
    }

    /// Expired records count until swept; re-claiming one replaces it, and a
    /// full store sweeps before it refuses. The counters must not drift, or
    /// the store would creep to a permanent "full".
    #[test]
    fn counters_stay_exact_as_records_expire() {
        let store = MemoryStore::builder().max_entries(10).build();
        let fp = Fingerprint::of_bytes(b"x");
        let short = Duration::from_millis(5);
        for round in 0..30 {
            let claim = store
                .claim_now(&id(0), fp, OwnerToken::generate(), short)
                .unwrap();
            assert_eq!(claim, Claim::Acquired, "round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            store.entry_count(),
            1,
            "the last one, expired, not yet swept"
        );
        for i in 1..10 {
            store
                .claim_now(&id(i), fp, OwnerToken::generate(), short)
                .unwrap();
        }
        assert_eq!(store.entry_count(), 10);
        std::thread::sleep(Duration::from_millis(10));
        // Full of expired records: the claim sweeps and succeeds.
        let lease = Duration::from_secs(60);
        assert_eq!(
            store
                .claim_now(&id(10), fp, OwnerToken::generate(), lease)
                .unwrap(),
            Claim::Acquired
        );
        assert_eq!(store.entry_count(), 1);
        assert_eq!(store.weighted_size(), ENTRY_OVERHEAD);
        assert!(now(store.get(&id(0))).unwrap().is_none());
    }

    #[test]
    fn byte_bound_refuses_claims() {
        let store = MemoryStore::builder().max_bytes(10_000).build();
        let fp = Fingerprint::of_bytes(b"x");
        let lease = Duration::from_secs(60);
        let owner = OwnerToken::generate();
        assert_eq!(
            store.claim_now(&id(0), fp, owner, lease).unwrap(),
            Claim::Acquired
        );
        let big = Arc::new(StoredResponse::new(200, vec![0u8; 9_900]));
        assert!(now(store.complete(&id(0), owner, fp, big, lease)).unwrap());
        assert!(store.weighted_size() > 9_900);
        assert!(matches!(
            store.claim_now(&id(1), fp, OwnerToken::generate(), lease),
            Err(StoreError::Full)
        ));
        // Space comes back when records go.
        assert!(now(store.delete(&id(0))).unwrap());
        assert_eq!(store.weighted_size(), 0);
        assert_eq!(store.entry_count(), 0);
        assert!(store
            .claim_now(&id(1), fp, OwnerToken::generate(), lease)
            .is_ok());
    }

    /// The background sweep reclaims expired records nobody asks for again.
    #[test]
    fn sweeping_reclaims_expired_records() {
        let store = MemoryStore::builder().build();
        let fp = Fingerprint::of_bytes(b"x");
        for i in 0..500 {
            store
                .claim_now(&id(i), fp, OwnerToken::generate(), Duration::from_millis(1))
                .unwrap();
        }
        store
            .claim_now(
                &id(500),
                fp,
                OwnerToken::generate(),
                Duration::from_secs(60),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // Expired records are invisible at once (the background sweeper may
        // also have reclaimed some already).
        assert!(now(store.get(&id(0))).unwrap().is_none());
        assert!(store.entry_count() >= 1);
        let later = Instant::now();
        for i in 0..SHARDS {
            store.inner.sweep(i, later);
        }
        assert_eq!(store.entry_count(), 1);
        assert_eq!(store.weighted_size(), ENTRY_OVERHEAD);
    }

    fn sweep_all(store: &MemoryStore, at: Instant) {
        for i in 0..SHARDS {
            store.inner.sweep(i, at);
        }
    }

    fn response() -> Arc<StoredResponse> {
        Arc::new(StoredResponse::new(201, vec![b'x'; 200]))
    }

    /// Abandoned claims and expired completed records are both reclaimed by
    /// the sweep, while completed and renewed records around them stay.
    #[test]
    fn sweeping_tells_claims_from_completed_records() {
        let store = MemoryStore::builder().build();
        let fp = Fingerprint::of_bytes(b"x");
        let short = Duration::from_millis(1);
        let long = Duration::from_secs(3600);
        let mut renewed = Vec::new();
        for i in 0..600 {
            let owner = OwnerToken::generate();
            store.claim_now(&id(i), fp, owner, short).unwrap();
            match i % 3 {
                // Completed for an hour: kept.
                0 => assert!(now(store.complete(&id(i), owner, fp, response(), long)).unwrap()),
                // Renewed for an hour: kept.
                1 => {
                    assert!(now(store.renew(&id(i), owner, long)).unwrap());
                    renewed.push(i);
                }
                // Abandoned: its lease runs out.
                _ => {}
            }
        }
        for i in 600..800 {
            let owner = OwnerToken::generate();
            store.claim_now(&id(i), fp, owner, long).unwrap();
            // Completed, expiring at once.
            assert!(now(store.complete(&id(i), owner, fp, response(), short)).unwrap());
        }
        std::thread::sleep(Duration::from_millis(5));
        sweep_all(&store, Instant::now());
        assert_eq!(
            store.entry_count(),
            400,
            "the abandoned and the expired are gone"
        );
        for i in 0..800 {
            let kept = now(store.get(&id(i))).unwrap().is_some();
            assert_eq!(kept, i < 600 && i % 3 != 2, "record {i}");
        }
        assert!(renewed.iter().all(|&i| matches!(
            now(store.get(&id(i))).unwrap(),
            Some(Record::InProgress { .. })
        )));
    }

    /// Once every claim has completed with a long `ttl`, no shard is due for
    /// a sweep before that `ttl` ends: a store of a million long-lived records
    /// is not rescanned every cycle because their leases (long gone) were
    /// once its earliest expiries.
    #[test]
    fn completed_long_lived_records_keep_shards_out_of_sweeps() {
        let store = MemoryStore::builder().build();
        let fp = Fingerprint::of_bytes(b"x");
        for i in 0..2000 {
            let owner = OwnerToken::generate();
            store
                .claim_now(&id(i), fp, owner, Duration::from_millis(1))
                .unwrap();
            assert!(now(store.complete(
                &id(i),
                owner,
                fp,
                response(),
                Duration::from_secs(86_400)
            ))
            .unwrap());
        }
        let in_an_hour = Instant::now() + Duration::from_secs(3600);
        let due = |at| {
            let shards = store.inner.shards.iter();
            shards.filter(|s| lock(s).may_hold_expired(at)).count()
        };
        assert_eq!(
            due(in_an_hour),
            0,
            "shards due for a sweep although nothing can expire"
        );
        // A claim left in progress makes its shard due once its lease ends.
        store
            .claim_now(
                &id(5000),
                fp,
                OwnerToken::generate(),
                Duration::from_millis(1),
            )
            .unwrap();
        assert_eq!(due(in_an_hour), 1);
        sweep_all(&store, in_an_hour);
        assert_eq!(store.entry_count(), 2000);
    }
}
