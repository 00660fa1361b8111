//! Where records live: the [`Store`] contract and its backends.
//!
//! Every backend implements the same five operations, and one shared contract
//! suite (`tests/tests/store_contract.rs`) runs against each of them:
//!
//! | operation | what it does |
//! |---|---|
//! | [`claim`](Store::claim) | atomically: create an in-progress record owned by the caller, or return the record that exists |
//! | [`renew`](Store::renew) | extend the lease of a claim, only for its owner |
//! | [`complete`](Store::complete) | replace the claim by the response, only for its owner or where no record is left (fencing) |
//! | [`release`](Store::release) | delete the claim, only for its owner, so a retry may run again |
//! | [`get`](Store::get) / [`delete`](Store::delete) | read or remove any record (operators, support cases) |
//! | [`ping`](Store::ping) | answer whether the backend is reachable (readiness probes, [`Idempotency::ready`](crate::Idempotency::ready)) |

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::record::DecodeError;
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

#[cfg(any(feature = "memory", feature = "redis"))]
mod digest_hash;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

/// The answer to [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No live record existed; the caller now owns an in-progress record.
    Acquired,
    /// A live record exists (in progress or completed); nothing was changed.
    Existing(Record),
}

/// A store operation failed. The life cycle answers these with 503 (or 500 for
/// an unreadable record) and never runs the handler: it fails closed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or answered with an error.
    Unavailable(String),
    /// The backend did not answer in time.
    Timeout,
    /// The store is at its configured bound and cannot take a new claim.
    Full,
    /// A stored record could not be decoded.
    Corrupt(DecodeError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "idempotency store unavailable: {why}"),
            StoreError::Timeout => f.write_str("idempotency store timed out"),
            StoreError::Full => f.write_str("idempotency store is full"),
            StoreError::Corrupt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {}

/// A backend that keeps idempotency records.
///
/// Implementations must make [`claim`](Store::claim) atomic per [`RecordId`]
/// (two concurrent claims: exactly one gets [`Claim::Acquired`]) and must compare
/// the owner inside the same atomic step as the write in
/// [`renew`](Store::renew), [`complete`](Store::complete) and
/// [`release`](Store::release). Records expire by themselves: an in-progress one
/// when its lease runs out, a completed one after its TTL.
pub trait Store: Send + Sync + 'static {
    /// Creates an in-progress record owned by `owner` that lives for `lease`,
    /// unless a live record exists, which is returned instead.
    #[must_use]
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Extends `owner`'s claim to live `lease` from now. `Ok(false)`: the claim is
    /// no longer `owner`'s (expired, taken over or completed).
    #[must_use]
    fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces `owner`'s claim with the completed response (of a request with
    /// this fingerprint), kept for `ttl`. Also writes when there is no record
    /// at all: the lease ran out and nobody took over, and the response of a
    /// handler that did run is better kept. `Ok(false)`: another owner's claim
    /// or a completed record is there, and nothing was written (fencing).
    #[must_use]
    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes `owner`'s claim. `Ok(false)`: it was not `owner`'s.
    #[must_use]
    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Reads the live record, if any.
    #[must_use]
    fn get(&self, id: &RecordId)
        -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Deletes the record whatever its state. `Ok(false)`: there was none.
    #[must_use]
    fn delete(&self, id: &RecordId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Called before a duplicate waits for `id` (`on_conflict = "wait"`): a
    /// store shared between processes makes sure that, for at least `for_`,
    /// the completion, release or deletion of `id` by any process reaches
    /// the listeners given to [`subscribe`](Store::subscribe). Stores publish
    /// only for records someone watches, so that requests nobody waits for
    /// cost nothing extra. The default does nothing.
    fn watch(
        &self,
        id: &RecordId,
        for_: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (id, for_);
        std::future::ready(Ok(()))
    }

    /// Whether the backend answers: a round trip as cheap as the backend
    /// offers (Redis `PING`, PostgreSQL `SELECT 1`), for readiness probes
    /// ([`Idempotency::ready`](crate::Idempotency::ready), which bounds it
    /// in time). A store wrapping another forwards this. The default: ready
    /// (a store in this process, such as the memory store, always is).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Called once by [`Idempotency`](crate::Idempotency) when it is built:
    /// a store shared between processes calls `on_change` with a record's
    /// digest ([`RecordId::digest`]) when another process completes or
    /// releases it, so that duplicates waiting here wake at once. The default
    /// does nothing (waiters then re-read periodically).
    fn subscribe(&self, on_change: ChangeListener) {
        let _ = on_change;
    }

    /// Whether its records live in this process only (the memory store), so
    /// that several instances of a service do not see each other's keys. A
    /// store wrapping another forwards this. The default: shared.
    fn is_process_local(&self) -> bool {
        false
    }

    /// The Postgres store this is, or wraps: handlers taking
    /// [`Tx`](crate::tx::Tx) write through its database. A store that wraps
    /// another forwards this. The default: none.
    #[cfg(feature = "postgres")]
    fn as_postgres(&self) -> Option<&postgres::PostgresStore> {
        None
    }
}

/// What [`Store::subscribe`] calls with a changed record's digest.
pub type ChangeListener = Arc<dyn Fn(&[u8; 32]) + Send + Sync>;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The object-safe twin of [`Store`], so that one handle can hold any backend.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn claim<'a>(
        &'a self,
        id: &'a RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> BoxFut<'a, Claim>;
    fn renew<'a>(
        &'a self,
        id: &'a RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> BoxFut<'a, bool>;
    fn complete<'a>(
        &'a self,
        id: &'a RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> BoxFut<'a, bool>;
    fn release<'a>(&'a self, id: &'a RecordId, owner: OwnerToken) -> BoxFut<'a, bool>;
    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFut<'a, Option<Record>>;
    fn delete<'a>(&'a self, id: &'a RecordId) -> BoxFut<'a, bool>;
    fn watch<'a>(&'a self, id: &'a RecordId, for_: Duration) -> BoxFut<'a, ()>;
    fn ping(&self) -> BoxFut<'_, ()>;
    fn subscribe(&self, on_change: ChangeListener);
    fn is_process_local(&self) -> bool;
    #[cfg(feature = "postgres")]
    fn as_postgres(&self) -> Option<&postgres::PostgresStore>;
}

/// Boxes a store operation, timed in `idempotent_store_duration_seconds`
/// with the `metrics` feature.
#[cfg(feature = "metrics")]
fn timed<'a, T: 'a>(
    operation: &'static str,
    op: impl Future<Output = Result<T, StoreError>> + Send + 'a,
) -> BoxFut<'a, T> {
    Box::pin(async move {
        let started = std::time::Instant::now();
        let answer = op.await;
        crate::metrics::store(operation, started.elapsed());
        answer
    })
}

/// Boxes a store operation (untimed without the `metrics` feature).
#[cfg(not(feature = "metrics"))]
fn timed<'a, T: 'a>(
    _operation: &'static str,
    op: impl Future<Output = Result<T, StoreError>> + Send + 'a,
) -> BoxFut<'a, T> {
    Box::pin(op)
}

impl<S: Store> DynStore for S {
    fn claim<'a>(
        &'a self,
        id: &'a RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> BoxFut<'a, Claim> {
        timed("claim", Store::claim(self, id, fingerprint, owner, lease))
    }
    fn renew<'a>(
        &'a self,
        id: &'a RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> BoxFut<'a, bool> {
        timed("renew", Store::renew(self, id, owner, lease))
    }
    fn complete<'a>(
        &'a self,
        id: &'a RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> BoxFut<'a, bool> {
        timed(
            "complete",
            Store::complete(self, id, owner, fingerprint, response, ttl),
        )
    }
    fn release<'a>(&'a self, id: &'a RecordId, owner: OwnerToken) -> BoxFut<'a, bool> {
        timed("release", Store::release(self, id, owner))
    }
    fn get<'a>(&'a self, id: &'a RecordId) -> BoxFut<'a, Option<Record>> {
        timed("get", Store::get(self, id))
    }
    fn delete<'a>(&'a self, id: &'a RecordId) -> BoxFut<'a, bool> {
        timed("delete", Store::delete(self, id))
    }
    fn watch<'a>(&'a self, id: &'a RecordId, for_: Duration) -> BoxFut<'a, ()> {
        timed("watch", Store::watch(self, id, for_))
    }
    fn ping(&self) -> BoxFut<'_, ()> {
        timed("ping", Store::ping(self))
    }
    fn subscribe(&self, on_change: ChangeListener) {
        Store::subscribe(self, on_change);
    }
    fn is_process_local(&self) -> bool {
        Store::is_process_local(self)
    }
    #[cfg(feature = "postgres")]
    fn as_postgres(&self) -> Option<&postgres::PostgresStore> {
        Store::as_postgres(self)
    }
}
