//! What the PostgreSQL store does beyond the store contract: its migration,
//! its sweeper, and wake-ups across processes through `LISTEN`/`NOTIFY`
//! (sent only for records someone waits for).

use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::{Claim, Store};
use idempotent_runtime::{
    Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, OnConflict, OwnerToken, RecordId,
    StoredResponse,
};
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::stores::{postgres_store, postgres_table};
use idempotent_tests::unique;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

static WAITING: HandlerConfig =
    HandlerConfig::new("pg-wait").on_conflict(OnConflict::Wait(Duration::from_secs(50)));

fn id(scope: &str) -> RecordId {
    RecordId::new(
        scope,
        None,
        &IdempotencyKey::parse(unique("k").as_bytes()).unwrap(),
    )
}

async fn admin(server: &PostgresServer) -> PgPool {
    PgPool::connect(server.url()).await.expect("connect")
}

/// Rows in `table`, live or not.
async fn rows(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `migrate` may run at every start, from several processes at once; it
/// creates the table and the expiry index the migration file describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_repeatable_and_concurrent() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let table = postgres_table();
    let build = || async {
        PostgresStore::builder(server.url())
            .table(&table)
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (build().await, build().await);
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    a.migrate().await.unwrap();
    let pool = admin(&server).await;
    let index: Option<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexname = $1 || '_expires_at'",
    )
    .bind(&table)
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert!(
        index.is_some_and(|d| d.contains("(expires_at)")),
        "the expiry index exists"
    );
    // And the store works on it.
    let (id, owner) = (id("m"), OwnerToken::generate());
    let fp = Fingerprint::of_bytes(b"m");
    let long = Duration::from_secs(60);
    assert_eq!(
        a.claim(&id, fp, owner, long).await.unwrap(),
        Claim::Acquired
    );
}

/// A schema-qualified table works, and names that are not plain lowercase
/// identifiers are refused before anything reaches the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_names_are_validated_and_may_have_a_schema() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    for bad in [
        "Records",
        "1records",
        "re-cords",
        "r;drop table x",
        "a.b.c",
        "",
    ] {
        let e = PostgresStore::builder(server.url())
            .table(bad)
            .build()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("table name"), "{bad:?}: {e}");
    }
    let schema = postgres_table();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin(&server).await)
        .await
        .unwrap();
    let store = PostgresStore::builder(server.url())
        .table(format!("{schema}.records"))
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (id, owner) = (id("s"), OwnerToken::generate());
    let fp = Fingerprint::of_bytes(b"s");
    let long = Duration::from_secs(60);
    assert_eq!(
        store.claim(&id, fp, owner, long).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(store.channel(), format!("{schema}.records_changed"));
}

/// Expired claims and records are deleted by the background sweeper; live
/// ones, and expired ones someone still waits for, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_deletes_expired_rows_only() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| b.sweep_interval(Duration::from_millis(200))).await;
    let fp = Fingerprint::of_bytes(b"x");
    let short = Duration::from_millis(100);
    let long = Duration::from_secs(60);
    for _ in 0..3 {
        store
            .claim(&id("sw"), fp, OwnerToken::generate(), short)
            .await
            .unwrap();
    }
    let done = id("sw");
    let owner = OwnerToken::generate();
    store.claim(&done, fp, owner, long).await.unwrap();
    store
        .complete(
            &done,
            owner,
            fp,
            Arc::new(StoredResponse::new(201, "kept")),
            long,
        )
        .await
        .unwrap();
    // Released, but watched for a while: the mark must outlive the claim.
    let watched = id("sw");
    let o = OwnerToken::generate();
    store.claim(&watched, fp, o, long).await.unwrap();
    store
        .watch(&watched, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(store.release(&watched, o).await.unwrap());

    let pool = admin(&server).await;
    let table = store.table();
    assert_eq!(rows(&pool, &table).await, 5);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while rows(&pool, &table).await != 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "the three expired claims are swept within 10 s, the rest kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.get(&done).await.unwrap().is_some());
    // Nothing left to sweep by hand either.
    assert_eq!(store.sweep().await.unwrap(), 0);
}

async fn runtime_on(store: PostgresStore, recheck: Duration) -> Idempotency {
    Idempotency::builder(store).wait_recheck(recheck).build()
}

/// Two stores on one table stand for two processes. The waiter re-reads
/// only every 60 s on its own, so answering within 20 s means the
/// notification woke it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_in_another_process_is_woken_by_the_notification() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let a = postgres_store(&server, |b| b).await;
    let b = PostgresStore::builder(server.url())
        .table(a.table())
        .build()
        .await
        .unwrap();
    let runner = runtime_on(a, Duration::from_millis(500)).await;
    let waiter = runtime_on(b, Duration::from_secs(60)).await;
    // Let the waiter's listener settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = IdempotencyKey::parse(unique("k").as_bytes()).unwrap();
    let fp = Fingerprint::of_bytes(b"pay 5");
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
    .expect("woken by the notification, long before the 60 s re-read")
    .expect("an answer");
    assert!(second.is_replay());
    assert_eq!(second.response().body.as_deref(), Some(&b"paid once"[..]));
    assert!(!first.await.unwrap().unwrap().is_replay());
}

/// Notifications go out for watched records only (a NOTIFY per completion
/// would wake every process's listener once per request), with the
/// record's digest in hex; a release and a delete notify too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_watched_changes_are_notified() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| b).await;
    let mut listener = PgListener::connect(server.url()).await.unwrap();
    listener.listen(store.channel()).await.unwrap();
    let fp = Fingerprint::of_bytes(b"n");
    let long = Duration::from_secs(60);
    let response = || Arc::new(StoredResponse::new(201, "ok"));

    // Nobody watches: completed, released, deleted, and not a word.
    for _ in 0..5 {
        let (done, owner) = (id("n"), OwnerToken::generate());
        store.claim(&done, fp, owner, long).await.unwrap();
        assert!(store
            .complete(&done, owner, fp, response(), long)
            .await
            .unwrap());
        assert!(store.delete(&done).await.unwrap());
        let (released, owner) = (id("n"), OwnerToken::generate());
        store.claim(&released, fp, owner, long).await.unwrap();
        assert!(store.release(&released, owner).await.unwrap());
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(quiet.is_err(), "nothing notified: {quiet:?}");

    // Watched: each change is notified once, with the digest.
    let (id, owner) = (id("n"), OwnerToken::generate());
    store.claim(&id, fp, owner, long).await.unwrap();
    store.watch(&id, Duration::from_secs(10)).await.unwrap();
    assert!(store
        .complete(&id, owner, fp, response(), long)
        .await
        .unwrap());
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("notified")
        .unwrap();
    assert_eq!(n.payload(), id.digest_hex());
    assert!(store.delete(&id).await.unwrap());
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("delete notified")
        .unwrap();
    assert_eq!(n.payload(), id.digest_hex());
    // The mark outlived the deleted record: the next claim's release is
    // notified as well.
    let owner = OwnerToken::generate();
    assert_eq!(
        store.claim(&id, fp, owner, long).await.unwrap(),
        Claim::Acquired
    );
    assert!(store.release(&id, owner).await.unwrap());
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("release notified")
        .unwrap();
    assert_eq!(n.payload(), id.digest_hex());
}

/// A watch before any record exists still catches the first completion,
/// and a short watch never shortens a longer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_marks_only_ever_lengthen() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| b).await;
    let mut listener = PgListener::connect(server.url()).await.unwrap();
    listener.listen(store.channel()).await.unwrap();
    let (id, owner) = (id("w"), OwnerToken::generate());
    let fp = Fingerprint::of_bytes(b"w");
    let long = Duration::from_secs(60);
    store.watch(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap(), None, "a mark is no record");
    store.watch(&id, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        store.claim(&id, fp, owner, long).await.unwrap(),
        Claim::Acquired
    );
    assert!(store
        .complete(
            &id,
            owner,
            fp,
            Arc::new(StoredResponse::new(201, "ok")),
            long
        )
        .await
        .unwrap());
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the 30 s mark still stands")
        .unwrap();
    assert_eq!(n.payload(), id.digest_hex());
}

/// `close` ends everything the store holds in the database: its pool's
/// connections and its listener's (a test server that never stops must not
/// hold them for the rest of the process); operations fail afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_every_connection() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let name = postgres_table();
    let url = format!("{}?application_name={name}", server.url());
    let store = PostgresStore::builder(url)
        .table(&name)
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let runtime = Idempotency::new(store.clone());
    let fp = Fingerprint::of_bytes(b"c");
    let outcome = runtime
        .run(
            &WAITING,
            None,
            &IdempotencyKey::parse(b"c").unwrap(),
            fp,
            || async { StoredResponse::new(201, "ok") },
        )
        .await
        .unwrap();
    assert!(!outcome.is_replay());
    let pool = admin(&server).await;
    let sessions = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while sessions().await < 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "pool and listener connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while sessions().await > 0 {
        assert!(tokio::time::Instant::now() < until, "every session closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.get(&id("c")).await.is_err());
    drop(runtime);
}
