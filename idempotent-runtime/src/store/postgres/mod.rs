//! The PostgreSQL store: records in one table, shared by every process that
//! uses the same database.
//!
//! One row per identity, keyed by (scope, SHA-256 of principal and key) —
//! the digest alone does not cover the scope — holding the record's binary
//! encoding ([`Record::encode`]), its owner while in progress, and when it
//! expires by the database's clock (`now()`), so that processes whose
//! clocks differ agree. Every operation is one statement, and the ones that
//! must compare the owner do so in the same statement as the write
//! (`… WHERE owner = $3`), which PostgreSQL runs atomically per row:
//!
//! | operation | statement |
//! |---|---|
//! | claim | `INSERT … ON CONFLICT DO UPDATE … WHERE` the row expired (skipped, taking no lock, when a live row is visible), and the live row read back in the same statement (again, with a new snapshot, when a competing claim committed after this statement's snapshot) |
//! | renew | `UPDATE … WHERE owner = $3 AND expires_at > now()` |
//! | complete | `INSERT … ON CONFLICT DO UPDATE … WHERE owner = $3 OR` the row expired |
//! | release / delete | the row made expired, `WHERE owner = $3` for release |
//! | get | the row, if live |
//!
//! Expired rows count as absent everywhere; a sweeper on the runtime
//! crate's background thread deletes them in batches. The SQL, with why
//! each statement is written as it is, is in `sql.rs`; the table in
//! `migrations/postgres/0001_idempotency_records.sql` ([`PostgresStore::migrate`]
//! runs that file).
//!
//! Module map: `builder` (configuration, the pool), `sql` (table name,
//! migration, statements), `conn` (taking connections, timeouts, what an
//! error means), `tasks` (sweeper, listener), `held` (the claim that is the
//! handler's own transaction), `seen` (which replays are read first), this
//! file (the operations).
//!
//! What is guaranteed, and what is not:
//! - Exactly one execution per identity while the database keeps the
//!   record and the handler keeps its lease, across every process sharing
//!   the table. Commits are durable as the database is configured
//!   (`synchronous_commit`); a failover to a replica that had not received
//!   a claim forgets it, and a retry of that key runs again.
//! - The database unreachable, slow or out of connections: the operation
//!   fails within the acquire timeout plus the statement timeout, the
//!   request gets 503, the handler does not run. Serialization failures,
//!   deadlocks and lock timeouts are 503s too, never 500s. Once the
//!   database is back the pool reconnects by itself.
//! - Waiting duplicates (`on_conflict = "wait"`) are woken through
//!   `LISTEN`/`NOTIFY` on the channel `<table>_changed`, sent only for
//!   records someone watches (see [`Store::watch`]); a notification lost
//!   while the listener reconnects costs a waiter at most its re-read
//!   interval.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};

use super::{ChangeListener, Claim, Store, StoreError};
use crate::record::DecodeError;
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

mod builder;
mod conn;
mod held;
mod seen;
mod sql;
mod tasks;
#[cfg(test)]
mod tests;

pub use builder::{
    PostgresStoreBuilder, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_STATEMENT_TIMEOUT, DEFAULT_SWEEP_INTERVAL, DEFAULT_TABLE,
};
use conn::{bounded, Retry};
pub(crate) use held::{Commit, Held, TxClaim};
use sql::{millis, Statements, TableName};

/// Runs statements on a connection of `$store`'s pool, bounded by its
/// timeouts (see `conn::run!`).
macro_rules! run {
    ($store:expr, $retry:expr, |$c:ident| $body:expr) => {{
        let inner = &$store.inner;
        conn::run!(
            &inner.pool,
            inner.acquire_timeout,
            inner.statement_timeout,
            $retry,
            |$c| $body
        )
    }};
}

/// A store in PostgreSQL, shared by every process that uses the same table.
///
/// ```no_run
/// use idempotent_runtime::store::postgres::PostgresStore;
/// use idempotent_runtime::Idempotency;
///
/// # async fn start() -> Result<(), idempotent_runtime::store::StoreError> {
/// let store = PostgresStore::builder("postgres://app@db.internal/app").build().await?;
/// store.migrate().await?; // CREATE TABLE IF NOT EXISTS …
/// let idempotency = Idempotency::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    table: TableName,
    sql: Statements,
    /// `<table>_changed`.
    channel: String,
    statement_timeout: Duration,
    acquire_timeout: Duration,
    /// Who to tell when a watched record changes; the listener starts with
    /// the first one, once per store.
    listeners: Arc<Mutex<Vec<ChangeListener>>>,
    subscribed: AtomicBool,
    /// Whether the store made its pool (from a URL), so closes it.
    owns_pool: bool,
    /// Set by [`PostgresStore::close`]: the background work stops.
    closed: AtomicBool,
    /// The advisory lock of a record id (`held::lock_id`, or a test's).
    lock_id: fn(&RecordId) -> i64,
    /// The lock ids this process holds or waits for.
    local: held::Local,
    /// The lock ids of records this process committed or replayed lately.
    seen: seen::Seen,
    /// Transactions the in-transaction claim began (tests count them).
    #[cfg(test)]
    begun: std::sync::atomic::AtomicU64,
}

impl PostgresStore {
    /// A builder for the database at `url` (`postgres://user:password@host/db`).
    /// The store makes and owns its pool.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::from_url(url.into())
    }

    /// A builder over an existing pool (the application's own, say). The
    /// store takes connections from it like any other user; see
    /// [`PostgresStoreBuilder::statement_timeout`] for the server-side bound.
    pub fn pool_builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder::from_pool(pool)
    }

    /// Creates the table and its expiry index if they do not exist: the
    /// statements of `migrations/postgres/0001_idempotency_records.sql`
    /// (compiled in), for the configured table. Safe to run at every start
    /// and from several processes at once (they take turns on an advisory
    /// lock). Bounded by 30 s rather than the statement timeout: DDL waits
    /// for writes in progress on the table.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30);
        let sql = sql::migration(&self.inner.table, MIGRATE_TIMEOUT.as_millis() as u64);
        // Several statements, no parameters: one simple query, one implicit
        // transaction.
        let inner = &self.inner;
        conn::run!(
            &inner.pool,
            inner.acquire_timeout,
            MIGRATE_TIMEOUT,
            Retry::OnBroken,
            |c| sqlx::Executor::execute(c, sql.as_str())
        )
        .map(drop)
    }

    /// Deletes expired records now (the background sweeper does the same
    /// every few seconds), in batches of 1000; returns how many. Records are
    /// ignored once expired whether swept or not.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for _ in 0..tasks::SWEEP_MAX_BATCHES {
            let n = run!(self, Retry::OnBroken, |c| sqlx::query(
                &self.inner.sql.sweep
            )
            .bind(tasks::SWEEP_BATCH)
            .execute(c))?
            .rows_affected();
            deleted += n;
            if n < tasks::SWEEP_BATCH as u64 {
                break;
            }
        }
        Ok(deleted)
    }

    /// Stops the store's background work (sweeper, wake-up listener) and
    /// closes the pool if the store made it (from a URL): operations then
    /// fail with [`StoreError::Unavailable`]. A pool given to
    /// [`pool_builder`](Self::pool_builder) is the application's and stays
    /// open. Takes effect at once; the returned future, which need not be
    /// awaited, ends once the pool's connections are closed.
    pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
        use std::sync::atomic::Ordering;
        self.inner.closed.store(true, Ordering::Release);
        let pool = self.inner.owns_pool.then(|| self.inner.pool.clone());
        // Closing waits for connections in use; on the background thread,
        // so that it completes whether or not the caller awaits it.
        let closing = crate::background::background().spawn(async move {
            if let Some(pool) = pool {
                pool.close().await;
            }
        });
        async move {
            let _ = closing.await;
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The table, as configured (`[schema.]table`).
    pub fn table(&self) -> String {
        self.inner.table.to_string()
    }

    /// The channel on which changes of watched records are notified:
    /// `<table>_changed`, with the record's digest in lowercase hex as the
    /// payload.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The store's pool, for work that must share the store's database —
    /// the transactional completion, which commits the record in the
    /// handler's own transaction. Connections of a pool the store made from
    /// a URL run with `statement_timeout` set to
    /// [`statement_timeout`](Self::statement_timeout); a transaction that
    /// needs longer statements sets `SET LOCAL statement_timeout`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The bound of every statement of the store.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn statement_timeout(&self) -> Duration {
        self.inner.statement_timeout
    }

    /// [`Store::complete`]'s statement, fenced the same way, on `conn` —
    /// a transaction's connection, so that the record commits (and a waiting
    /// duplicate is notified) with the handler's own writes, or not at all.
    /// Bounded client-side by the statement timeout; never retried.
    ///
    /// Inside a transaction the database's `now()` is the transaction's
    /// start: the TTL counts from there, and a lease that runs out during
    /// the transaction still counts as running. The latter only ever
    /// refuses a write that another owner's claim would refuse anyway: an
    /// owner's own claim is overwritten whatever its expiry.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn complete_on(
        &self,
        conn: &mut PgConnection,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let record = Record::Completed {
            fingerprint,
            response,
        }
        .encode();
        let statement = self.complete_statement(conn, id, owner, &record, ttl);
        Ok(bounded(self.inner.statement_timeout, statement).await?)
    }

    /// The completion statement (see `sql.rs`): `Ok(true)` when written.
    async fn complete_statement(
        &self,
        conn: &mut PgConnection,
        id: &RecordId,
        owner: OwnerToken,
        record: &[u8],
        ttl: Duration,
    ) -> Result<bool, sqlx::Error> {
        let written: i64 = sqlx::query(&self.inner.sql.complete)
            .bind(id.scope())
            .bind(&id.digest()[..])
            .bind(&owner.to_bytes()[..])
            .bind(record)
            .bind(millis(ttl))
            .bind(&self.inner.channel)
            .bind(id.digest_hex())
            .fetch_one(conn)
            .await?
            .try_get("written")?;
        Ok(written == 1)
    }
}

/// A column that does not read as expected: the table is not the store's.
fn unexpected(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("unexpected row in the idempotency table: {e}"))
}

/// A count column of a statement's one row.
fn count(row: &sqlx::postgres::PgRow, column: &str) -> Result<i64, StoreError> {
    row.try_get(column).map_err(unexpected)
}

/// A live row's record, decoded.
fn decode(bytes: Option<Vec<u8>>) -> Result<Record, StoreError> {
    let bytes = bytes.ok_or(StoreError::Corrupt(DecodeError("a live row has no record")))?;
    Record::decode(&bytes).map_err(StoreError::Corrupt)
}

/// How many times a claim is tried when a competing claim committed after
/// the statement's snapshot (see `sql.rs`); more than twice in a row means
/// the record keeps changing under it.
const CLAIM_ATTEMPTS: usize = 3;

impl Store for PostgresStore {
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        let record = Record::InProgress { fingerprint, owner }.encode();
        async move {
            let answer: Option<(bool, Option<Vec<u8>>)> = run!(self, Retry::OnBroken, |c| async {
                for _ in 0..CLAIM_ATTEMPTS {
                    let row = sqlx::query(&self.inner.sql.claim)
                        .bind(id.scope())
                        .bind(&id.digest()[..])
                        .bind(&owner.to_bytes()[..])
                        .bind(&record[..])
                        .bind(millis(lease))
                        .fetch_optional(&mut *c)
                        .await?;
                    if let Some(row) = row {
                        let acquired: bool = row.try_get("acquired")?;
                        let record: Option<Vec<u8>> = row.try_get("record")?;
                        return Ok(Some((acquired, record)));
                    }
                }
                Ok(None)
            })?;
            match answer {
                Some((true, _)) => Ok(Claim::Acquired),
                Some((false, bytes)) => Ok(Claim::Existing(decode(bytes)?)),
                None => Err(StoreError::Unavailable(
                    "the record kept changing during the claim".into(),
                )),
            }
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let done = run!(self, Retry::OnBroken, |c| sqlx::query(
            &self.inner.sql.renew
        )
        .bind(id.scope())
        .bind(&id.digest()[..])
        .bind(&owner.to_bytes()[..])
        .bind(millis(lease))
        .execute(c))?;
        Ok(done.rows_affected() == 1)
    }

    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let record = Record::Completed {
            fingerprint,
            response,
        }
        .encode();
        async move {
            run!(self, Retry::Never, |c| self
                .complete_statement(c, id, owner, &record, ttl))
        }
    }

    async fn release(&self, id: &RecordId, owner: OwnerToken) -> Result<bool, StoreError> {
        let row = run!(self, Retry::Never, |c| sqlx::query(&self.inner.sql.release)
            .bind(id.scope())
            .bind(&id.digest()[..])
            .bind(&owner.to_bytes()[..])
            .bind(&self.inner.channel)
            .bind(id.digest_hex())
            .fetch_one(c))?;
        Ok(count(&row, "released")? == 1)
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let row = run!(self, Retry::OnBroken, |c| sqlx::query(&self.inner.sql.get)
            .bind(id.scope())
            .bind(&id.digest()[..])
            .fetch_optional(c))?;
        row.map(|r| decode(r.try_get("record").map_err(unexpected)?))
            .transpose()
    }

    async fn delete(&self, id: &RecordId) -> Result<bool, StoreError> {
        let row = run!(self, Retry::Never, |c| sqlx::query(&self.inner.sql.delete)
            .bind(id.scope())
            .bind(&id.digest()[..])
            .bind(&self.inner.channel)
            .bind(id.digest_hex())
            .fetch_one(c))?;
        Ok(count(&row, "deleted")? == 1)
    }

    /// Marks the row watched for at least `for_` (never shortening another
    /// waiter's mark; creating an expired row that only carries the mark if
    /// there is no row): from now on its completion, release or deletion is
    /// notified.
    async fn watch(&self, id: &RecordId, for_: Duration) -> Result<(), StoreError> {
        run!(self, Retry::OnBroken, |c| sqlx::query(
            &self.inner.sql.watch
        )
        .bind(id.scope())
        .bind(&id.digest()[..])
        .bind(millis(for_))
        .execute(c))
        .map(drop)
    }

    /// `SELECT 1` on a connection of the pool, within the acquire and
    /// statement timeouts (once more on a fresh connection if the pool's
    /// was broken).
    async fn ping(&self) -> Result<(), StoreError> {
        run!(self, Retry::OnBroken, |c| sqlx::query("SELECT 1")
            .execute(c))
        .map(drop)
    }

    fn as_postgres(&self) -> Option<&PostgresStore> {
        Some(self)
    }

    /// One listener connection per store (however many runtimes are built
    /// on it), on the runtime crate's background thread; it reconnects by
    /// itself and ends once the store is dropped.
    fn subscribe(&self, on_change: ChangeListener) {
        use std::sync::atomic::Ordering;
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(on_change);
        if !self.inner.subscribed.swap(true, Ordering::AcqRel) {
            tasks::start_listener(&self.inner);
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.table.to_string())
            .field("statement_timeout", &self.inner.statement_timeout)
            .field("acquire_timeout", &self.inner.acquire_timeout)
            .finish_non_exhaustive()
    }
}
