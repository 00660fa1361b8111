//! How a memory store is configured: its bounds and what it does when full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::shard::{Shard, ShardMap};
use super::{
    spawn_sweeper, Hand, Inner, MemoryStore, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, SHARDS,
    STORE_UNITS,
};
use crate::store::digest_hash::DigestHashState;

/// What a [`MemoryStore`] does when a new claim would take it past its bound.
///
/// Whichever is chosen, an in-progress claim is never dropped to make room:
/// that would let a duplicate run the handler while the first still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// Evict completed records, oldest first, until the claim fits
    /// (the default). A retry of an evicted key finds no record and runs the
    /// handler again, as it would after the record's TTL. Only when nothing
    /// but in-progress claims fills the store is the claim refused, with
    /// [`StoreError::Full`](crate::store::StoreError::Full).
    ///
    /// "Oldest" is approximate: completed records are ordered by epochs of
    /// an eighth of the bound's worth of completions each, and the oldest
    /// epoch held is evicted shard by shard. What goes is about the oldest
    /// eighth of the store, in shard order within it.
    #[default]
    EvictOldest,
    /// Never evict a live record: a claim that would pass the bound fails
    /// with [`StoreError::Full`](crate::store::StoreError::Full), which handlers answer with 503 `store-full`
    /// and `Retry-After` (Redis's `noeviction`). Every stored response is
    /// then kept for its whole TTL, but a burst of new keys can lock new keys
    /// out until records expire: size the store for request rate × TTL.
    Refuse,
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_entries: u64,
    max_bytes: u64,
    when_full: WhenFull,
}

impl MemoryStoreBuilder {
    /// The default bounds and [`WhenFull::EvictOldest`].
    pub(super) fn new() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            when_full: WhenFull::default(),
        }
    }

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

    /// What a claim that would pass the bound does (default
    /// [`WhenFull::EvictOldest`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use idempotent_runtime::store::memory::{MemoryStore, WhenFull};
    /// use idempotent_runtime::store::{Claim, Store, StoreError};
    /// use idempotent_runtime::{Fingerprint, IdempotencyKey, OwnerToken, RecordId, StoredResponse};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let id = |key: &str| RecordId::new("pay", None, &IdempotencyKey::parse(key.as_bytes()).unwrap());
    /// let fingerprint = Fingerprint::of_bytes(b"request");
    /// let (lease, ttl) = (Duration::from_secs(30), Duration::from_secs(3600));
    /// let response = Arc::new(StoredResponse::new(201, &b"{}"[..]));
    ///
    /// for when_full in [WhenFull::EvictOldest, WhenFull::Refuse] {
    ///     let store = MemoryStore::builder().max_entries(1).when_full(when_full).build();
    ///     let owner = OwnerToken::generate();
    ///     assert_eq!(store.claim(&id("a"), fingerprint, owner, lease).await?, Claim::Acquired);
    ///     assert!(store.complete(&id("a"), owner, fingerprint, response.clone(), ttl).await?);
    ///
    ///     let b = store.claim(&id("b"), fingerprint, OwnerToken::generate(), lease).await;
    ///     if when_full == WhenFull::EvictOldest {
    ///         // "a" was evicted to make room: a retry of "a" would run again.
    ///         assert_eq!(b?, Claim::Acquired);
    ///         assert!(store.get(&id("a")).await?.is_none());
    ///         assert_eq!(store.evicted_count(), 1);
    ///         // "b" is in progress and never evicted: with nothing completed
    ///         // left to evict, a new key is refused.
    ///         let c = store.claim(&id("c"), fingerprint, OwnerToken::generate(), lease).await;
    ///         assert!(matches!(c, Err(StoreError::Full)));
    ///     } else {
    ///         // "a" is kept for its whole TTL; "b" is refused (503 store-full).
    ///         assert!(matches!(b, Err(StoreError::Full)));
    ///         assert!(store.get(&id("a")).await?.is_some());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let store = self.build_unswept();
        spawn_sweeper(Arc::downgrade(&store.inner));
        store
    }

    /// The store without its background sweeper: expired records stay until
    /// a full store sweeps them (tests that count them).
    pub(super) fn build_unswept(self) -> MemoryStore {
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
            when_full: self.when_full,
            completed: AtomicU64::new(0),
            units_per_entry: STORE_UNITS / self.max_entries.max(1),
            units_per_byte: (STORE_UNITS << 16) / self.max_bytes.max(1),
            hand: Mutex::new(Hand {
                next: 0,
                upto: 0,
                seen: None,
                futile_at: None,
            }),
            evicted: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
            last_full_sweep_ms: AtomicU64::new(0),
            born: Instant::now(),
        });
        MemoryStore { inner }
    }
}
