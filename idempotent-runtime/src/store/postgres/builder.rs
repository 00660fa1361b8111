//! Building a [`PostgresStore`]: from a URL (the store owns its pool and
//! sets the server-side statement timeout on it) or from an application's
//! existing pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::sql::{Statements, TableName};
use super::{conn, tasks, Inner, PostgresStore};
use crate::store::StoreError;

/// Default bound of each statement, client- and server-side.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on taking a connection from the pool (a full pool, a
/// database that refuses connections).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default size of the pool the store makes from a URL.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default time between two sweeps of expired records.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Default table.
pub const DEFAULT_TABLE: &str = "idempotency_records";

/// Builds a [`PostgresStore`] (see [`PostgresStore::builder`] and
/// [`PostgresStore::pool_builder`]).
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    source: Source,
    table: String,
    statement_timeout: Duration,
    acquire_timeout: Duration,
    max_connections: u32,
    sweep_interval: Duration,
    lock_id: fn(&crate::RecordId) -> i64,
}

#[derive(Debug, Clone)]
enum Source {
    Url(String),
    Pool(PgPool),
}

impl PostgresStoreBuilder {
    pub(super) fn from_url(url: String) -> Self {
        Self::new(Source::Url(url))
    }

    pub(super) fn from_pool(pool: PgPool) -> Self {
        Self::new(Source::Pool(pool))
    }

    fn new(source: Source) -> Self {
        PostgresStoreBuilder {
            source,
            table: DEFAULT_TABLE.into(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            lock_id: super::held::lock_id,
        }
    }

    /// For tests: the advisory lock id of a record id, to force collisions
    /// (every key one lock) or their absence (two requests of one key that
    /// do not exclude each other, so that the record's primary key must).
    #[doc(hidden)]
    pub fn lock_ids(mut self, lock_id: fn(&crate::RecordId) -> i64) -> Self {
        self.lock_id = lock_id;
        self
    }

    /// The table (default `idempotency_records`), optionally with its
    /// schema: `schema.table`. Lowercase letters, digits and `_`, not
    /// starting with a digit, at most 55 bytes in all; anything else fails
    /// [`build`](Self::build). Create it with [`PostgresStore::migrate`].
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The bound of every statement (default 1 s). Past it the operation
    /// fails with [`StoreError::Timeout`]: the request gets 503 and the
    /// handler does not run.
    ///
    /// Applied client-side always, and server-side (`statement_timeout`, so
    /// that an abandoned statement does not keep running and holding locks)
    /// on the connections of a pool the store makes from a URL. With
    /// [`PostgresStore::pool_builder`] the pool's connections are the
    /// application's: set `statement_timeout` in its `PgConnectOptions`
    /// (`.options([("statement_timeout", "1s")])`) for the same effect.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The bound on taking a connection (default 1 s): a pool whose
    /// connections are all busy, or a database that refuses connections,
    /// answers [`StoreError::Timeout`] (503) after it, never a hang.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The size of the pool made from a URL (default 10). Ignored with
    /// [`PostgresStore::pool_builder`], whose pool is sized by the application.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How often expired records are deleted (default every 5 s), in batches
    /// of 1000, on the runtime crate's background thread. Expired rows are
    /// ignored by every operation whether swept or not; sweeping only keeps
    /// the table small. Every process sweeps; they skip each other's rows.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every.max(Duration::from_millis(100));
        self
    }

    /// Makes the store. With a URL: fails if the URL is invalid or the
    /// database cannot be reached now; once built, the store reconnects by
    /// itself after the database restarts. Does not create the table: run
    /// [`PostgresStore::migrate`] (or the migration file) first.
    pub async fn build(self) -> Result<PostgresStore, StoreError> {
        let table = TableName::parse(&self.table).map_err(|why| {
            StoreError::Unavailable(format!("table name {:?}: {why}", self.table))
        })?;
        let pool = match &self.source {
            Source::Pool(pool) => pool.clone(),
            Source::Url(url) => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| StoreError::Unavailable(format!("PostgreSQL URL: {e}")))?;
                let options = with_defaults(options, self.statement_timeout);
                let pool_options = PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.acquire_timeout)
                    // Only the store's slow path (no idle connection, or a
                    // retry after a broken one) goes through the pool's
                    // acquire; there, drop dead idle connections first.
                    .test_before_acquire(true);
                // Made on the background thread, where the pool's own
                // maintenance (closing idle connections) then runs, whatever
                // runtime builds the store.
                let pool = crate::background::background()
                    .spawn(async move { pool_options.connect_lazy_with(options) })
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("making the pool: {e}")))?;
                // Reachable now? (Opened on the background thread, as every
                // connection of the store.)
                drop(
                    conn::acquire(&pool, self.acquire_timeout + self.statement_timeout, true)
                        .await?,
                );
                pool
            }
        };
        let inner = Arc::new(Inner {
            sql: Statements::new(&table),
            channel: table.channel(),
            table,
            pool,
            statement_timeout: self.statement_timeout,
            acquire_timeout: self.acquire_timeout,
            listeners: Arc::default(),
            subscribed: std::sync::atomic::AtomicBool::new(false),
            owns_pool: matches!(self.source, Source::Url(_)),
            closed: std::sync::atomic::AtomicBool::new(false),
            lock_id: self.lock_id,
            local: super::held::Local::default(),
            seen: super::seen::Seen::default(),
            #[cfg(test)]
            begun: Default::default(),
        });
        tasks::start_sweeper(Arc::downgrade(&inner), self.sweep_interval);
        Ok(PostgresStore { inner })
    }
}

/// The store's own connection settings: the server-side statement timeout,
/// and an application name (unless the URL sets one) so that the store's
/// sessions are recognizable in `pg_stat_activity`.
fn with_defaults(options: PgConnectOptions, statement_timeout: Duration) -> PgConnectOptions {
    let ms = statement_timeout.as_millis().clamp(1, i32::MAX as u128);
    let options = options.options([("statement_timeout", ms)]);
    if options.get_application_name().is_none() {
        options.application_name("idempotent")
    } else {
        options
    }
}
