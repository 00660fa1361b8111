//! `--lease-secs N`: claims that live `N` s, for demonstrations and the
//! tests of a killed process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::{ChangeListener, Claim, Store, StoreError};
use idempotent_runtime::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

/// `--lease-secs N`: a store whose claims live `N` s instead of the lease
/// the handler asks for (`#[idempotent]`'s `lease`, 30 s by default, fixed
/// at compile time), so that a demonstration or a test of a killed process
/// need not wait 30 s for its key to free up.
///
/// Only the length of a claim changes: the runtime still renews a running
/// handler's claim every third of the handler's own lease (every 10 s),
/// each time for `N` s. With `N` well above 10 (15, say) a handler keeps
/// its claim however long it runs. With less, a handler that runs longer
/// than `N` s can lose its claim to a retry of the same key, and both run:
/// with the memory and Redis stores both make a payment and only one
/// response is stored; with `--store postgres` only one of the two
/// transactions commits, and the other attempt answers 409 `lease-lost`,
/// its payment rolled back. The fencing test (`tests/shared_postgres.rs`)
/// uses exactly that; nothing else should.
pub struct LeaseOverride<S> {
    store: S,
    lease: Duration,
}

impl<S: Store> LeaseOverride<S> {
    /// `store`, its claims living `lease` (at least a second).
    pub fn new(store: S, lease: Duration) -> Self {
        LeaseOverride {
            store,
            lease: lease.max(Duration::from_secs(1)),
        }
    }
}

impl<S: Store> Store for LeaseOverride<S> {
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        _lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        self.store.claim(id, fingerprint, owner, self.lease)
    }

    fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        _lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.renew(id, owner, self.lease)
    }

    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.complete(id, owner, fingerprint, response, ttl)
    }

    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.release(id, owner)
    }

    fn get(
        &self,
        id: &RecordId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        self.store.get(id)
    }

    fn delete(&self, id: &RecordId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.store.delete(id)
    }

    fn watch(
        &self,
        id: &RecordId,
        for_: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store.watch(id, for_)
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store.ping()
    }

    fn subscribe(&self, on_change: ChangeListener) {
        self.store.subscribe(on_change);
    }

    fn is_process_local(&self) -> bool {
        self.store.is_process_local()
    }

    fn as_postgres(&self) -> Option<&PostgresStore> {
        self.store.as_postgres()
    }
}
