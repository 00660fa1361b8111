//! The function form's exactly-once effects on PostgreSQL: a function that
//! takes `Tx` writes through it, and its record commits in that same
//! transaction, so its writes happen once per key or not at all.

use std::sync::Arc;

use idempotent_runtime::function::{observe, Execution};
use idempotent_runtime::tx::Tx;
use idempotent_runtime::{idempotent, ErrorKind, Idempotency, IdempotencyError};
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::stores::postgres_store;
use idempotent_tests::unique;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Failure {
    Refused(ErrorKind),
    Failed,
}

impl From<IdempotencyError> for Failure {
    fn from(e: IdempotencyError) -> Self {
        Failure::Refused(e.kind())
    }
}

/// Writes a row tagged with the key, then fails if asked to: the caller
/// never passes the `Tx`.
#[idempotent(key = key, scope = "function-tx", store = idem)]
async fn pay(idem: &Idempotency, key: String, fail: bool, mut tx: Tx) -> Result<i64, Failure> {
    let (id,): (i64,) = sqlx::query_as("INSERT INTO fn_payments (tag) VALUES ($1) RETURNING id")
        .bind(&key)
        .fetch_one(&mut tx)
        .await
        .map_err(|_| Failure::Failed)?;
    if fail {
        return Err(Failure::Failed);
    }
    Ok(id)
}

async fn start() -> Option<(Idempotency, sqlx::PgPool)> {
    let server = PostgresServer::shared()?;
    let store = postgres_store(&server, |b| b).await;
    let pool = sqlx::PgPool::connect(server.url()).await.expect("connect");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('idempotent-tests:fn_payments'))")
        .execute(&mut *tx)
        .await
        .expect("lock");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS fn_payments (id bigserial PRIMARY KEY, tag text NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .expect("create fn_payments");
    tx.commit().await.expect("commit");
    Some((Idempotency::new(store), pool))
}

async fn rows(pool: &sqlx::PgPool, tag: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM fn_payments WHERE tag = $1")
        .bind(tag)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_commits_with_the_record_once() {
    let Some((idem, pool)) = start().await else {
        return;
    };
    let key = unique("pay");
    let (first, how) = observe(pay(&idem, key.clone(), false)).await;
    let id = first.unwrap();
    assert_eq!(how, Some(Execution::Executed));
    let (again, how) = observe(pay(&idem, key.clone(), false)).await;
    assert_eq!(again, Ok(id));
    assert_eq!(how, Some(Execution::Replayed));
    assert_eq!(rows(&pool, &key).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rolls_the_write_back_and_frees_the_key() {
    let Some((idem, pool)) = start().await else {
        return;
    };
    let key = unique("fail");
    assert_eq!(pay(&idem, key.clone(), true).await, Err(Failure::Failed));
    assert_eq!(rows(&pool, &key).await, 0, "the failed attempt's write");
    let id = pay(&idem, key.clone(), false).await.unwrap();
    assert_eq!(pay(&idem, key.clone(), false).await, Ok(id));
    assert_eq!(rows(&pool, &key).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_write_once() {
    let Some((idem, pool)) = start().await else {
        return;
    };
    let key = unique("race");
    let barrier = Arc::new(Barrier::new(100));
    let calls = (0..100).map(|_| {
        let (idem, key, barrier) = (idem.clone(), key.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            pay(&idem, key, false).await
        })
    });
    let results = futures_util::future::join_all(calls).await;
    let ids: Vec<i64> = results
        .into_iter()
        .filter_map(|r| match r.unwrap() {
            Ok(id) => Some(id),
            Err(e) => {
                assert_eq!(e, Failure::Refused(ErrorKind::InProgress));
                None
            }
        })
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    assert_eq!(rows(&pool, &key).await, 1);
}

#[tokio::test]
async fn a_tx_without_the_postgres_store_is_refused_before_running() {
    let idem = Idempotency::new(idempotent_runtime::store::memory::MemoryStore::default());
    let result = pay(&idem, unique("memory"), false).await;
    assert_eq!(result, Err(Failure::Refused(ErrorKind::Failed)));
}
