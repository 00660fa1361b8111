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

/// The command line of both HTTP servers.
pub struct Options {
    /// `--listen ADDR`.
    pub listen: String,
    /// The store flags.
    pub backend: Backend,
}

/// The store flags every example program takes.
pub struct Backend {
    /// `--store memory|redis|postgres`.
    pub store: String,
    /// `--redis-url URL`.
    pub redis_url: String,
    /// `--database-url URL`.
    pub database_url: String,
    /// `--lease-secs N`: claims live `N` s instead of the handler's own 30 s
    /// (see [`LeaseOverride`]); `None`: the handler's own.
    pub lease: Option<Duration>,
    lease_secs: String,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            store: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            lease: None,
            lease_secs: String::new(),
        }
    }
}

/// The usage of the store flags.
pub const BACKEND_USAGE: &str =
    "[--store memory|redis|postgres] [--redis-url URL] [--database-url URL] [--lease-secs N]";

impl Backend {
    /// The value slot of one of its flags.
    pub fn slot(&mut self, flag: &str) -> Option<&mut String> {
        Some(match flag {
            "--store" => &mut self.store,
            "--redis-url" => &mut self.redis_url,
            "--database-url" => &mut self.database_url,
            "--lease-secs" => &mut self.lease_secs,
            _ => return None,
        })
    }

    /// Checks what was given once every flag is read.
    pub fn finish(&mut self) -> Result<(), String> {
        if !self.lease_secs.is_empty() {
            let secs: u64 = self
                .lease_secs
                .parse()
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| {
                    format!(
                        "`--lease-secs {}`: expected whole seconds, at least 1",
                        self.lease_secs
                    )
                })?;
            self.lease = Some(Duration::from_secs(secs));
        }
        Ok(())
    }
}

/// `std::env::args()` as `--flag value` pairs; `Err` is a message for
/// stderr (the usage, for `--help`).
pub fn flags(usage: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// The usage line of `program`.
pub fn usage(program: &str) -> String {
    format!("usage: {program} [--listen ADDR] {BACKEND_USAGE}")
}

impl Options {
    /// Parses `std::env::args()`; `Err` is a message for stderr.
    pub fn from_args(program: &str) -> Result<Options, String> {
        Self::from_args_listening(program, "127.0.0.1:3000")
    }

    /// As [`from_args`](Self::from_args), `--listen` defaulting to `listen`.
    pub fn from_args_listening(program: &str, listen: &str) -> Result<Options, String> {
        let mut listen = listen.to_owned();
        let mut backend = Backend::default();
        for (flag, value) in flags(&usage(program))? {
            let slot = match flag.as_str() {
                "--listen" => &mut listen,
                other => backend
                    .slot(other)
                    .ok_or_else(|| format!("unknown argument `{other}`; try --help"))?,
            };
            *slot = value;
        }
        backend.finish()?;
        Ok(Options { listen, backend })
    }

    /// The runtime and the payments for `--store` (see [`Backend::backends`]).
    pub async fn backends(&self) -> Result<(Idempotency, Payments), String> {
        self.backend.backends().await
    }
}

impl Backend {
    /// The runtime and the payments for `--store`: both in this process,
    /// both in the Redis at `--redis-url`, or both in the PostgreSQL
    /// database at `--database-url` (whose tables are created if missing).
    pub async fn backends(&self) -> Result<(Idempotency, Payments), String> {
        match self.store.as_str() {
            "memory" => Ok((self.runtime(MemoryStore::default())?, Payments::default())),
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
                Ok((self.runtime(store)?, Payments::Postgres(pool)))
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
                Ok((self.runtime(store)?, Payments::Redis(conn)))
            }
            other => Err(format!(
                "unknown store `{other}`: expected `memory`, `redis` or `postgres`"
            )),
        }
    }

    /// The runtime over `store`, its claims living `--lease-secs` if given.
    /// In production (`APP_ENV=production`) a store of this process only is
    /// refused: start-up fails rather than run several instances that do
    /// not see each other's keys.
    fn runtime(&self, store: impl Store) -> Result<Idempotency, String> {
        let builder = match self.lease {
            Some(lease) => Idempotency::builder(LeaseOverride::new(store, lease)),
            None => Idempotency::builder(store),
        };
        let builder = match key_ring()? {
            #[cfg(feature = "encryption")]
            Some(ring) => builder.encryption(ring),
            _ => builder,
        };
        let builder = if std::env::var("APP_ENV").as_deref() == Ok("production") {
            builder.require_shared_store()
        } else {
            builder
        };
        builder.try_build().map_err(|e| {
            format!("APP_ENV=production: {e}; start with `--store redis` or `--store postgres`")
        })
    }
}

/// Where the servers read their encryption keys: `ID:HEX64[,ID:HEX64…]`,
/// key ids and 32-byte keys in hex; the first seals, all open.
const ENCRYPTION_KEYS: &str = "IDEMPOTENT_ENCRYPTION_KEYS";

/// The key ring of [`ENCRYPTION_KEYS`]: `None` when it is unset (stored
/// responses stay plaintext). Set in a build without the `encryption`
/// feature, start-up fails rather than store plaintext it was told to seal.
#[cfg(feature = "encryption")]
fn key_ring() -> Result<Option<idempotent_runtime::KeyRing>, String> {
    match std::env::var(ENCRYPTION_KEYS) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{ENCRYPTION_KEYS} is not UTF-8")),
        Ok(spec) => spec
            .parse()
            .map(Some)
            .map_err(|e| format!("{ENCRYPTION_KEYS}: {e}")),
    }
}

#[cfg(not(feature = "encryption"))]
fn key_ring() -> Result<Option<std::convert::Infallible>, String> {
    match std::env::var_os(ENCRYPTION_KEYS) {
        None => Ok(None),
        Some(_) => Err(format!(
            "{ENCRYPTION_KEYS} is set, but this build has no `encryption` feature: build with `--features encryption`"
        )),
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
