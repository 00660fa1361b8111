//! The stores the suites run against, behind one type.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::store::{ChangeListener, Claim, Store, StoreError};
use idempotent_runtime::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

use crate::redis_server::{RedisCluster as Cluster, RedisServer};

/// Any store under test.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The memory store.
    Memory(MemoryStore),
    /// The Redis store, and the server it talks to, which runs while this
    /// guard lives. Servers under test get a copy without the guard
    /// ([`AnyStore::unguarded`]): they outlive the test.
    Redis(RedisStore, Option<Arc<RedisServer>>),
    /// The Redis store on a local three-master cluster (and its guard).
    Cluster(RedisStore, Option<Arc<Cluster>>),
}

impl AnyStore {
    /// The same store without the server guard, for a test server that is
    /// never shut down (it must not keep `redis-server` running after the
    /// test).
    pub fn unguarded(&self) -> AnyStore {
        match self {
            AnyStore::Memory(s) => AnyStore::Memory(s.clone()),
            AnyStore::Redis(s, _) => AnyStore::Redis(s.clone(), None),
            AnyStore::Cluster(s, _) => AnyStore::Cluster(s.clone(), None),
        }
    }

    /// The Redis server behind this store, if it is a Redis store with one.
    pub fn redis_server(&self) -> Option<&Arc<RedisServer>> {
        match self {
            AnyStore::Redis(_, server) => server.as_ref(),
            AnyStore::Memory(_) | AnyStore::Cluster(..) => None,
        }
    }
}

/// Makes a fresh store for one test.
pub trait StoreFactory {
    /// A fresh, empty store; `None` when the test must be skipped (no Redis
    /// outside CI).
    fn make() -> impl Future<Output = Option<AnyStore>> + Send;
}

/// The memory store with default bounds.
pub struct Memory;

impl StoreFactory for Memory {
    async fn make() -> Option<AnyStore> {
        Some(AnyStore::Memory(MemoryStore::default()))
    }
}

/// The Redis store on a `redis-server` of the test's own.
pub struct Redis;

impl StoreFactory for Redis {
    async fn make() -> Option<AnyStore> {
        let server = RedisServer::for_test()?;
        let store = RedisStore::builder(server.url())
            .prefix(crate::unique("test"))
            .build()
            .await
            .expect("connect to the test's Redis");
        Some(AnyStore::Redis(store, Some(server)))
    }
}

/// The Redis store on a local three-master Redis Cluster of the test's own.
pub struct RedisCluster;

impl StoreFactory for RedisCluster {
    async fn make() -> Option<AnyStore> {
        let cluster = Cluster::for_test()?;
        let store = RedisStore::cluster_builder(cluster.urls())
            .prefix(crate::unique("test"))
            .build()
            .await
            .expect("connect to the test's Redis Cluster");
        Some(AnyStore::Cluster(store, Some(cluster)))
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
            AnyStore::Redis(s, _) => s.claim(id, fingerprint, owner, lease).await,
            AnyStore::Cluster(s, _) => s.claim(id, fingerprint, owner, lease).await,
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
            AnyStore::Redis(s, _) => s.renew(id, owner, lease).await,
            AnyStore::Cluster(s, _) => s.renew(id, owner, lease).await,
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
            AnyStore::Redis(s, _) => s.complete(id, owner, fingerprint, response, ttl).await,
            AnyStore::Cluster(s, _) => s.complete(id, owner, fingerprint, response, ttl).await,
        }
    }

    async fn release(&self, id: &RecordId, owner: OwnerToken) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.release(id, owner).await,
            AnyStore::Redis(s, _) => s.release(id, owner).await,
            AnyStore::Cluster(s, _) => s.release(id, owner).await,
        }
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.get(id).await,
            AnyStore::Redis(s, _) => s.get(id).await,
            AnyStore::Cluster(s, _) => s.get(id).await,
        }
    }

    async fn delete(&self, id: &RecordId) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.delete(id).await,
            AnyStore::Redis(s, _) => s.delete(id).await,
            AnyStore::Cluster(s, _) => s.delete(id).await,
        }
    }

    // Forwarded too, so that the suite's waiters on Redis are woken the way
    // an application's are (published changes), not only by re-reading.
    async fn watch(&self, id: &RecordId, for_: Duration) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.watch(id, for_).await,
            AnyStore::Redis(s, _) => s.watch(id, for_).await,
            AnyStore::Cluster(s, _) => s.watch(id, for_).await,
        }
    }

    fn subscribe(&self, on_change: ChangeListener) {
        match self {
            AnyStore::Memory(s) => s.subscribe(on_change),
            AnyStore::Redis(s, _) => s.subscribe(on_change),
            AnyStore::Cluster(s, _) => s.subscribe(on_change),
        }
    }
}
