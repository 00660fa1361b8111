//! PostgreSQL faults, through real HTTP on both adapters and on the store
//! itself: a stopped database, a restart with handlers in flight, a full
//! pool, a blocked statement, injected serialization/deadlock/lock errors
//! and an unreadable record. Each ends in a 503 (500 for the unreadable
//! record) within the configured bounds and without running the handler;
//! none ever runs a key twice; service comes back without rebuilding the
//! store.

use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::{Claim, Store, StoreError};
use idempotent_runtime::{Fingerprint, IdempotencyKey, OwnerToken, RecordId};
use idempotent_tests::actix_app::Actix;
use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::stores::{postgres_store, postgres_table};
use idempotent_tests::{unique, Adapter, AnyStore, Env};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::time::Instant;

/// Short bounds, so that each failure shows quickly.
const STATEMENT: Duration = Duration::from_millis(400);
const ACQUIRE: Duration = Duration::from_millis(400);
/// What a failing operation may take at most: both bounds, and slack for a
/// loaded machine.
const FAILS_WITHIN: Duration = Duration::from_secs(3);

/// A server of adapter `A` on a cluster of the test's own (which it may stop),
/// over a store with the short bounds; the store too, for direct calls.
async fn short_bounds<A: Adapter>() -> Option<(Arc<PostgresServer>, PostgresStore, Env)> {
    let server = PostgresServer::for_test()?;
    let store = postgres_store(&server, |b| {
        b.statement_timeout(STATEMENT).acquire_timeout(ACQUIRE)
    })
    .await;
    let env = Env::start::<A>(AnyStore::postgres(store.clone(), server.clone())).await;
    Some((server, store, env))
}

fn id(key: &str) -> RecordId {
    RecordId::new(
        "default",
        None,
        &IdempotencyKey::parse(key.as_bytes()).unwrap(),
    )
}

fn is_503(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_) | StoreError::Timeout)
}

/// Posts until the answer is neither 503 nor 409, for at most `limit`.
async fn until_served(
    env: &Env,
    path: &str,
    key: &str,
    body: serde_json::Value,
    limit: Duration,
) -> idempotent_tests::Resp {
    let until = Instant::now() + limit;
    loop {
        let r = env.post(path).key(key).json(body.clone()).send().await;
        if (r.status != 503 && r.status != 409) || Instant::now() >= until {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database stops: requests get 503 within the bounds and do not run,
/// store operations fail the same way; it starts again: service comes back
/// on the same store, nothing rebuilt.
async fn database_down_then_back<A: Adapter>() {
    let Some((server, store, env)) = short_bounds::<A>().await else {
        return;
    };
    let tag = unique("t");
    let body = json!({"tag": tag});
    let r = env
        .post("/default")
        .key(&unique("k"))
        .json(body.clone())
        .send()
        .await;
    assert_eq!(r.status, 201);

    server.stop();
    let started = Instant::now();
    let r = env
        .post("/default")
        .key(&unique("k"))
        .json(body.clone())
        .send()
        .await;
    r.assert_problem(503, "store-unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(
        started.elapsed() < FAILS_WITHIN,
        "fails fast: {:?}",
        started.elapsed()
    );
    assert_eq!(
        executions(&tag),
        1,
        "the handler did not run without its store"
    );
    for op in 0..3 {
        let started = Instant::now();
        let key = unique("k");
        let e = match op {
            0 => store
                .claim(
                    &id(&key),
                    Fingerprint::of_bytes(b"x"),
                    OwnerToken::generate(),
                    STATEMENT,
                )
                .await
                .map(drop),
            1 => store.get(&id(&key)).await.map(drop),
            _ => store.delete(&id(&key)).await.map(drop),
        }
        .unwrap_err();
        assert!(is_503(&e), "{e}");
        assert!(
            started.elapsed() < FAILS_WITHIN,
            "op {op}: {:?}",
            started.elapsed()
        );
    }

    server.start_again();
    let key = unique("k");
    let r = until_served(
        &env,
        "/default",
        &key,
        body.clone(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.status, 201, "service back within 10 s of the database");
    assert!(env
        .post("/default")
        .key(&key)
        .json(body)
        .send()
        .await
        .replayed());
    assert_eq!(executions(&tag), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_then_back_axum() {
    database_down_then_back::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_then_back_actix() {
    database_down_then_back::<Actix>().await;
}

/// The database restarts (as after a crash) while handlers run: their
/// completions fail, are retried in the background and land once it is
/// back; duplicates meanwhile are refused (409 or 503), never run; every
/// key ran exactly once and is replayed afterwards.
async fn restart_with_handlers_in_flight<A: Adapter>() {
    let Some((server, _, env)) = short_bounds::<A>().await else {
        return;
    };
    let keys: Vec<(String, String)> = (0..4).map(|_| (unique("k"), unique("t"))).collect();
    let body = |tag: &str| json!({"tag": tag, "delay_ms": 1500});
    let first: Vec<_> = keys
        .iter()
        .map(|(k, t)| env.post("/default").key(k).json(body(t)).spawn())
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;

    server.stop();
    // Duplicates while the database is down.
    for (k, t) in &keys {
        let r = env.post("/default").key(k).json(body(t)).send().await;
        assert!(
            r.status == 503 || r.status == 409,
            "{} {:?}",
            r.status,
            r.body
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again();

    let mut answers = Vec::new();
    for h in first {
        let r = h.await.unwrap();
        assert_eq!(r.status, 201, "the clients get their handler's answer");
        answers.push(r);
    }
    for ((k, t), first) in keys.iter().zip(&answers) {
        let r = until_served(&env, "/default", k, body(t), Duration::from_secs(15)).await;
        assert!(r.replayed(), "{k}: {} {:?}", r.status, r.body);
        assert_eq!(r.body, first.body);
        assert_eq!(executions(t), 1, "{k} ran once");
    }
}

/// The same with handlers writing through `Tx`: their transactions die with
/// their connections, so no first attempt commits a write without its
/// record. Whatever the first clients were answered, every key ends with
/// exactly one committed write, which its retries replay.
async fn restart_with_tx_handlers_in_flight<A: Adapter>() {
    let Some((server, _, env)) = short_bounds::<A>().await else {
        return;
    };
    let pool = PgPool::connect(server.url()).await.expect("connect");
    sqlx::query("CREATE TABLE tx_writes (tag text NOT NULL)")
        .execute(&pool)
        .await
        .expect("create tx_writes");
    let keys: Vec<(String, String)> = (0..4).map(|_| (unique("k"), unique("t"))).collect();
    let body = |tag: &str| json!({"tag": tag, "delay_ms": 1500});
    let first: Vec<_> = keys
        .iter()
        .map(|(k, t)| env.post("/tx").key(k).json(body(t)).spawn())
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again();

    let mut answers = Vec::new();
    for h in first {
        answers.push(h.await.unwrap());
    }
    for ((k, t), first) in keys.iter().zip(&answers) {
        let served = until_served(&env, "/tx", k, body(t), Duration::from_secs(15)).await;
        assert_eq!(served.status, 201, "{k}: {:?}", served.body);
        let again = env.post("/tx").key(k).json(body(t)).send().await;
        assert!(again.replayed(), "{k}: {} {:?}", again.status, again.body);
        assert_eq!(again.body, served.body);
        if first.status == 201 {
            assert_eq!(
                first.body, served.body,
                "{k}: the first answer is the stored one"
            );
        }
        let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM tx_writes WHERE tag = $1")
            .bind(t)
            .fetch_one(&pool)
            .await
            .expect("count rows");
        assert_eq!(
            committed, 1,
            "{k}: one committed write (first answer {})",
            first.status
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_tx_handlers_in_flight_axum() {
    restart_with_tx_handlers_in_flight::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_tx_handlers_in_flight_actix() {
    restart_with_tx_handlers_in_flight::<Actix>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_handlers_in_flight_axum() {
    restart_with_handlers_in_flight::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_handlers_in_flight_actix() {
    restart_with_handlers_in_flight::<Actix>().await;
}

/// Every connection of the pool is taken (here by the application, whose
/// pool the store shares): a request waits at most the acquire timeout and
/// gets 503, not a hang; a connection freed while a request waits serves
/// it, and service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_is_503_not_a_hang() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(server.url())
        .await
        .unwrap();
    let store = PostgresStore::pool_builder(pool.clone())
        .table(postgres_table())
        .statement_timeout(STATEMENT)
        .acquire_timeout(ACQUIRE)
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let env = Env::start::<Axum>(AnyStore::postgres(store.clone(), server)).await;
    let tag = unique("t");
    let body = json!({"tag": tag});
    assert_eq!(
        env.post("/default")
            .key(&unique("k"))
            .json(body.clone())
            .send()
            .await
            .status,
        201
    );

    let held = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    let started = Instant::now();
    let r = env
        .post("/default")
        .key(&unique("k"))
        .json(body.clone())
        .send()
        .await;
    r.assert_problem(503, "store-unavailable");
    assert!(started.elapsed() < FAILS_WITHIN, "{:?}", started.elapsed());
    let e = store.get(&id(&unique("k"))).await.unwrap_err();
    assert!(matches!(e, StoreError::Timeout), "{e}");
    assert_eq!(executions(&tag), 1);

    // A connection freed while a request waits for one serves it: the
    // wait ends with the release, not with a retry later.
    let (r, ()) = tokio::join!(
        env.post("/default")
            .key(&unique("k"))
            .json(body.clone())
            .send(),
        async {
            tokio::time::sleep(ACQUIRE / 4).await;
            drop(held);
        }
    );
    assert_eq!(r.status, 201);
    assert_eq!(executions(&tag), 2);
    let r = until_served(&env, "/default", &unique("k"), body, Duration::from_secs(5)).await;
    assert_eq!(r.status, 201);
}

/// A statement that cannot proceed (the table locked by someone else) is
/// cancelled by the server at the statement timeout: the claim answers
/// `Timeout` (an HTTP request 503) and, the lock gone, no claim appears
/// later: it did not wait on, queued, to run after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_statement_is_cancelled_by_the_server() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| {
        b.statement_timeout(STATEMENT).acquire_timeout(ACQUIRE)
    })
    .await;
    let env = Env::start::<Axum>(AnyStore::postgres(store.clone(), server.clone())).await;
    let admin = PgPool::connect(server.url()).await.unwrap();
    let mut lock = admin.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        store.table()
    ))
    .execute(&mut *lock)
    .await
    .unwrap();

    let key = unique("k");
    let started = Instant::now();
    let claim = store
        .claim(
            &id(&key),
            Fingerprint::of_bytes(b"x"),
            OwnerToken::generate(),
            Duration::from_secs(60),
        )
        .await;
    assert!(matches!(claim, Err(StoreError::Timeout)), "{claim:?}");
    assert!(started.elapsed() < FAILS_WITHIN, "{:?}", started.elapsed());
    let tag = unique("t");
    let r = env
        .post("/default")
        .key(&unique("k"))
        .json(json!({"tag": tag}))
        .send()
        .await;
    r.assert_problem(503, "store-unavailable");
    assert_eq!(executions(&tag), 0);

    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {} WHERE expires_at > now()",
        store.table()
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(rows, 0, "the cancelled claim never ran");
    assert_eq!(
        store
            .claim(
                &id(&key),
                Fingerprint::of_bytes(b"x"),
                OwnerToken::generate(),
                Duration::from_secs(60)
            )
            .await
            .unwrap(),
        Claim::Acquired,
        "the store's connections are fine afterwards"
    );
}

/// Serialization failures, deadlocks and lock timeouts (injected by a
/// trigger, as PostgreSQL raises them) are 503s the client may retry,
/// never 500s, and the handler does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_deadlock_and_lock_failures_are_503() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| b).await;
    let env = Env::start::<Actix>(AnyStore::postgres(store.clone(), server.clone())).await;
    let admin = PgPool::connect(server.url()).await.unwrap();
    let table = store.table();
    for code in ["40001", "40P01", "55P03"] {
        sqlx::raw_sql(&format!(
            "CREATE OR REPLACE FUNCTION {table}_fail() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$;
             CREATE OR REPLACE TRIGGER fail BEFORE INSERT OR UPDATE ON {table}
               FOR EACH ROW EXECUTE FUNCTION {table}_fail();"
        ))
        .execute(&admin)
        .await
        .unwrap();
        let tag = unique("t");
        let r = env
            .post("/default")
            .key(&unique("k"))
            .json(json!({"tag": tag}))
            .send()
            .await;
        r.assert_problem(503, "store-unavailable");
        assert_eq!(executions(&tag), 0, "{code}");
        let e = store
            .claim(
                &id(&unique("k")),
                Fingerprint::of_bytes(b"x"),
                OwnerToken::generate(),
                Duration::from_secs(60),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Unavailable(why) if why.contains(code)),
            "{e}"
        );
    }
}

/// A record that cannot be decoded is a clear error (500
/// `record-unreadable`, `StoreError::Corrupt`), never a panic; other keys
/// keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_is_a_clear_error() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| b).await;
    let key = unique("k");
    let rid = id(&key);
    let admin = PgPool::connect(server.url()).await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {} (scope, digest, owner, record, expires_at)
         VALUES ($1, $2, NULL, '\\x0102676172626167'::bytea, now() + interval '1 hour')",
        store.table()
    ))
    .bind(rid.scope())
    .bind(&rid.digest()[..])
    .execute(&admin)
    .await
    .unwrap();
    assert!(matches!(store.get(&rid).await, Err(StoreError::Corrupt(_))));
    let env = Env::start::<Axum>(AnyStore::postgres(store, server)).await;
    let tag = unique("t");
    let r = env
        .post("/default")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await;
    r.assert_problem(500, "record-unreadable");
    assert_eq!(executions(&tag), 0);
    assert_eq!(
        env.post("/default")
            .key(&unique("k"))
            .json(json!({"tag": tag}))
            .send()
            .await
            .status,
        201
    );
}

/// The wake-up listener reconnects by itself after a restart: a waiter in
/// another process (re-reading only every 60 s) is still woken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_survive_a_restart() {
    use idempotent_runtime::{HandlerConfig, Idempotency, OnConflict, StoredResponse};
    static WAITING: HandlerConfig =
        HandlerConfig::new("pg-wait").on_conflict(OnConflict::Wait(Duration::from_secs(50)));
    let Some(server) = PostgresServer::for_test() else {
        return;
    };
    let a = postgres_store(&server, |b| b).await;
    let b = PostgresStore::builder(server.url())
        .table(a.table())
        .build()
        .await
        .unwrap();
    let runner = Idempotency::builder(a.clone())
        .wait_recheck(Duration::from_millis(500))
        .build();
    let waiter = Idempotency::builder(b)
        .wait_recheck(Duration::from_secs(60))
        .build();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    // The listener notices and reconnects (it retries every 500 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The runner's own connections are fresh again too.
    let until = Instant::now() + Duration::from_secs(10);
    while a.get(&id(&unique("k"))).await.is_err() {
        assert!(Instant::now() < until, "the store is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = IdempotencyKey::parse(unique("k").as_bytes()).unwrap();
    let fp = Fingerprint::of_bytes(b"pay");
    let first = {
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&WAITING, None, &key, fp, || async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    StoredResponse::new(201, "paid once")
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        waiter.run(&WAITING, None, &key, fp, || async {
            StoredResponse::new(201, "paid twice")
        }),
    )
    .await
    .expect("woken by the notification after the restart")
    .expect("an answer");
    assert!(second.is_replay());
    assert!(!first.await.unwrap().unwrap().is_replay());
}
