//! The transactional guarantee of the Postgres store, through real HTTP on
//! both adapters: a handler writing through `Tx` commits its writes with its
//! stored response, and only then. Not stored (a retry-inviting answer,
//! `Cache-Control: no-store`), a panic, a response over the storage limit,
//! a claim lost to another owner: nothing of the attempt remains.

use std::time::Duration;

use idempotent_runtime::store::Store;
use idempotent_runtime::{IdempotencyKey, Limits, RecordId};
use idempotent_tests::actix_app::Actix;
use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::stores::{postgres_store, Memory, StoreFactory};
use idempotent_tests::{unique, Adapter, AnyStore, Env};
use serde_json::json;

/// A server of adapter `A` over a Postgres store, and a pool on the same
/// database to count what was committed.
async fn start<A: Adapter>() -> Option<(Env, sqlx::PgPool)> {
    let server = PostgresServer::shared()?;
    let store = postgres_store(&server, |b| b).await;
    let pool = idempotent_tests::behaviour::tx_writes_pool(server.url()).await;
    let env = Env::start::<A>(AnyStore::postgres(store, server)).await;
    Some((env, pool))
}

use idempotent_tests::behaviour::tx_rows as rows;

/// Stored: the write and the record commit together; the retry replays and
/// writes nothing more.
async fn stored_response_commits_the_writes<A: Adapter>() {
    let Some((env, pool)) = start::<A>().await else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let first = env
        .post("/tx")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(rows(&pool, &tag).await, 1);
    let again = env
        .post("/tx")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await;
    assert!(again.replayed());
    assert_eq!(rows(&pool, &tag).await, 1);
    assert_eq!(executions(&tag), 1);
}

/// Not stored (503 invites a retry), panicked, or over the storage limit:
/// the writes roll back and the key is free, so the retry runs and commits
/// once.
async fn unstored_attempts_leave_nothing<A: Adapter>() {
    let Some((env, pool)) = start::<A>().await else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let busy = env
        .post("/tx")
        .key(&key)
        .json(json!({"tag": tag, "status": 503}))
        .send()
        .await;
    assert_eq!(busy.status, 503);
    assert_eq!(
        rows(&pool, &tag).await,
        0,
        "a 503 is not stored: rolled back"
    );

    let (tag, key) = (unique("t"), unique("k"));
    let uncached = env
        .post("/tx")
        .key(&key)
        .json(json!({"tag": tag, "no_store": true}))
        .send()
        .await;
    assert_eq!(uncached.status, 201, "{:?}", uncached.body);
    assert_eq!(
        rows(&pool, &tag).await,
        0,
        "`Cache-Control: no-store` is not stored: rolled back"
    );

    let (tag, key) = (unique("t"), unique("k"));
    let body = json!({"tag": tag, "panic_first": true});
    env.post("/tx")
        .key(&key)
        .json(body.clone())
        .send()
        .await
        .assert_problem(500, "handler-failed");
    assert_eq!(rows(&pool, &tag).await, 0, "a panic rolls back");
    let retry = env.post("/tx").key(&key).json(body).send().await;
    assert_eq!(retry.status, 201);
    assert_eq!(rows(&pool, &tag).await, 1);

    let (tag, key) = (unique("t"), unique("k"));
    let big = json!({"tag": tag, "size": Limits::default().max_response_body + 1});
    env.post("/tx")
        .key(&key)
        .json(big)
        .send()
        .await
        .assert_problem(500, "transaction-not-committed");
    assert_eq!(rows(&pool, &tag).await, 0, "over the limit: rolled back");
}

/// Fencing, on the lease path (`Tx` under a middleware not marked
/// `transactional`): the claim of a running handler is deleted (as an
/// operator would) and another request takes the key and commits; the first
/// handler cannot commit its writes when it finishes: 409 `lease-lost`, one
/// row.
async fn a_handler_that_lost_its_claim_cannot_commit<A: Adapter>() {
    let Some((env, pool)) = start::<A>().await else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let slow = env
        .post("/tx-lease/pay")
        .key(&key)
        .json(json!({"tag": tag, "delay_ms": 1500}))
        .spawn();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let id = RecordId::new(
        "tx-lease",
        None,
        &IdempotencyKey::parse(key.as_bytes()).unwrap(),
    );
    assert!(env.store.delete(&id).await.expect("delete the claim"));
    let taker = env
        .post("/tx-lease/pay")
        .key(&key)
        .json(json!({"tag": tag, "delay_ms": 1500}))
        .send()
        .await;
    assert_eq!(taker.status, 201, "{:?}", taker.body);
    let slow = slow.await.expect("first request");
    slow.assert_problem(409, "lease-lost");
    assert_eq!(rows(&pool, &tag).await, 1, "only the new owner's write");
    let again = env
        .post("/tx-lease/pay")
        .key(&key)
        .json(json!({"tag": tag, "delay_ms": 1500}))
        .send()
        .await;
    assert!(again.replayed());
    assert_eq!(again.body, taker.body);
}

/// `Tx` needs the Postgres store: over another store it is refused with a
/// problem that says so, and the handler does not run.
async fn tx_without_postgres_is_refused<A: Adapter>() {
    let env = Env::start::<A>(Memory::make().await.expect("memory store")).await;
    let tag = unique("t");
    env.post("/tx")
        .key(&unique("k"))
        .json(json!({"tag": tag}))
        .send()
        .await
        .assert_problem(500, "no-transactional-store");
    assert_eq!(executions(&tag), 0);
}

macro_rules! both {
    ($($case:ident),*) => {
        mod axum_adapter {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case::<super::Axum>().await })*
        }
        mod actix_adapter {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case::<super::Actix>().await })*
        }
    };
}

both!(
    stored_response_commits_the_writes,
    unstored_attempts_leave_nothing,
    a_handler_that_lost_its_claim_cannot_commit,
    tx_without_postgres_is_refused
);
