//! What the test app's handlers do, whatever the framework: sleep if asked,
//! count the execution, answer. Counting happens at the *end*, so a handler
//! dropped half-way is not counted.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use idempotent_runtime::RequestHead;
use serde::Deserialize;

static EXECUTIONS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

/// How many times a handler ran to the end for `tag`.
pub fn executions(tag: &str) -> u64 {
    EXECUTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(tag)
        .copied()
        .unwrap_or(0)
}

pub(crate) fn count(tag: &str) -> u64 {
    let mut m = EXECUTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let n = m.entry(tag.to_owned()).or_default();
    *n += 1;
    *n
}

/// The JSON body the test routes take.
#[derive(Debug, Default, Deserialize)]
pub struct Input {
    /// Counts executions under this name.
    pub tag: String,
    /// Answer with this status (default 201).
    #[serde(default)]
    pub status: Option<u16>,
    /// Sleep this long first.
    #[serde(default)]
    pub delay_ms: u64,
    /// Block the thread this long first (as a synchronous database call
    /// would).
    #[serde(default)]
    pub block_ms: u64,
    /// Answer a body of this many bytes instead of JSON.
    #[serde(default)]
    pub size: usize,
    /// Panic on the first execution for this tag.
    #[serde(default)]
    pub panic_first: bool,
    /// Answer with `Cache-Control: no-store`.
    #[serde(default)]
    pub no_store: bool,
}

/// A framework-neutral response.
pub struct Output {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Runs the test behaviour.
pub async fn behave(input: Input) -> Output {
    if input.block_ms > 0 {
        std::thread::sleep(Duration::from_millis(input.block_ms));
    }
    if input.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.delay_ms)).await;
    }
    let n = count(&input.tag);
    assert!(
        !(input.panic_first && n == 1),
        "handler panics on purpose (first execution)"
    );
    let mut headers = vec![
        ("location", format!("/things/{}/{n}", input.tag)),
        ("etag", format!("\"v{n}\"")),
        ("set-cookie", format!("session=s{n}")),
        ("x-custom", format!("custom-{n}")),
    ];
    if input.no_store {
        headers.push(("cache-control", "no-store".into()));
    }
    let body = if input.size > 0 {
        headers.push(("content-type", "application/octet-stream".into()));
        vec![b'x'; input.size]
    } else {
        headers.push(("content-type", "application/json".into()));
        serde_json::json!({"tag": input.tag, "n": n})
            .to_string()
            .into_bytes()
    };
    Output {
        status: input.status.unwrap_or(201),
        headers,
        body,
    }
}

/// A principal function: the tenant named by `X-Tenant`, case-insensitively.
pub fn tenant(head: &RequestHead<'_>) -> Option<String> {
    head.header("x-tenant").map(str::to_ascii_lowercase)
}

/// Inserts `tag` into `tx_writes` through a handler's transaction.
pub async fn write_in(tx: &mut idempotent_runtime::tx::Tx, tag: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tx_writes (tag) VALUES ($1)")
        .bind(tag)
        .execute(tx)
        .await
        .map(drop)
}

/// A pool on the database at `url`, with the table `tx_writes` that the
/// `Tx` routes write. Tests run in parallel and `CREATE TABLE IF NOT EXISTS`
/// is not safe concurrently (two creators can both miss the table and one
/// fails on `pg_type`), so creators take turns on a transaction-scoped
/// advisory lock.
pub async fn tx_writes_pool(url: &str) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('idempotent-tests:tx_writes'))")
        .execute(&mut *tx)
        .await
        .expect("lock");
    sqlx::query("CREATE TABLE IF NOT EXISTS tx_writes (tag text NOT NULL)")
        .execute(&mut *tx)
        .await
        .expect("create tx_writes");
    tx.commit().await.expect("commit tx_writes");
    pool
}

/// How many rows of `tag` are committed in `tx_writes`.
pub async fn tx_rows(pool: &sqlx::PgPool, tag: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tx_writes WHERE tag = $1")
        .bind(tag)
        .fetch_one(pool)
        .await
        .expect("count rows")
}
