//! The stores the suites run against, behind one type.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::{Claim, Store, StoreError};
use idempotent_runtime::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

/// Any store under test.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The memory store.
    Memory(MemoryStore),
}

/// Makes a fresh store for one test.
pub trait StoreFactory {
    /// A fresh, empty store.
    fn make() -> impl Future<Output = AnyStore> + Send;
}

/// The memory store with default bounds.
pub struct Memory;

impl StoreFactory for Memory {
    async fn make() -> AnyStore {
        AnyStore::Memory(MemoryStore::default())
    }
}

impl Store for AnyStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        match self {
            AnyStore::Memory(s) => s.claim(id, fingerprint, owner, lease).await,
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.renew(id, owner, lease).await,
        }
    }

    async fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.complete(id, owner, fingerprint, response, ttl).await,
        }
    }

    async fn release(&self, id: &RecordId, owner: OwnerToken) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.release(id, owner).await,
        }
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.get(id).await,
        }
    }

    async fn delete(&self, id: &RecordId) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.delete(id).await,
        }
    }
}
