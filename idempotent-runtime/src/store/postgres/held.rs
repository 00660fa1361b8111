//! The claim that is the handler's own transaction, for handlers that take
//! `Tx`: no claim row, no lease. The transaction begins first, takes a
//! transaction-scoped advisory lock derived from the record id and reads the
//! record; the handler writes in it; the completed record is inserted in it
//! and committed with the handler's writes. A crash, a panic or a dropped
//! connection aborts the transaction and with it the lock: nothing is left
//! behind, and the retry runs at once.
//!
//! Round trips:
//!
//! | when | sent |
//! |---|---|
//! | claim | `BEGIN`; then one prepared statement: the record read and, only if there is none, `pg_try_advisory_xact_lock` |
//! | a duplicate waits (`on_conflict = "wait"`) | one flight: `SET LOCAL lock_timeout`, `pg_advisory_xact_lock`, the record read again |
//! | completion | the record's prepared `INSERT … ON CONFLICT … WHERE expired`; `COMMIT` |
//!
//! Fewer flights are possible only through the simple-query protocol (sqlx
//! does not pipeline prepared statements), and both ways of using it were
//! slower on the bench machine, where CPU, not latency, is the throughput:
//! statements written out with their values cost PostgreSQL a parse and a
//! plan every time (0.19× a bare transaction against 0.36× prepared, in
//! consecutive short runs); statements prepared once with SQL `PREPARE` and
//! sent as `EXECUTE` cost it more than the extended protocol's bind and
//! execute (0.40–0.45× against 0.48–0.53×, in alternating runs; design note
//! 0007).
//!
//! A replay (or a duplicate refused at once) ends its transaction, which
//! holds no lock and wrote nothing, with a `ROLLBACK` sent on the background
//! thread: the answer does not wait for it. A replay of a record this
//! process committed or replayed lately is read first, with one statement
//! and no transaction (`seen.rs`).
//!
//! The record's primary key stays the arbiter: two requests whose locks did
//! not exclude each other (lock ids collide across keys, or a handler of
//! the same scope on the lease path) meet at the final `INSERT`, and the
//! second finds a live record (the `INSERT` writes nothing), rolls back and
//! answers with it.
//!
//! Duplicates inside one process never take a connection to wait: the
//! first waits on the lock itself, the others on an in-process wake-up of
//! that lock id (see [`Local`]), so a storm of duplicates cannot exhaust the
//! pool.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Row};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::conn::{acquire, bounded, Failure};
use super::{decode, Inner, PostgresStore};
use crate::store::StoreError;
use crate::{Record, RecordId, StoredResponse};

/// The advisory lock of a record id: the first 8 bytes of a SHA-256 of its
/// scope and digest. Two ids may share one (2⁻⁶⁴ per pair); then one waits
/// for the other, and never gets its response (each reads its own record).
pub(crate) fn lock_id(id: &RecordId) -> i64 {
    let mut h = Sha256::new();
    h.update(b"idempotent/lock/1\0");
    h.update((id.scope().len() as u64).to_le_bytes());
    h.update(id.scope().as_bytes());
    h.update(id.digest());
    let d = h.finalize();
    i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// What [`PostgresStore::claim_in_transaction`] found.
pub(crate) enum TxClaim {
    /// No live record, and this transaction holds the key's lock: run.
    Acquired(Held),
    /// A live record (completed; or a claim of the lease path).
    Existing(Record),
    /// Another transaction holds the key's lock (a duplicate in flight), and
    /// it was not to be waited for or did not end within the wait.
    Busy,
}

/// What became of a completion.
pub(crate) enum Commit {
    /// The record and the handler's writes are committed.
    Written,
    /// A live record was already there; everything was rolled back. The
    /// record, if it could still be read.
    Lost(Option<Record>),
}

/// An open transaction that holds a key's lock: the handler's `Tx`.
pub(crate) struct Held {
    conn: Option<PoolConnection<Postgres>>,
    store: PostgresStore,
    lock: i64,
    /// This process's hold on the lock id, released with the transaction.
    _local: LocalGuard,
}

impl Held {
    /// The transaction's connection.
    pub(crate) fn connection(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a held transaction has its connection until it ends")
    }

    /// Inserts the completed record, then commits it with the handler's
    /// writes.
    pub(crate) async fn commit_with_record(
        mut self,
        id: &RecordId,
        fingerprint: crate::Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> Result<Commit, StoreError> {
        let record = Record::Completed {
            fingerprint,
            response,
        }
        .encode();
        let inner = self.store.inner.clone();
        let timeout = inner.statement_timeout;
        let Some(mut conn) = self.conn.take() else {
            return Err(StoreError::Unavailable(
                "the transaction was already ended".into(),
            ));
        };
        // Fenced by an owner that is nobody's: only an expired row is taken
        // over. Prepared, as the claim's read: written out as literals, the
        // two statements cost PostgreSQL a parse and a plan per request,
        // which halved the throughput of the whole path (0.19× a bare
        // transaction against 0.36× prepared, in consecutive short runs).
        let owner = crate::OwnerToken::generate();
        let written = match bounded(
            timeout,
            self.store
                .complete_statement(&mut conn, id, owner, &record, ttl),
        )
        .await
        {
            Ok(true) => bounded(timeout, sqlx::Executor::execute(&mut *conn, "COMMIT"))
                .await
                .map(drop),
            Ok(false) => Err(Failure::Other(StoreError::Unavailable(CONFLICT.into()))),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                inner.seen.insert(self.lock);
                Ok(Commit::Written)
            }
            Err(failure) if is_conflict(&failure) => {
                // Rolled back; the record that was there decides the answer.
                let rolled_back =
                    bounded(timeout, sqlx::Executor::execute(&mut *conn, "ROLLBACK")).await;
                if rolled_back.is_err() {
                    conn.close_on_drop();
                    return Ok(Commit::Lost(None));
                }
                let row = bounded(
                    timeout,
                    sqlx::query(&inner.sql.get)
                        .bind(id.scope())
                        .bind(&id.digest()[..])
                        .fetch_optional(&mut *conn),
                )
                .await;
                let record = match row {
                    Ok(Some(row)) => row
                        .try_get::<Option<Vec<u8>>, _>("record")
                        .ok()
                        .and_then(|bytes| decode(bytes).ok()),
                    _ => None,
                };
                if let Some(Record::Completed { .. }) = record {
                    inner.seen.insert(self.lock);
                }
                Ok(Commit::Lost(record))
            }
            Err(failure) => {
                // Whatever state the connection is in, it is not pooled
                // again: closing it ends the transaction on the server.
                conn.close_on_drop();
                Err(failure.into())
            }
        }
    }

    /// Rolls back: nothing of the attempt remains, and the lock is free.
    pub(crate) async fn rollback(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let timeout = self.store.inner.statement_timeout;
            if bounded(timeout, sqlx::Executor::execute(&mut *conn, "ROLLBACK"))
                .await
                .is_err()
            {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for Held {
    /// Dropped unended (a handler that panicked, a future dropped at
    /// shutdown): the connection is closed rather than pooled, which ends
    /// the transaction on the server and frees the lock.
    fn drop(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

/// The message of the conflict [`Held::commit_with_record`] raises on
/// purpose when the prepared insert wrote nothing.
const CONFLICT: &str = "a live record was already there";

/// Whether a completion failed because a live record was already there.
fn is_conflict(failure: &Failure) -> bool {
    matches!(failure, Failure::Other(StoreError::Unavailable(why)) if why == CONFLICT)
}

/// Ends a transaction that holds no lock and wrote nothing, off the
/// request's path.
fn roll_back_later(conn: PoolConnection<Postgres>, timeout: Duration) {
    crate::background::background().spawn(roll_back(conn, timeout));
}

/// Rolls back on `conn`; closes it instead of pooling it if that fails.
async fn roll_back(mut conn: PoolConnection<Postgres>, timeout: Duration) {
    let rolled_back = bounded(timeout, sqlx::Executor::execute(&mut *conn, "ROLLBACK")).await;
    if rolled_back.is_err() {
        conn.close_on_drop();
    }
}

impl PostgresStore {
    /// Begins a transaction and claims `id` in it (see the module docs).
    /// With `wait_until`, a lock held elsewhere is waited for until then;
    /// without, it is [`TxClaim::Busy`] at once.
    pub(crate) async fn claim_in_transaction(
        &self,
        id: &RecordId,
        wait_until: Option<Instant>,
    ) -> Result<TxClaim, StoreError> {
        let inner = &self.inner;
        let lock = (inner.lock_id)(id);
        if inner.seen.contains(lock) {
            // Committed or replayed here lately: most likely a replay, read
            // with one statement and no transaction (`seen.rs`).
            match super::Store::get(self, id).await? {
                Some(record @ Record::Completed { .. }) => return Ok(TxClaim::Existing(record)),
                _ => inner.seen.forget(lock),
            }
        }
        loop {
            // A duplicate of a request this process runs (or waits for)
            // waits here, on no connection, or is refused at once.
            if let Some(wake) = inner.local.busy(lock) {
                let Some(until) = wait_until else {
                    return Ok(TxClaim::Busy);
                };
                let now = Instant::now();
                if now >= until {
                    return Ok(TxClaim::Busy);
                }
                let _ = tokio::time::timeout(until - now, wake).await;
                continue;
            }
            let mut conn = acquire(&inner.pool, inner.acquire_timeout, false).await?;
            #[cfg(test)]
            inner
                .begun
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rows = match bounded(inner.statement_timeout, async {
                let c: &mut PgConnection = &mut conn;
                sqlx::Executor::execute(&mut *c, "BEGIN").await?;
                sqlx::query(&inner.sql.claim_held)
                    .bind(id.scope())
                    .bind(&id.digest()[..])
                    .bind(lock)
                    .fetch_all(c)
                    .await
            })
            .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    conn.close_on_drop();
                    return Err(e.into());
                }
            };
            let (record, locked) = read_row(&rows)?;
            if let Some(bytes) = record {
                roll_back_later(conn, inner.statement_timeout);
                return Ok(TxClaim::Existing(self.remember(lock, decode(Some(bytes))?)));
            }
            if locked == Some(true) {
                return Ok(TxClaim::Acquired(Held {
                    conn: Some(conn),
                    store: self.clone(),
                    lock,
                    _local: inner.local.hold(lock, &self.inner),
                }));
            }
            let Some(until) = wait_until else {
                roll_back_later(conn, inner.statement_timeout);
                return Ok(TxClaim::Busy);
            };
            // Held elsewhere: wait on the lock itself, on this connection,
            // as this process's one waiter for it; unless another request
            // of this process got there first (they raced to the database
            // before either was registered): then wait for that one, on no
            // connection.
            let Some(guard) = inner.local.hold_if_first(lock, &self.inner) else {
                roll_back_later(conn, inner.statement_timeout);
                continue;
            };
            let left = until.saturating_duration_since(Instant::now());
            let ms = left.as_millis().max(1);
            let wait = format!(
                "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {ms}; SELECT pg_advisory_xact_lock({lock}); SET LOCAL statement_timeout TO DEFAULT; SET LOCAL lock_timeout TO DEFAULT; SELECT ({}) AS record, true AS locked",
                ms + 1000,
                inner.table.read_record(id)
            );
            let waited = bounded(
                left + inner.statement_timeout,
                sqlx::Executor::fetch_all(&mut *conn, wait.as_str()),
            )
            .await;
            match waited {
                Ok(rows) => match read_row(&rows)? {
                    (Some(bytes), _) => {
                        roll_back_later(conn, inner.statement_timeout);
                        drop(guard);
                        return Ok(TxClaim::Existing(self.remember(lock, decode(Some(bytes))?)));
                    }
                    (None, _) => {
                        return Ok(TxClaim::Acquired(Held {
                            conn: Some(conn),
                            store: self.clone(),
                            lock,
                            _local: guard,
                        }))
                    }
                },
                // The wait ran out (lock_timeout, or the statement's bound).
                Err(Failure::Other(StoreError::Timeout)) => {
                    roll_back_later(conn, inner.statement_timeout);
                    return Ok(TxClaim::Busy);
                }
                Err(Failure::Other(StoreError::Unavailable(why)))
                    if why.starts_with("PostgreSQL 55P03") =>
                {
                    roll_back_later(conn, inner.statement_timeout);
                    return Ok(TxClaim::Busy);
                }
                Err(e) => {
                    conn.close_on_drop();
                    return Err(e.into());
                }
            }
        }
    }

    /// Remembers `lock` if `record` is completed (`seen.rs`).
    fn remember(&self, lock: i64, record: Record) -> Record {
        if let Record::Completed { .. } = record {
            self.inner.seen.insert(lock);
        }
        record
    }

    /// Whether a transaction (of any process) holds `id`'s lock now: a
    /// handler of the in-transaction path runs with it. Read from
    /// `pg_locks`, which takes nothing.
    pub(crate) async fn running(&self, id: &RecordId) -> Result<bool, StoreError> {
        let lock = (self.inner.lock_id)(id) as u64;
        let (high, low) = ((lock >> 32) as i64, (lock & 0xffff_ffff) as i64);
        let inner = &self.inner;
        let held: bool = super::conn::run!(
            &inner.pool,
            inner.acquire_timeout,
            inner.statement_timeout,
            super::conn::Retry::OnBroken,
            |c| {
                sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks
                  WHERE locktype = 'advisory' AND granted AND objsubid = 1
                    AND classid::bigint = $1 AND objid::bigint = $2
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
            )
            .bind(high)
            .bind(low)
            .fetch_one(c)
            }
        )?;
        Ok(held)
    }
}

/// The record and the lock of a claim's one row.
fn read_row(rows: &[sqlx::postgres::PgRow]) -> Result<(Option<Vec<u8>>, Option<bool>), StoreError> {
    let row = rows
        .last()
        .ok_or_else(|| StoreError::Unavailable("the claim returned no row".into()))?;
    let record: Option<Vec<u8>> = row.try_get("record").map_err(super::unexpected)?;
    let locked: Option<bool> = row.try_get("locked").map_err(super::unexpected)?;
    Ok((record, locked))
}

/// The lock ids this process holds or waits for, each with the wake-up of
/// its other local requests: a duplicate of a request this process runs
/// never needs a connection to learn that it must wait (or be refused).
#[derive(Default)]
pub(crate) struct Local {
    ids: Mutex<HashMap<i64, (Arc<Notify>, usize)>>,
}

impl Local {
    /// The wake-up of `lock`, registered before it is returned (so that a
    /// release after this call still wakes the caller), if this process
    /// holds or waits for it.
    fn busy(&self, lock: i64) -> Option<Pin<Box<OwnedNotified>>> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let (notify, _) = ids.get(&lock)?;
        let mut notified = Box::pin(notify.clone().notified_owned());
        notified.as_mut().enable();
        Some(notified)
    }

    fn hold(&self, lock: i64, inner: &Arc<Inner>) -> LocalGuard {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.entry(lock)
            .or_insert_with(|| (Arc::new(Notify::new()), 0))
            .1 += 1;
        LocalGuard {
            inner: Arc::downgrade(inner),
            lock,
        }
    }

    /// A hold of `lock`, unless this process already holds or waits for it.
    fn hold_if_first(&self, lock: i64, inner: &Arc<Inner>) -> Option<LocalGuard> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.contains_key(&lock) {
            return None;
        }
        ids.insert(lock, (Arc::new(Notify::new()), 1));
        Some(LocalGuard {
            inner: Arc::downgrade(inner),
            lock,
        })
    }

    fn release(&self, lock: i64) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((notify, count)) = ids.get_mut(&lock) {
            notify.notify_waiters();
            *count -= 1;
            if *count == 0 {
                ids.remove(&lock);
            }
        }
    }
}

/// One hold of a lock id by this process; dropped, it wakes the local
/// requests waiting on it.
pub(crate) struct LocalGuard {
    inner: Weak<Inner>,
    lock: i64,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.local.release(self.lock);
        }
    }
}
