//! The command line of the HTTP servers, and the runtime and payments it
//! selects (`--store`).

use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::store::Store;
use idempotent_runtime::Idempotency;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::{LeaseOverride, Payments, IDEMPOTENCY_TABLE, PAYMENTS_TABLE};

/// The command line of both servers.
pub struct Options {
    /// `--listen ADDR`.
    pub listen: String,
    /// `--store memory|redis|postgres`.
    pub store: String,
    /// `--redis-url URL`.
    pub redis_url: String,
    /// `--database-url URL`.
    pub database_url: String,
    /// `--lease-secs N`: claims live `N` s instead of the handler's own 30 s
    /// (see [`LeaseOverride`]); `None`: the handler's own.
    pub lease: Option<Duration>,
}

/// The usage line of `program`.
pub fn usage(program: &str) -> String {
    format!(
        "usage: {program} [--listen ADDR] [--store memory|redis|postgres] [--redis-url URL] \
         [--database-url URL] [--lease-secs N]"
    )
}

impl Options {
    /// Parses `std::env::args()`; `Err` is a message for stderr.
    pub fn from_args(program: &str) -> Result<Options, String> {
        let mut o = Options {
            listen: "127.0.0.1:3000".into(),
            store: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            lease: None,
        };
        let mut lease_secs = String::new();
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--listen" => &mut o.listen,
                "--store" => &mut o.store,
                "--redis-url" => &mut o.redis_url,
                "--database-url" => &mut o.database_url,
                "--lease-secs" => &mut lease_secs,
                "-h" | "--help" => return Err(usage(program)),
                other => return Err(format!("unknown argument `{other}`; try --help")),
            };
            *slot = args
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value"))?;
        }
        if !lease_secs.is_empty() {
            let secs: u64 = lease_secs.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
                format!("`--lease-secs {lease_secs}`: expected whole seconds, at least 1")
            })?;
            o.lease = Some(Duration::from_secs(secs));
        }
        Ok(o)
    }

    /// The runtime and the payments for `--store`: both in this process,
    /// both in the Redis at `--redis-url`, or both in the PostgreSQL
    /// database at `--database-url` (whose tables are created if missing).
    pub async fn backends(&self) -> Result<(Idempotency, Payments), String> {
        match self.store.as_str() {
            "memory" => Ok((self.runtime(MemoryStore::default()), Payments::default())),
            "postgres" => {
                let unusable = |e: &dyn std::fmt::Display| {
                    format!("cannot use PostgreSQL at {}: {e}", self.database_url)
                };
                // Not the default table, `idempotency_records`: with that
                // name `migrate()` currently writes its index name quoted
                // twice and fails. Back to the default once it is fixed.
                let store = PostgresStore::builder(self.database_url.as_str())
                    .table(IDEMPOTENCY_TABLE)
                    .build()
                    .await
                    .map_err(|e| unusable(&e))?;
                store.migrate().await.map_err(|e| unusable(&e))?;
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&self.database_url)
                    .await
                    .map_err(|e| unusable(&e))?;
                create_payments_table(&pool)
                    .await
                    .map_err(|e| unusable(&e))?;
                Ok((self.runtime(store), Payments::Postgres(pool)))
            }
            "redis" => {
                let store = RedisStore::builder(self.redis_url.as_str())
                    .prefix("idempotent-examples")
                    .build()
                    .await
                    .map_err(|e| format!("cannot use Redis at {}: {e}", self.redis_url))?;
                let client =
                    redis::Client::open(self.redis_url.as_str()).map_err(|e| e.to_string())?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| format!("cannot use Redis at {}: {e}", self.redis_url))?;
                Ok((self.runtime(store), Payments::Redis(conn)))
            }
            other => Err(format!(
                "unknown store `{other}`: expected `memory`, `redis` or `postgres`"
            )),
        }
    }

    /// The runtime over `store`, its claims living `--lease-secs` if given.
    fn runtime(&self, store: impl Store) -> Idempotency {
        match self.lease {
            Some(lease) => Idempotency::new(LeaseOverride::new(store, lease)),
            None => Idempotency::new(store),
        }
    }
}

/// Creates the payments table if missing: [`PAYMENTS_TABLE`], under an
/// advisory lock, because two processes starting at once would otherwise
/// race on `CREATE TABLE IF NOT EXISTS` (which is not safe concurrently).
async fn create_payments_table(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut txn = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('idempotent-examples:payments'))")
        .execute(&mut *txn)
        .await?;
    sqlx::query(PAYMENTS_TABLE).execute(&mut *txn).await?;
    txn.commit().await
}
