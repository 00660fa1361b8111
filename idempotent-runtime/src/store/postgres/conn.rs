//! Connections of the PostgreSQL store: where they come from, how long a
//! statement may take, and what a failure means to the life cycle.
//!
//! - **Where connections are made.** A connection's socket belongs to the
//!   Tokio runtime that opened it, and only makes progress while that
//!   runtime runs. A request worker may block (actix workers are
//!   single-threaded), and a test's runtime ends with the test; so new
//!   connections are opened on the runtime crate's background thread and
//!   idle ones are taken directly. One exception: on a multi-thread runtime
//!   (axum's, tonic's), a request that finds the pool at its size waits for
//!   the next free connection where it is. The trip to the background
//!   thread and back (two cross-thread wake-ups, and the pool's check of
//!   the connection) was taken by most replays under load, and cost them
//!   about 15 % of their throughput (11.9k against 13.8k req/s, medians of
//!   four alternating runs). sqlx opens a connection in that wait only if one closed
//!   meanwhile, and there it lives on the application's own runtime, as
//!   the application's own queries' connections do.
//! - **Bounds.** Taking a connection is bounded by the acquire timeout, each
//!   statement by the statement timeout, client-side here and server-side
//!   by `statement_timeout` on the store's own connections: a full pool, a
//!   stopped or a hanging database answer `StoreError::Timeout` (503), never
//!   a hang.
//! - **Failures** are all 503s (`Unavailable` or `Timeout`), so the handler
//!   does not run: serialization failures, deadlocks, lock timeouts,
//!   connection errors, a missing table. Only an undecodable record is
//!   `Corrupt` (500).

use std::future::Future;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::store::StoreError;

/// Extra time the client-side bound gives a statement over the server-side
/// `statement_timeout`, so that normally the server cancels (and the
/// connection stays usable) and the client's bound only catches what the
/// server cannot: a lost network, a frozen server, a slow commit.
const CLIENT_GRACE: Duration = Duration::from_millis(50);

/// What became of one attempt.
pub(super) enum Failure {
    /// The connection broke (or was found broken): the statement most
    /// likely never ran, and another connection may do better.
    Broken(String),
    /// Anything else, already as the life cycle's error.
    Other(StoreError),
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> StoreError {
        match f {
            Failure::Broken(why) => StoreError::Unavailable(why),
            Failure::Other(e) => e,
        }
    }
}

/// What an sqlx error means here.
pub(super) fn classify(e: sqlx::Error) -> Failure {
    match e {
        sqlx::Error::PoolTimedOut => Failure::Other(StoreError::Timeout),
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Failure::Other(StoreError::Timeout)
        }
        sqlx::Error::Io(io) => Failure::Broken(format!("connection to PostgreSQL: {io}")),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // query_canceled: the server's statement_timeout.
                "57014" => Failure::Other(StoreError::Timeout),
                // admin_shutdown, crash_shutdown: the backend went away with
                // a goodbye; the next connection may reach a restarted server.
                "57P01" | "57P02" => {
                    Failure::Broken(format!("PostgreSQL {code}: {}", db.message()))
                }
                // Everything else is 503 as well: serialization failure
                // (40001), deadlock (40P01), lock not available (55P03),
                // connection exceptions (08…), cannot connect now (57P03),
                // too many connections (53300), a missing table (42P01: run
                // `migrate`). A 500 would tell the client not to retry.
                _ => Failure::Other(StoreError::Unavailable(format!(
                    "PostgreSQL {code}: {}",
                    db.message()
                ))),
            }
        }
        other => Failure::Other(StoreError::Unavailable(other.to_string())),
    }
}

/// Runs `fut` (statements on a connection) within `limit`.
pub(super) async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit + CLIENT_GRACE, fut).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(Failure::Other(StoreError::Timeout)),
    }
}

/// An idle connection at once if there is one; on a multi-thread runtime
/// and a pool at its size, the next one released, waited for here;
/// otherwise one from the pool on the background thread (where a new
/// connection is then opened); within `limit`. `checked`: go through the
/// pool's own acquire on the background thread, which (with
/// `test_before_acquire`) discards idle connections that no longer answer.
pub(super) async fn acquire(
    pool: &PgPool,
    limit: Duration,
    checked: bool,
) -> Result<PoolConnection<Postgres>, StoreError> {
    if !checked {
        if let Some(conn) = pool.try_acquire() {
            return Ok(conn);
        }
        if waits_here(pool) {
            return match tokio::time::timeout(limit, pool.acquire()).await {
                Ok(r) => r.map_err(|e| classify(e).into()),
                Err(_) => Err(StoreError::Timeout),
            };
        }
    }
    let pool = pool.clone();
    let task = crate::background::background().spawn(async move { pool.acquire().await });
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(r)) => r.map_err(|e| classify(e).into()),
        Ok(Err(join)) => Err(StoreError::Unavailable(format!(
            "acquiring a PostgreSQL connection: {join}"
        ))),
        Err(_) => {
            abort.abort();
            Err(StoreError::Timeout)
        }
    }
}

/// Whether a request waits for a connection on its own runtime (see the
/// module doc): the pool cannot grow, so the wait opens nothing unless a
/// connection closes meanwhile, and the runtime is a multi-thread one,
/// which serves the application as long as it runs.
fn waits_here(pool: &PgPool) -> bool {
    pool.size() >= pool.options().get_max_connections()
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Whether retrying `f` on another connection is safe and useful.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Once, on a broken connection: for statements whose second run
    /// answers the same as the first (reads, claims by the same owner,
    /// renewals, wake-up marks). After a database restart every idle
    /// connection is dead, and without this each would fail one request.
    OnBroken,
    /// Never: a completion, release or delete that ran but whose answer was
    /// lost would report `false` on its second run.
    Never,
}

/// Takes a connection and evaluates `$body` (a future of statements on
/// `$c: &mut PgConnection`) on it, both bounded; once more on a checked
/// connection if the first one was broken and `$retry` allows it.
///
/// A macro rather than a function taking a closure: a closure returning a
/// future that borrows the connection cannot yet be proven `Send` for every
/// lifetime, which the `Store` futures must be.
macro_rules! run {
    ($pool:expr, $acquire:expr, $statement:expr, $retry:expr, |$c:ident| $body:expr) => {{
        let (pool, acquire_timeout, statement_timeout) = ($pool, $acquire, $statement);
        let mut conn = $crate::store::postgres::conn::acquire(pool, acquire_timeout, false).await?;
        let first = {
            let $c: &mut ::sqlx::PgConnection = &mut conn;
            $crate::store::postgres::conn::bounded(statement_timeout, $body).await
        };
        match first {
            Ok(t) => Ok(t),
            Err($crate::store::postgres::conn::Failure::Broken(why))
                if $retry == $crate::store::postgres::conn::Retry::OnBroken =>
            {
                ::tracing::debug!(target: "idempotent", error = %why, "PostgreSQL connection broken; retrying on another");
                drop(conn);
                let mut conn =
                    $crate::store::postgres::conn::acquire(pool, acquire_timeout, true).await?;
                let $c: &mut ::sqlx::PgConnection = &mut conn;
                Ok($crate::store::postgres::conn::bounded(statement_timeout, $body).await?)
            }
            Err(e) => Err($crate::store::StoreError::from(e)),
        }
    }};
}
pub(super) use run;
