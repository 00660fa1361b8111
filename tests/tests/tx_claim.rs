//! The claim inside the handler's transaction (the Postgres store, handlers
//! that take `Tx`), through real HTTP on both adapters: nothing is written
//! before the commit, duplicates are refused or wait on the lock itself, a
//! storm of them does not exhaust the pool, colliding lock ids never share a
//! response, the record's primary key decides a last-moment race, and a
//! session the server ends fails cleanly.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idempotent_runtime::store::postgres::{PostgresStore, PostgresStoreBuilder};
use idempotent_runtime::store::Store;
use idempotent_runtime::{
    Fingerprint, Idempotency, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse,
};
use idempotent_tests::actix_app::Actix;
use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::stores::{postgres_store, postgres_table};
use idempotent_tests::{unique, Adapter, AnyStore, Env, Resp};
use serde_json::json;

/// A pool on the test database, with the table the `/tx` routes write.
async fn pool(server: &PostgresServer) -> sqlx::PgPool {
    idempotent_tests::behaviour::tx_writes_pool(server.url()).await
}

use idempotent_tests::behaviour::tx_rows as rows;

/// A server of `A` over a new table's store built by `configure`, with a
/// runtime whose waiters re-read only every 30 s (so that a waiter woken
/// sooner was woken by the lock, not by re-reading).
async fn start<A: Adapter>(
    configure: impl FnOnce(PostgresStoreBuilder) -> PostgresStoreBuilder,
) -> Option<(Env, sqlx::PgPool, Arc<PostgresServer>)> {
    let server = PostgresServer::shared()?;
    let store = postgres_store(&server, configure).await;
    let pool = pool(&server).await;
    let idempotency = Idempotency::builder(store.clone())
        .wait_recheck(Duration::from_secs(30))
        .build();
    let env = Env::with_runtime::<A>(AnyStore::postgres(store, server.clone()), idempotency).await;
    Some((env, pool, server))
}

fn tx_body(tag: &str, delay_ms: u64) -> serde_json::Value {
    json!({"tag": tag, "delay_ms": delay_ms})
}

fn id(scope: &str, key: &str) -> RecordId {
    RecordId::new(scope, None, &IdempotencyKey::parse(key.as_bytes()).unwrap())
}

/// While the handler runs, the store holds nothing of it (the operator API
/// sees it as running, from the lock), a duplicate is refused with 409, and
/// once it commits its write and its record are there together.
async fn nothing_is_written_before_the_commit<A: Adapter>() {
    let Some((env, pool, _server)) = start::<A>(|b| b).await else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let first = env.post("/tx").key(&key).json(tx_body(&tag, 800)).spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.store.get(&id("tx", &key)).await.unwrap(), None);
    let operator = Idempotency::new(env.store.unguarded());
    let k = IdempotencyKey::parse(key.as_bytes()).unwrap();
    assert_eq!(
        operator.lookup("tx", None, &k).await.unwrap(),
        Some(Record::Running)
    );
    env.post("/tx")
        .key(&key)
        .json(tx_body(&tag, 800))
        .send()
        .await
        .assert_problem(409, "request-in-progress");
    let first = first.await.unwrap();
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(matches!(
        operator.lookup("tx", None, &k).await.unwrap(),
        Some(Record::Completed { .. })
    ));
    let again = env
        .post("/tx")
        .key(&key)
        .json(tx_body(&tag, 800))
        .send()
        .await;
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(rows(&pool, &tag).await, 1);
}

/// A duplicate with `on_conflict = "wait"` waits for the first and replays
/// it, whether it waits in this process (on the first's wake-up) or in
/// another (on the lock itself); either way it is woken by the first's end,
/// long before the 30 s re-read.
async fn a_waiting_duplicate_is_woken_by_the_commit<A: Adapter>() {
    let Some((env, pool, server)) = start::<A>(|b| b).await else {
        return;
    };
    // Another process's view of the same table: its own store and pool.
    let AnyStore::Postgres(store, _) = &env.store else {
        unreachable!()
    };
    let other_store = PostgresStore::builder(server.url())
        .table(store.table())
        .build()
        .await
        .expect("second store");
    let other = Env::with_runtime::<A>(
        AnyStore::postgres(other_store.clone(), server.clone()),
        Idempotency::builder(other_store)
            .wait_recheck(Duration::from_secs(30))
            .build(),
    )
    .await;
    for waiter in [&env, &other] {
        let (tag, key) = (unique("t"), unique("k"));
        let first = env
            .post("/tx-wait")
            .key(&key)
            .json(tx_body(&tag, 700))
            .spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = waiter
            .post("/tx-wait")
            .key(&key)
            .json(tx_body(&tag, 700))
            .spawn();
        let first = first.await.unwrap();
        let first_done = Instant::now();
        let second = second.await.unwrap();
        let woken_after = first_done.elapsed();
        assert_eq!(first.status, 201);
        assert!(second.replayed(), "{:?}", second.body);
        assert_eq!(second.body, first.body);
        assert!(
            woken_after < Duration::from_secs(10),
            "woken {woken_after:?} after the first answered: by re-reading, not by the commit"
        );
        assert_eq!(rows(&pool, &tag).await, 1);
        assert_eq!(executions(&tag), 1);
    }
}

/// 300 concurrent duplicates of one key waiting for it, with a pool of 10
/// connections: they wait without holding connections, so other keys are
/// served meanwhile, and the key runs once.
async fn the_pool_survives_a_storm_of_duplicates<A: Adapter>() {
    let Some((env, pool, _server)) = start::<A>(|b| b.max_connections(10)).await else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let storm: Vec<_> = (0..300)
        .map(|_| {
            env.post("/tx-wait")
                .key(&key)
                .json(tx_body(&tag, 1500))
                .spawn()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let others: Vec<_> = (0..20)
        .map(|i| {
            let tag = format!("{tag}-other-{i}");
            env.post("/tx")
                .key(&unique("o"))
                .json(tx_body(&tag, 0))
                .spawn()
        })
        .collect();
    for other in others {
        let other = other.await.unwrap();
        assert_eq!(
            other.status, 201,
            "another key, during the storm: {:?}",
            other.body
        );
    }
    let answers: Vec<Resp> = futures_util::future::join_all(storm)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        answers.iter().all(|a| a.status == 201),
        "every duplicate gets the result"
    );
    assert_eq!(answers.iter().filter(|a| !a.replayed()).count(), 1);
    assert_eq!(rows(&pool, &tag).await, 1);
    assert_eq!(executions(&tag), 1);
}

fn one_lock(_: &RecordId) -> i64 {
    42
}

/// Every key on one lock id: a request whose key's lock is held for another
/// key is refused (or waits), and then runs and answers with its own
/// response, never the other key's.
async fn colliding_lock_ids_never_share_a_response<A: Adapter>() {
    let Some((env, pool, _server)) = start::<A>(|b| b.lock_ids(one_lock)).await else {
        return;
    };
    let (tag_a, key_a) = (unique("a"), unique("k"));
    let (tag_b, key_b) = (unique("b"), unique("k"));
    let a = env
        .post("/tx")
        .key(&key_a)
        .json(tx_body(&tag_a, 600))
        .spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.post("/tx")
        .key(&key_b)
        .json(tx_body(&tag_b, 0))
        .send()
        .await
        .assert_problem(409, "request-in-progress");
    let b_waiting = env
        .post("/tx-wait")
        .key(&key_b)
        .json(tx_body(&tag_b, 0))
        .spawn();
    let a = a.await.unwrap();
    let b = b_waiting.await.unwrap();
    assert_eq!((a.status, b.status), (201, 201));
    assert!(!b.replayed(), "B ran for itself: {:?}", b.body);
    assert_eq!(a.json()["tag"], tag_a.as_str());
    assert_eq!(b.json()["tag"], tag_b.as_str());
    assert_eq!(
        (rows(&pool, &tag_a).await, rows(&pool, &tag_b).await),
        (1, 1)
    );
}

fn no_lock(_: &RecordId) -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Locks that do not exclude each other (each request its own lock id):
/// two requests of one key both run, and the record's primary key decides:
/// the second to commit finds the first's record, rolls back, and answers
/// with the first's response.
async fn the_primary_key_decides_a_last_moment_race<A: Adapter>() {
    let Some((env, pool, _server)) = start::<A>(|b| b.lock_ids(no_lock)).await else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let first = env.post("/tx").key(&key).json(tx_body(&tag, 300)).spawn();
    let second = env.post("/tx").key(&key).json(tx_body(&tag, 300)).spawn();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.body, second.body, "one response for the key");
    assert_eq!(
        [first.replayed(), second.replayed()]
            .iter()
            .filter(|r| **r)
            .count(),
        1,
        "the loser answers with the winner's response"
    );
    assert_eq!(executions(&tag), 2, "both ran");
    assert_eq!(rows(&pool, &tag).await, 1, "one committed");
}

/// A record that expired but was not swept yet is taken over by the
/// completion's own insert.
async fn an_expired_record_is_taken_over_by_the_insert<A: Adapter>() {
    let Some((env, pool, _server)) =
        start::<A>(|b| b.sweep_interval(Duration::from_secs(3600))).await
    else {
        return;
    };
    let (tag, key) = (unique("t"), unique("k"));
    let old = Arc::new(StoredResponse::new(200, "expired"));
    let owner = OwnerToken::generate();
    let record_id = id("tx", &key);
    let fp = Fingerprint::of_bytes(b"another request");
    env.store
        .claim(&record_id, fp, owner, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(env
        .store
        .complete(&record_id, owner, fp, old, Duration::from_millis(1))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = env
        .post("/tx")
        .key(&key)
        .json(tx_body(&tag, 0))
        .send()
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = env
        .post("/tx")
        .key(&key)
        .json(tx_body(&tag, 0))
        .send()
        .await;
    assert!(again.replayed());
    assert_eq!(rows(&pool, &tag).await, 1);
}

/// The server ends a session idle in its transaction longer than
/// `idle_in_transaction_session_timeout`: the request fails cleanly (503,
/// nothing committed), and the retry runs.
async fn an_ended_session_fails_cleanly_and_the_retry_runs<A: Adapter>() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let options: sqlx::postgres::PgConnectOptions = server.url().parse().unwrap();
    let app_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect_with(options.options([("idle_in_transaction_session_timeout", "300")]))
        .await
        .expect("pool");
    let store = PostgresStore::pool_builder(app_pool)
        .table(postgres_table())
        .build()
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let pool = pool(&server).await;
    let env = Env::with_runtime::<A>(
        AnyStore::postgres(store.clone(), server.clone()),
        Idempotency::new(store),
    )
    .await;
    let (tag, key) = (unique("t"), unique("k"));
    env.post("/tx")
        .key(&key)
        .json(tx_body(&tag, 1000))
        .send()
        .await
        .assert_problem(503, "store-unavailable");
    assert_eq!(rows(&pool, &tag).await, 0, "nothing committed");
    let retry = env
        .post("/tx")
        .key(&key)
        .json(tx_body(&tag, 0))
        .send()
        .await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(rows(&pool, &tag).await, 1);
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
    nothing_is_written_before_the_commit,
    a_waiting_duplicate_is_woken_by_the_commit,
    the_pool_survives_a_storm_of_duplicates,
    colliding_lock_ids_never_share_a_response,
    the_primary_key_decides_a_last_moment_race,
    an_expired_record_is_taken_over_by_the_insert,
    an_ended_session_fails_cleanly_and_the_retry_runs
);
