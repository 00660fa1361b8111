//! A store taken out of reach for a while, the real way for each backend:
//! its Redis server killed, its PostgreSQL cluster stopped as a crash would,
//! the memory store filled to its bound (the one way it refuses).

use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::Store;
use idempotent_runtime::{Fingerprint, IdempotencyKey, OwnerToken, RecordId};

use crate::postgres_server::PostgresServer;
use crate::redis_server::RedisServer;
use crate::AnyStore;

/// A store that can be taken down and brought back.
pub struct Outage {
    store: AnyStore,
    how: How,
}

enum How {
    /// A store of one record; a claim held fills it.
    Full(MemoryStore, RecordId, OwnerToken),
    Redis(Arc<RedisServer>),
    Postgres(Arc<PostgresServer>),
}

impl Outage {
    /// An outage of a store like `like`: the same kind, on a server of its
    /// own where it has one. `None` when there is no way (a cluster, or
    /// `DATABASE_URL` without a local PostgreSQL).
    pub async fn of(like: &AnyStore) -> Option<Outage> {
        match like {
            AnyStore::Memory(_) => {
                let store = MemoryStore::builder().max_entries(1).build();
                let key = IdempotencyKey::parse(b"filler").ok()?;
                let id = RecordId::new("outage", None, &key);
                Some(Outage {
                    store: AnyStore::Memory(store.clone()),
                    how: How::Full(store, id, OwnerToken::generate()),
                })
            }
            AnyStore::Redis(_, Some(server)) => Some(Outage {
                store: like.clone(),
                how: How::Redis(server.clone()),
            }),
            AnyStore::Postgres(..) => {
                let server = PostgresServer::for_test()?;
                let store = crate::stores::postgres_store(&server, |b| b).await;
                Some(Outage {
                    store: AnyStore::postgres(store, server.clone()),
                    how: How::Postgres(server),
                })
            }
            _ => None,
        }
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Takes it out of reach.
    pub async fn begin(&self) {
        match &self.how {
            How::Full(store, id, owner) => {
                let fp = Fingerprint::of_bytes(b"");
                let _ = store.claim(id, fp, *owner, Duration::from_secs(60)).await;
            }
            How::Redis(server) => server.stop(),
            How::Postgres(server) => server.stop(),
        }
    }

    /// Brings it back.
    pub async fn end(&self) {
        match &self.how {
            How::Full(store, id, owner) => {
                let _ = store.release(id, *owner).await;
            }
            How::Redis(server) => server.restart(),
            How::Postgres(server) => server.start_again(),
        }
    }
}
