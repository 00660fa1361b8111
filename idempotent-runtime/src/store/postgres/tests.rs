//! Unit tests of the PostgreSQL store: names, SQL rendering and error
//! mapping without a database, and — on a PostgreSQL cluster of the test's
//! own (the `tests` crate's harness, included) — what only this crate can
//! reach: [`PostgresStore::complete_on`] in a transaction, and how real
//! server errors map. The store as a whole is tested against PostgreSQL in
//! the `tests` crate (`store_contract`, `conformance_*_postgres`,
//! `postgres_store`, `postgres_faults`).

use std::sync::Arc;
use std::time::Duration;

use super::conn::{classify, Failure};
use super::sql::{self, millis, Statements, TableName, MAX_EXPIRY_MS};
use super::tasks::parse_digest;
use super::{Commit, PostgresStore, TxClaim};
use crate::store::{Claim, Store, StoreError};
use crate::{Fingerprint, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse};

#[allow(unreachable_pub, dead_code)]
#[path = "../../../../tests/src/postgres_server.rs"]
mod postgres_server;

#[test]
fn table_names_are_lowercase_identifiers() {
    for ok in ["idempotency_records", "_x", "a1", "app.records", "s_1.t_2"] {
        let name = TableName::parse(ok).unwrap();
        assert_eq!(name.to_string(), ok);
    }
    for bad in [
        "",
        "Records",
        "1x",
        "a-b",
        "a b",
        "x;drop table y",
        "\"x\"",
        "a.b.c",
        ".x",
        "x.",
        "é",
    ] {
        assert!(TableName::parse(bad).is_err(), "{bad:?}");
    }
    // The channel `<name>_changed` and the index `<table>_expires_at` must
    // fit PostgreSQL's 63-byte names.
    assert!(TableName::parse(&"a".repeat(52)).is_ok());
    assert!(TableName::parse(&"a".repeat(53)).is_err());
    assert!(TableName::parse(&format!("s.{}", "a".repeat(53))).is_err());
    assert!(TableName::parse(&format!("{}.t", "s".repeat(54))).is_err());
    assert_eq!(
        TableName::parse("app.records").unwrap().channel(),
        "app.records_changed"
    );
}

#[test]
fn the_migration_is_the_file_with_the_configured_names() {
    assert!(sql::MIGRATION.contains("CREATE TABLE IF NOT EXISTS idempotency_records ("));
    let m = sql::migration(&TableName::parse("app.records").unwrap(), 30_000);
    assert!(m.contains("CREATE TABLE IF NOT EXISTS \"app\".\"records\" ("));
    assert!(m.contains("CREATE INDEX IF NOT EXISTS \"records_expires_at\""));
    assert!(m.contains("ON \"app\".\"records\" (expires_at)"));
    assert!(!m.contains("idempotency_records"));
    assert!(m.contains("pg_advisory_xact_lock") && m.contains("statement_timeout = 30000"));
}

/// The default name, and any name containing it: the index name is
/// replaced once, not again inside itself.
#[test]
fn the_migration_of_the_default_name_names_its_index_once() {
    for (table, index) in [
        ("idempotency_records", "\"idempotency_records_expires_at\""),
        (
            "my_idempotency_records",
            "\"my_idempotency_records_expires_at\"",
        ),
    ] {
        let m = sql::migration(&TableName::parse(table).unwrap(), 30_000);
        assert!(
            m.contains(&format!("CREATE INDEX IF NOT EXISTS {index}")),
            "{m}"
        );
        assert!(m.contains(&format!("ON \"{table}\" (expires_at)")), "{m}");
        assert!(!m.contains("\"\""), "a name quoted twice: {m}");
    }
}

#[test]
fn statements_name_the_table_quoted() {
    let s = Statements::new(&TableName::parse("order").unwrap());
    for sql in [
        &s.claim,
        &s.renew,
        &s.complete,
        &s.release,
        &s.get,
        &s.delete,
        &s.watch,
        &s.sweep,
    ] {
        assert!(sql.contains("\"order\""), "{sql}");
        assert!(!sql.contains('{'), "{sql}");
    }
}

#[test]
fn expiries_are_clamped() {
    assert_eq!(millis(Duration::ZERO), 1);
    assert_eq!(millis(Duration::from_millis(1500)), 1500);
    assert_eq!(millis(Duration::MAX), MAX_EXPIRY_MS);
}

#[test]
fn notification_payloads_parse_back_to_digests() {
    let id = RecordId::new("s", None, &IdempotencyKey::parse(b"k").unwrap());
    assert_eq!(parse_digest(&id.digest_hex()), Some(*id.digest()));
    assert_eq!(
        parse_digest(&id.digest_hex().to_uppercase()),
        Some(*id.digest())
    );
    assert_eq!(parse_digest("abc"), None);
    assert_eq!(parse_digest(&"zz".repeat(32)), None);
}

#[test]
fn client_side_errors_map_to_503s() {
    use std::io::{Error, ErrorKind};
    assert!(matches!(
        classify(sqlx::Error::PoolTimedOut),
        Failure::Other(StoreError::Timeout)
    ));
    assert!(matches!(
        classify(sqlx::Error::Io(Error::from(ErrorKind::TimedOut))),
        Failure::Other(StoreError::Timeout)
    ));
    for kind in [
        ErrorKind::ConnectionReset,
        ErrorKind::UnexpectedEof,
        ErrorKind::BrokenPipe,
    ] {
        assert!(matches!(
            classify(sqlx::Error::Io(Error::from(kind))),
            Failure::Broken(_)
        ));
    }
    assert!(matches!(
        classify(sqlx::Error::PoolClosed),
        Failure::Other(StoreError::Unavailable(_))
    ));
}

/// A store on a cluster of the test's own, or `None` (skipped) without
/// PostgreSQL outside CI.
async fn store() -> Option<(Arc<postgres_server::PostgresServer>, PostgresStore)> {
    store_with(|b| b).await
}

/// As [`store`], with the builder's settings changed by `configure`.
async fn store_with(
    configure: impl FnOnce(super::PostgresStoreBuilder) -> super::PostgresStoreBuilder,
) -> Option<(Arc<postgres_server::PostgresServer>, PostgresStore)> {
    let server = postgres_server::PostgresServer::shared()?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let table = format!(
        "unit_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let store = configure(PostgresStore::builder(server.url()).table(table))
        .build()
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    Some((server, store))
}

fn id() -> RecordId {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let key = format!("k{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    RecordId::new(
        "unit",
        None,
        &IdempotencyKey::parse(key.as_bytes()).unwrap(),
    )
}

/// The record read written out with its values (a waiting duplicate's
/// flight) is served by the primary key: a scope the planner could not match
/// with the key made it read the whole table. Sequential and bitmap
/// scans are switched off, so only a usable primary key gives an index scan
/// on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_out_read_uses_the_primary_key() {
    let Some((_server, store)) = store().await else {
        return;
    };
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::raw_sql("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let read = store.inner.table.read_record(&id());
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {read}"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    let pkey = format!("Index Scan using {}_pkey", store.table());
    assert!(plan.contains(&pkey), "{plan}");
    assert!(plan.contains("Index Cond: ((scope = "), "{plan}");
    conn.close().await.unwrap();
}

/// Scopes travel as escape-string literals: quotes, backslashes and
/// non-ASCII text arrive unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_literals_arrive_unchanged() {
    assert_eq!(sql::text_literal(r"it's \n"), r"E'it''s \\n'");
    let Some((_server, store)) = store().await else {
        return;
    };
    for text in [
        "payments",
        r"it's \n",
        "''; DROP TABLE x; --",
        "é€ 😀",
        r"\'",
    ] {
        let back: String = sqlx::query_scalar(&format!("SELECT {}", sql::text_literal(text)))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(back, text);
    }
}

/// Errors PostgreSQL raises map as the life cycle needs: the server's
/// statement timeout is a timeout, serialization failures, deadlocks and
/// lock timeouts are 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_map_to_503s() {
    let Some((_server, store)) = store().await else {
        return;
    };
    let raise = |code: &str| {
        format!("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$")
    };
    for code in ["40001", "40P01", "55P03", "42P01", "53300"] {
        let e = sqlx::raw_sql(&raise(code))
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(
            matches!(classify(e), Failure::Other(StoreError::Unavailable(ref why)) if why.contains(code)),
            "{code}"
        );
    }
    let e = sqlx::raw_sql("SET LOCAL statement_timeout = 50; SELECT pg_sleep(1)")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(matches!(classify(e), Failure::Other(StoreError::Timeout)));
}

/// `complete_on` writes in the caller's transaction: nothing if it rolls
/// back (the claim stays), the record if it commits; fenced like
/// `complete`; and a duplicate waiting for the record is notified on commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_on_commits_with_the_transaction() {
    let Some((server, store)) = store().await else {
        return;
    };
    let (id, owner) = (id(), OwnerToken::generate());
    let fp = Fingerprint::of_bytes(b"tx");
    let long = Duration::from_secs(60);
    let response = Arc::new(StoredResponse::new(201, "paid"));
    assert_eq!(
        store.claim(&id, fp, owner, long).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(store.statement_timeout(), super::DEFAULT_STATEMENT_TIMEOUT);

    let mut tx = store.pool().begin().await.unwrap();
    assert!(store
        .complete_on(&mut tx, &id, owner, fp, response.clone(), long)
        .await
        .unwrap());
    tx.rollback().await.unwrap();
    assert!(
        matches!(store.get(&id).await.unwrap(), Some(Record::InProgress { owner: o, .. }) if o == owner),
        "rolled back: the claim stays"
    );

    // Another owner is fenced out inside a transaction too.
    let mut tx = store.pool().begin().await.unwrap();
    assert!(!store
        .complete_on(
            &mut tx,
            &id,
            OwnerToken::generate(),
            fp,
            response.clone(),
            long
        )
        .await
        .unwrap());
    tx.commit().await.unwrap();

    let mut listener = sqlx::postgres::PgListener::connect(server.url())
        .await
        .unwrap();
    listener.listen(store.channel()).await.unwrap();
    store.watch(&id, long).await.unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    assert!(store
        .complete_on(&mut tx, &id, owner, fp, response.clone(), long)
        .await
        .unwrap());
    let early = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await;
    assert!(early.is_err(), "not notified before the commit");
    tx.commit().await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("notified on commit")
        .unwrap();
    assert_eq!(n.payload(), id.digest_hex());
    match store.get(&id).await.unwrap() {
        Some(Record::Completed { response: r, .. }) => assert_eq!(*r, *response),
        other => panic!("{other:?}"),
    }
}

/// A replay of a key this process committed takes no transaction (one
/// read); a key committed by another process is replayed through the
/// in-transaction claim once, and then remembered too; a remembered key
/// whose record is gone is claimed as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_of_remembered_keys_take_no_transaction() {
    use std::sync::atomic::Ordering::Relaxed;
    let Some((server, store)) = store().await else {
        return;
    };
    let other = PostgresStore::builder(server.url())
        .table(store.table())
        .build()
        .await
        .expect("connect");
    let fp = Fingerprint::of_bytes(b"tx");
    let response = Arc::new(StoredResponse::new(201, "paid"));
    let commit = |store: &PostgresStore, id: RecordId| {
        let (store, response) = (store.clone(), response.clone());
        async move {
            let TxClaim::Acquired(held) = store.claim_in_transaction(&id, None).await.unwrap()
            else {
                panic!("a fresh key is acquired");
            };
            let commit = held
                .commit_with_record(&id, fp, response, Duration::from_secs(60))
                .await
                .unwrap();
            assert!(matches!(commit, Commit::Written));
        }
    };
    let replays = |id: RecordId| {
        let store = store.clone();
        async move {
            for _ in 0..3 {
                let claim = store.claim_in_transaction(&id, None).await.unwrap();
                assert!(matches!(claim, TxClaim::Existing(Record::Completed { .. })));
            }
        }
    };
    let begun = || store.inner.begun.load(Relaxed);

    let here = id();
    commit(&store, here.clone()).await;
    assert_eq!(begun(), 1);
    replays(here.clone()).await;
    assert_eq!(begun(), 1, "replays of a key committed here begin nothing");

    let elsewhere = id();
    commit(&other, elsewhere.clone()).await;
    replays(elsewhere).await;
    assert_eq!(
        begun(),
        2,
        "only the first replay here begins a transaction"
    );

    assert!(store.delete(&here).await.unwrap());
    let TxClaim::Acquired(held) = store.claim_in_transaction(&here, None).await.unwrap() else {
        panic!("a deleted key is claimed again");
    };
    held.rollback().await;
    assert_eq!(begun(), 3);
}

/// Every key on one lock id: a fresh key whose lock id is remembered for
/// another key reads its own record first, finds none, and is claimed; the
/// remembered key still replays its own response, never the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_lock_id_never_answers_for_another_key() {
    fn one_lock(_: &RecordId) -> i64 {
        42
    }
    let Some((_server, store)) = store_with(|b| b.lock_ids(one_lock)).await else {
        return;
    };
    let fp = Fingerprint::of_bytes(b"tx");
    let (a, b) = (id(), id());
    let response = |body: &'static str| Arc::new(StoredResponse::new(201, body));
    let TxClaim::Acquired(held) = store.claim_in_transaction(&a, None).await.unwrap() else {
        panic!("a fresh key is acquired");
    };
    let commit = held
        .commit_with_record(&a, fp, response("a"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(commit, Commit::Written));
    assert!(store.inner.seen.contains(42));

    let TxClaim::Acquired(held) = store.claim_in_transaction(&b, None).await.unwrap() else {
        panic!("another key on the remembered lock id is claimed, not answered");
    };
    held.rollback().await;
    match store.claim_in_transaction(&a, None).await.unwrap() {
        TxClaim::Existing(Record::Completed { response: r, .. }) => {
            assert_eq!(*r, *response("a"))
        }
        _ => panic!("the remembered key replays its own record"),
    }
}
