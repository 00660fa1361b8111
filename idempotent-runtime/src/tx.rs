//! [`Tx`]: the handler's own Postgres transaction, committed with its
//! idempotency record.
//!
//! With the [`PostgresStore`], a handler that takes `Tx` is claimed **inside
//! that transaction**: the runtime begins it, takes the key's lock in it and
//! reads the key's record (one round trip); the handler writes through it;
//! the runtime inserts the completed record in it and commits (one round
//! trip). There is no claim row and no lease. Stored and committed are one
//! event:
//!
//! | what happens | its writes and the record | what a retry sees |
//! |---|---|---|
//! | the response is stored (per the cache policy) | committed together | the replay |
//! | not stored (cache policy, `no-store`, a retry-inviting answer) | rolled back | a fresh run |
//! | over the storage limit | rolled back; 500 `transaction-not-committed` | a fresh run |
//! | the handler panicked | rolled back | a fresh run |
//! | the process died, or its connection dropped, mid-handler | never committed; **nothing is left behind** | a fresh run, at once |
//! | a duplicate arrives meanwhile | — | 409 (or, with `on_conflict = "wait"`, it waits on the lock and replays) |
//! | another request of the key committed first (their locks did not exclude each other) | rolled back | this request answers with the other's response |
//!
//! `Option<Tx>` is `Some` over the Postgres store and `None` over any other,
//! so that one handler serves every store. A function (`#[idempotent(key =
//! …)]`) takes `Tx` the same way; its callers do not pass it.
//!
//! `Tx` gives no way to commit or roll back: the runtime resolves it after
//! the handler returns. (It is an executor, so SQL text such as `COMMIT` or
//! `ROLLBACK` sent through it would still reach the server and end the
//! transaction early, outside the guarantee; use `SAVEPOINT` statements for
//! partial rollbacks, not sqlx's nested `begin`, which does not know the
//! transaction is open.)
//!
//! Under a middleware (`IdempotentRoutesLayer`, `IdempotentRoutes`) whose
//! [`HandlerConfig`](crate::HandlerConfig) is not marked
//! [`transactional`](crate::HandlerConfig::transactional), a handler's `Tx`
//! takes the lease path: the claim is a row committed on its own, the
//! transaction begins on the handler's first statement, and the record is
//! written in it fenced by the claim's owner token (a handler that outlived
//! its lease while another took the key over rolls back with 409
//! `lease-lost`; a process that died leaves a claim that expires after its
//! lease).
//!
//! A request without a key (`required = false`) runs without idempotency;
//! its transaction commits if the handler answers below 400 and rolls back
//! otherwise.
//!
//! ```no_run
//! use axum::{http::StatusCode, Json};
//! use idempotent_runtime::axum::idempotent;
//! use idempotent_runtime::tx::Tx;
//! # #[derive(serde::Deserialize)] struct NewPayment { amount: i64 }
//!
//! #[idempotent(scope = "payments")]
//! async fn create_payment(mut tx: Tx, Json(p): Json<NewPayment>) -> Result<StatusCode, StatusCode> {
//!     sqlx::query("INSERT INTO payments (amount) VALUES ($1)")
//!         .bind(p.amount)
//!         .execute(&mut tx)
//!         .await
//!         .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
//!     Ok(StatusCode::CREATED)
//! }
//! ```
//!
//! [`PostgresStore`]: crate::store::postgres::PostgresStore

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{ready, BoxFuture};
use futures_util::stream::{self, BoxStream, StreamExt};
use sqlx::postgres::{PgConnection, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, Postgres};

use crate::lifecycle::{Completion, OpenTx, TxCell};
use crate::problem::Problem;
use crate::store::postgres::{Commit, Held, PostgresStore};
use crate::store::StoreError;
use crate::{Fingerprint, Idempotency, OwnerToken, RecordId, StoredResponse};

/// The handler's own transaction on the [`PostgresStore`]'s database; use
/// `&mut tx` wherever a [`sqlx::Executor`] goes (see the [module](self)).
///
/// [`PostgresStore`]: crate::store::postgres::PostgresStore
pub struct Tx {
    cell: Arc<TxCell>,
    store: PostgresStore,
    txn: Option<Box<dyn OpenTx>>,
}

impl Tx {
    /// The request's `Tx`: its cell in `extensions` (put there by the
    /// adapter, or here when the extractor runs first). Fails when the
    /// installed store is not a Postgres store.
    pub(crate) fn new(
        idempotency: &Idempotency,
        cell: impl FnOnce() -> Arc<TxCell>,
    ) -> Result<Tx, Problem> {
        let store = idempotency
            .postgres()
            .ok_or_else(Problem::no_transactional_store)?
            .clone();
        Ok(Tx {
            cell: cell(),
            store,
            txn: None,
        })
    }

    /// The transaction's connection; the transaction begins on first use.
    ///
    /// Fails when the handler is not run by the idempotent life cycle (a
    /// `Tx` in a handler without `#[idempotent]` and outside the middleware):
    /// nothing would commit it.
    pub async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let txn = match self.txn.take() {
            Some(txn) => txn,
            // The claim itself, begun by the life cycle for a handler that
            // takes `Tx`; else (a middleware without `transactional`, a
            // request without a key) one begun now.
            None => match self.cell.take_begun() {
                Some(txn) => txn,
                None => Box::new(PgTx {
                    txn: Tx::begin(self.cell.clone(), self.store.clone()).await?,
                    store: self.store.clone(),
                }),
            },
        };
        Ok(self.txn.insert(txn).connection())
    }

    /// Begins a transaction (not borrowing the `Tx`, whose open transaction
    /// is not `Sync`, across the wait).
    async fn begin(
        cell: Arc<TxCell>,
        store: PostgresStore,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        if !cell.begin_live() {
            return Err(sqlx::Error::Configuration(
                "`Tx` is usable only in handlers run by the idempotent life cycle (`#[idempotent]` or its middleware); nothing else would commit it".into(),
            ));
        }
        let began = tokio::time::timeout(store.statement_timeout(), store.pool().begin())
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        if began.is_err() {
            cell.adopt();
        }
        began
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            self.cell.hand_back(txn);
        }
    }
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("in_use", &self.txn.is_some())
            .finish_non_exhaustive()
    }
}

impl<'c> Executor<'c> for &'c mut Tx {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        stream::once(async move { self.connection().await.map(|c| c.fetch_many(query)) })
            .map(|rows| rows.unwrap_or_else(|e| stream::once(ready(Err(e))).boxed()))
            .flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move { self.connection().await?.fetch_optional(query).await })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move { self.connection().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move { self.connection().await?.describe(sql).await })
    }
}

/// A transaction handed back by a finished handler.
struct PgTx {
    txn: sqlx::Transaction<'static, Postgres>,
    store: PostgresStore,
}

impl OpenTx for PgTx {
    fn commit_with(
        self: Box<Self>,
        id: RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> crate::lifecycle::BoxFuture<Result<Completion, StoreError>> {
        Box::pin(async move {
            let PgTx { mut txn, store } = *self;
            let written = store
                .complete_on(&mut txn, &id, owner, fingerprint, response, ttl)
                .await;
            let tx = PgTx { txn, store };
            match written {
                Ok(true) => {
                    let PgTx { txn, store } = tx;
                    let commit = PgTx::bounded_with(&store, txn.commit());
                    commit.await.map(|()| Completion::Written)
                }
                Ok(false) => {
                    tx.rollback_now().await;
                    Ok(Completion::Lost(None))
                }
                Err(e) => {
                    tx.rollback_now().await;
                    Err(e)
                }
            }
        })
    }

    fn commit(self: Box<Self>) -> crate::lifecycle::BoxFuture<Result<(), StoreError>> {
        Box::pin(async move {
            let PgTx { txn, store } = *self;
            PgTx::bounded_with(&store, txn.commit()).await
        })
    }

    fn rollback(self: Box<Self>) -> crate::lifecycle::BoxFuture<()> {
        Box::pin(async move { self.rollback_now().await })
    }

    fn connection(&mut self) -> &mut PgConnection {
        &mut self.txn
    }
}

/// The claim itself: the transaction the life cycle began holding the key's
/// lock, in which the record is inserted and committed.
impl OpenTx for Held {
    fn commit_with(
        self: Box<Self>,
        id: RecordId,
        _owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> crate::lifecycle::BoxFuture<Result<Completion, StoreError>> {
        Box::pin(async move {
            match self
                .commit_with_record(&id, fingerprint, response, ttl)
                .await?
            {
                Commit::Written => Ok(Completion::Written),
                Commit::Lost(record) => Ok(Completion::Lost(record)),
            }
        })
    }

    fn commit(self: Box<Self>) -> crate::lifecycle::BoxFuture<Result<(), StoreError>> {
        // Never without a record: a request without a key is not claimed.
        Box::pin(async move {
            self.rollback().await;
            Err(StoreError::Unavailable(
                "a claimed transaction commits only with its record".into(),
            ))
        })
    }

    fn rollback(self: Box<Self>) -> crate::lifecycle::BoxFuture<()> {
        Box::pin(async move { Held::rollback(*self).await })
    }

    fn connection(&mut self) -> &mut PgConnection {
        Held::connection(self)
    }
}

impl PgTx {
    fn bounded_with<T>(
        store: &PostgresStore,
        what: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> {
        let timeout = store.statement_timeout();
        async move {
            match tokio::time::timeout(timeout, what).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                Err(_) => Err(StoreError::Timeout),
            }
        }
    }

    /// Rolls back; a failure leaves the same outcome (the server rolls back
    /// a transaction whose connection is gone).
    async fn rollback_now(self) {
        let PgTx { txn, store } = self;
        if let Err(e) = PgTx::bounded_with(&store, txn.rollback()).await {
            tracing::warn!(target: "idempotent", error = %e, "rolling back the handler's transaction failed; the database rolls it back when the connection closes");
        }
    }
}
