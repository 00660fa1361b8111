//! The in-process store, on [moka](https://docs.rs/moka).

use std::future::{ready, Future};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::Expiry;

use super::{Claim, Store, StoreError};
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

/// Default bound on the number of records.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Default bound on the bytes of records (approximate: keys, headers, bodies).
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// Bytes a record costs besides its response (key, bookkeeping, map slot).
const ENTRY_OVERHEAD: u64 = 160;

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
    cache: moka::sync::Cache<RecordId, Entry>,
    usage: Arc<Usage>,
    max_entries: u64,
    max_bytes: u64,
    born: Instant,
}

/// Counters kept symmetric: `+1 / +weight` inside the compute closure that
/// puts an entry (before moka can report the entry it replaces), `-1 /
/// -weight` in the eviction listener for every removal cause, replacement
/// included. Signed, so a transient ordering can never wrap.
#[derive(Default)]
struct Usage {
    entries: AtomicI64,
    bytes: AtomicI64,
    /// When housekeeping last ran because the store looked full (ms since
    /// the store was built), so a full store does not run it on every claim.
    last_housekeeping_ms: AtomicU64,
}

impl Usage {
    fn add(&self, e: &Entry) {
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(e.weight as i64, Ordering::Relaxed);
    }
    fn remove(&self, e: &Entry) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(e.weight as i64, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Entry {
    record: Record,
    /// How long the record lives from its last write.
    lifetime: Duration,
    weight: u64,
}

impl Entry {
    fn new(record: Record, lifetime: Duration) -> Self {
        let weight = ENTRY_OVERHEAD
            + match &record {
                Record::InProgress { .. } => 0,
                Record::Completed { response, .. } => response.weight() as u64,
            };
        Self {
            record,
            lifetime,
            weight,
        }
    }
}

struct RecordExpiry;

impl Expiry<RecordId, Entry> for RecordExpiry {
    fn expire_after_create(&self, _: &RecordId, e: &Entry, _: Instant) -> Option<Duration> {
        Some(e.lifetime)
    }
    fn expire_after_update(
        &self,
        _: &RecordId,
        e: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.lifetime)
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
        let usage = Arc::new(Usage::default());
        let listener_usage = usage.clone();
        let cache = moka::sync::Cache::builder()
            // No `max_capacity`: moka then never evicts or refuses an entry by
            // size (its TinyLFU admission would drop new claims when full). The
            // bound is enforced by `claim` instead.
            .expire_after(RecordExpiry)
            .eviction_listener(move |_k, e: Entry, _cause: RemovalCause| listener_usage.remove(&e))
            .build();
        MemoryStore {
            inner: Arc::new(Inner {
                cache,
                usage,
                max_entries: self.max_entries,
                max_bytes: self.max_bytes,
                born: Instant::now(),
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder().build()
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

    /// Live records (expired ones are counted until moka's housekeeping runs).
    pub fn entry_count(&self) -> u64 {
        self.inner.usage.entries.load(Ordering::Relaxed).max(0) as u64
    }

    /// Approximate bytes held by records.
    pub fn weighted_size(&self) -> u64 {
        self.inner.usage.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    fn has_room(&self) -> bool {
        self.entry_count() < self.inner.max_entries
            && self.weighted_size().saturating_add(ENTRY_OVERHEAD) <= self.inner.max_bytes
    }

    /// Runs moka's pending housekeeping (expired records are counted until
    /// then), at most every 100 ms: it may take a while on a big store.
    fn housekeep(&self) {
        let now = (self.inner.born.elapsed().as_millis() as u64).max(1);
        let last = &self.inner.usage.last_housekeeping_ms;
        let prev = last.load(Ordering::Relaxed);
        if (prev == 0 || now.saturating_sub(prev) >= 100)
            && last
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.inner.cache.run_pending_tasks();
        }
    }

    fn claim_now(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        // Fast path, without the per-key lock: replays and duplicates.
        if let Some(e) = self.inner.cache.get(id) {
            return Ok(Claim::Existing(e.record));
        }
        if !self.has_room() {
            self.housekeep();
            if !self.has_room() {
                return Err(StoreError::Full);
            }
        }
        let usage = &self.inner.usage;
        let mut existing = None;
        self.inner
            .cache
            .entry_by_ref(id)
            .and_compute_with(|current| match current {
                Some(e) => {
                    existing = Some(e.into_value().record);
                    Op::Nop
                }
                None => {
                    let e = Entry::new(Record::InProgress { fingerprint, owner }, lease);
                    usage.add(&e);
                    Op::Put(e)
                }
            });
        Ok(match existing {
            Some(record) => Claim::Existing(record),
            None => Claim::Acquired,
        })
    }

    /// Applies `next` to the record atomically when `owner` holds the claim,
    /// or, if `or_absent`, when there is no record at all. `next` gets the
    /// claim's fingerprint; `None` removes the record.
    fn if_owner(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        or_absent: bool,
        next: impl FnOnce(Option<Fingerprint>) -> Option<Entry>,
    ) -> bool {
        let usage = &self.inner.usage;
        let mut done = false;
        self.inner
            .cache
            .entry_by_ref(id)
            .and_compute_with(|current| {
                let fingerprint = match current.as_ref().map(|e| &e.value().record) {
                    Some(Record::InProgress {
                        owner: o,
                        fingerprint,
                    }) if *o == owner => Some(*fingerprint),
                    None if or_absent => None,
                    _ => return Op::Nop,
                };
                done = true;
                match next(fingerprint) {
                    Some(e) => {
                        usage.add(&e);
                        Op::Put(e)
                    }
                    None if current.is_some() => Op::Remove,
                    None => Op::Nop,
                }
            });
        done
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
        ready(Ok(self.if_owner(id, owner, false, |fingerprint| {
            fingerprint
                .map(|fingerprint| Entry::new(Record::InProgress { fingerprint, owner }, lease))
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
        ready(Ok(self.if_owner(id, owner, true, |_| {
            Some(Entry::new(
                Record::Completed {
                    fingerprint,
                    response,
                },
                ttl,
            ))
        })))
    }

    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.if_owner(id, owner, false, |_| None)))
    }

    fn get(
        &self,
        id: &RecordId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        ready(Ok(self.inner.cache.get(id).map(|e| e.record)))
    }

    fn delete(&self, id: &RecordId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.inner.cache.remove(id).is_some()))
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

    /// moka's TinyLFU admission would drop about half of brand-new keys once a
    /// bounded cache is full; here every claim up to the bound is kept, and the
    /// one past it is refused loudly.
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
        store.inner.cache.run_pending_tasks();
        for i in 0..1000 {
            assert!(store.inner.cache.get(&id(i)).is_some(), "claim {i} kept");
        }
        assert!(matches!(
            store.claim_now(&id(1000), fp, OwnerToken::generate(), lease),
            Err(StoreError::Full)
        ));
        assert_eq!(store.entry_count(), 1000);
    }

    /// Re-claiming a record that expired but is still in moka's map (before
    /// housekeeping) replaces it: the counters must not drift, or the store
    /// would creep to a permanent "full".
    #[test]
    fn counters_stay_exact_when_expired_records_are_replaced() {
        let store = MemoryStore::builder().max_entries(10).build();
        let fp = Fingerprint::of_bytes(b"x");
        for round in 0..30 {
            let owner = OwnerToken::generate();
            let claim = store
                .claim_now(&id(0), fp, owner, Duration::from_millis(5))
                .unwrap();
            assert_eq!(claim, Claim::Acquired, "round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
        // moka's expiry timer wheel has about one second of resolution:
        // housekeeping removes expired records once their bucket is due.
        std::thread::sleep(Duration::from_millis(2500));
        store.inner.cache.run_pending_tasks();
        assert_eq!(store.entry_count(), 0);
        assert_eq!(store.weighted_size(), 0);
        assert!(store.has_room());
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
        assert!(store.if_owner(&id(0), owner, false, |_| Some(Entry::new(
            Record::Completed {
                fingerprint: fp,
                response: big
            },
            lease
        ))));
        assert!(store.weighted_size() > 9_900);
        assert!(matches!(
            store.claim_now(&id(1), fp, OwnerToken::generate(), lease),
            Err(StoreError::Full)
        ));
        // Space comes back when records go.
        store.inner.cache.invalidate(&id(0));
        store.inner.cache.run_pending_tasks();
        assert_eq!(store.weighted_size(), 0);
        assert_eq!(store.entry_count(), 0);
        assert!(store
            .claim_now(&id(1), fp, OwnerToken::generate(), lease)
            .is_ok());
    }
}
