//! The stores the suites run against, behind one type.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::store::{ChangeListener, Claim, Store, StoreError};
use idempotent_runtime::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

use crate::postgres_server::PostgresServer;
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
    /// The PostgreSQL store on a table of the test's own, and the guard
    /// that closes it when the test ends.
    Postgres(PostgresStore, Option<Arc<PostgresGuard>>),
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
            AnyStore::Postgres(s, _) => AnyStore::Postgres(s.clone(), None),
        }
    }

    /// The Redis server behind this store, if it is a Redis store with one.
    pub fn redis_server(&self) -> Option<&Arc<RedisServer>> {
        match self {
            AnyStore::Redis(_, server) => server.as_ref(),
            AnyStore::Memory(_) | AnyStore::Cluster(..) | AnyStore::Postgres(..) => None,
        }
    }

    /// A PostgreSQL store on `server`, closed when the test ends.
    pub fn postgres(store: PostgresStore, server: Arc<PostgresServer>) -> AnyStore {
        let guard = PostgresGuard {
            server,
            store: store.clone(),
        };
        AnyStore::Postgres(store, Some(Arc::new(guard)))
    }

    /// The PostgreSQL server behind this store, if it is a PostgreSQL store
    /// with one.
    pub fn postgres_server(&self) -> Option<&Arc<PostgresServer>> {
        match self {
            AnyStore::Postgres(_, guard) => guard.as_ref().map(|g| &g.server),
            AnyStore::Memory(_) | AnyStore::Redis(..) | AnyStore::Cluster(..) => None,
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

/// The PostgreSQL store on a table of the test's own (so that tests never
/// see each other's rows), on the database shared by this process's tests.
pub struct Postgres;

impl StoreFactory for Postgres {
    async fn make() -> Option<AnyStore> {
        let server = PostgresServer::shared()?;
        let store = postgres_store(&server, |b| b).await;
        Some(AnyStore::postgres(store, server))
    }
}

/// Keeps a test's PostgreSQL server (a shared one, or the test's own) and
/// closes the test's store when the test ends: a test server that is never
/// shut down (actix's) must not keep its connections and its listener
/// open for the rest of the process, or the suite runs out of connections.
#[derive(Debug)]
pub struct PostgresGuard {
    server: Arc<PostgresServer>,
    store: PostgresStore,
}

impl Drop for PostgresGuard {
    fn drop(&mut self) {
        // Takes effect at once; the connections close in the background.
        drop(self.store.close());
    }
}

/// A PostgreSQL store on `server`, on a new table of its own (migrated),
/// configured further by `configure`.
pub async fn postgres_store(
    server: &PostgresServer,
    configure: impl FnOnce(
        idempotent_runtime::store::postgres::PostgresStoreBuilder,
    ) -> idempotent_runtime::store::postgres::PostgresStoreBuilder,
) -> PostgresStore {
    let store = configure(PostgresStore::builder(server.url()).table(postgres_table()))
        .build()
        .await
        .expect("connect to the test's PostgreSQL");
    store.migrate().await.expect("create the test's table");
    store
}

/// A table name of the test's own.
pub fn postgres_table() -> String {
    crate::unique("idem").replace('-', "_")
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
            AnyStore::Postgres(s, _) => s.claim(id, fingerprint, owner, lease).await,
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
            AnyStore::Postgres(s, _) => s.renew(id, owner, lease).await,
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
            AnyStore::Postgres(s, _) => s.complete(id, owner, fingerprint, response, ttl).await,
        }
    }

    async fn release(&self, id: &RecordId, owner: OwnerToken) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.release(id, owner).await,
            AnyStore::Redis(s, _) => s.release(id, owner).await,
            AnyStore::Cluster(s, _) => s.release(id, owner).await,
            AnyStore::Postgres(s, _) => s.release(id, owner).await,
        }
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.get(id).await,
            AnyStore::Redis(s, _) => s.get(id).await,
            AnyStore::Cluster(s, _) => s.get(id).await,
            AnyStore::Postgres(s, _) => s.get(id).await,
        }
    }

    async fn delete(&self, id: &RecordId) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.delete(id).await,
            AnyStore::Redis(s, _) => s.delete(id).await,
            AnyStore::Cluster(s, _) => s.delete(id).await,
            AnyStore::Postgres(s, _) => s.delete(id).await,
        }
    }

    // Forwarded too, so that the suite's waiters on Redis are woken the way
    // an application's are (published changes), not only by re-reading.
    async fn watch(&self, id: &RecordId, for_: Duration) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.watch(id, for_).await,
            AnyStore::Redis(s, _) => s.watch(id, for_).await,
            AnyStore::Cluster(s, _) => s.watch(id, for_).await,
            AnyStore::Postgres(s, _) => s.watch(id, for_).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.ping().await,
            AnyStore::Redis(s, _) => s.ping().await,
            AnyStore::Cluster(s, _) => s.ping().await,
            AnyStore::Postgres(s, _) => s.ping().await,
        }
    }

    fn subscribe(&self, on_change: ChangeListener) {
        match self {
            AnyStore::Memory(s) => s.subscribe(on_change),
            AnyStore::Redis(s, _) => s.subscribe(on_change),
            AnyStore::Cluster(s, _) => s.subscribe(on_change),
            AnyStore::Postgres(s, _) => s.subscribe(on_change),
        }
    }

    fn as_postgres(&self) -> Option<&PostgresStore> {
        match self {
            AnyStore::Postgres(s, _) => Some(s),
            _ => None,
        }
    }

    fn is_process_local(&self) -> bool {
        matches!(self, AnyStore::Memory(_))
    }
}
