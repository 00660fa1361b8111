//! The in-process store, on [moka](https://docs.rs/moka).

use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, Ordering};
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
}

#[derive(Default)]
struct Usage {
    entries: AtomicU64,
    bytes: AtomicU64,
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
            .eviction_listener(move |_k, e: Entry, cause| {
                listener_usage.bytes.fetch_sub(e.weight, Ordering::Relaxed);
                if cause != RemovalCause::Replaced {
                    listener_usage.entries.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryStore {
            inner: Arc::new(Inner {
                cache,
                usage,
                max_entries: self.max_entries,
                max_bytes: self.max_bytes,
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
        self.inner.usage.entries.load(Ordering::Relaxed)
    }

    /// Approximate bytes held by records.
    pub fn weighted_size(&self) -> u64 {
        self.inner.usage.bytes.load(Ordering::Relaxed)
    }

    fn has_room(&self, extra: u64) -> bool {
        let u = &self.inner.usage;
        u.entries.load(Ordering::Relaxed) < self.inner.max_entries
            && u.bytes.load(Ordering::Relaxed) + extra <= self.inner.max_bytes
    }

    fn put(&self, entry: &Entry) {
        self.inner
            .usage
            .bytes
            .fetch_add(entry.weight, Ordering::Relaxed);
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
        if !self.has_room(ENTRY_OVERHEAD) {
            // Counters lag behind expiry until housekeeping runs; run it once
            // before refusing.
            self.inner.cache.run_pending_tasks();
            if !self.has_room(ENTRY_OVERHEAD) {
                return Err(StoreError::Full);
            }
        }
        let mut existing = None;
        let mut inserted = None;
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
                    inserted = Some(e.weight);
                    Op::Put(e)
                }
            });
        match existing {
            Some(record) => Ok(Claim::Existing(record)),
            None => {
                let u = &self.inner.usage;
                u.entries.fetch_add(1, Ordering::Relaxed);
                u.bytes
                    .fetch_add(inserted.unwrap_or(ENTRY_OVERHEAD), Ordering::Relaxed);
                Ok(Claim::Acquired)
            }
        }
    }

    /// Replaces `owner`'s claim by `next` (or removes it for `None`) atomically.
    fn if_owner(&self, id: &RecordId, owner: OwnerToken, next: Option<(Record, Duration)>) -> bool {
        let mut done = false;
        let mut added = None;
        self.inner
            .cache
            .entry_by_ref(id)
            .and_compute_with(|current| match current {
                Some(e) if matches!(e.value().record, Record::InProgress { owner: o, .. } if o == owner) => {
                    done = true;
                    match next {
                        Some((record, lifetime)) => {
                            let e = Entry::new(record, lifetime);
                            added = Some(e.clone());
                            Op::Put(e)
                        }
                        None => Op::Remove,
                    }
                }
                _ => Op::Nop,
            });
        if let Some(e) = added {
            self.put(&e);
        }
        done
    }

    fn fingerprint_of_claim(&self, id: &RecordId, owner: OwnerToken) -> Option<Fingerprint> {
        match self.inner.cache.get(id)?.record {
            Record::InProgress {
                fingerprint,
                owner: o,
            } if o == owner => Some(fingerprint),
            _ => None,
        }
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
        let renewed = match self.fingerprint_of_claim(id, owner) {
            Some(fingerprint) => self.if_owner(
                id,
                owner,
                Some((Record::InProgress { fingerprint, owner }, lease)),
            ),
            None => false,
        };
        ready(Ok(renewed))
    }

    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let done = match self.fingerprint_of_claim(id, owner) {
            Some(fingerprint) => self.if_owner(
                id,
                owner,
                Some((
                    Record::Completed {
                        fingerprint,
                        response,
                    },
                    ttl,
                )),
            ),
            None => false,
        };
        ready(Ok(done))
    }

    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.if_owner(id, owner, None)))
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
        assert!(store.if_owner(
            &id(0),
            owner,
            Some((
                Record::Completed {
                    fingerprint: fp,
                    response: big
                },
                lease
            ))
        ));
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
