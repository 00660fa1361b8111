//! Stored responses sealed at rest (feature `encryption`), over every store
//! and through every door: the store holds no byte of a response, replays
//! open it, keys rotate, and a record that does not open (altered, a wrong
//! key, an unknown key id, no keys at all) answers 500 `record-unreadable`
//! without running the handler again.

use std::sync::atomic::{AtomicU64, Ordering};

use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::store::StoreError;
use idempotent_runtime::{
    idempotent, Idempotency, IdempotencyError, IdempotencyKey, KeyRing, Record, RecordId,
};
use idempotent_tests::actix_app::Actix;
use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::grpc_app::{self, pb::CreateRequest};
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::stores::StoreFactory;
use idempotent_tests::{unique, Adapter, AnyStore, Env};
use serde_json::json;

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];

fn ring(id: &str, key: [u8; 32]) -> KeyRing {
    KeyRing::new(id, key).expect("a key ring")
}

fn sealed(store: &AnyStore, ring: KeyRing) -> Idempotency {
    Idempotency::builder(store.unguarded())
        .encryption(ring)
        .build()
}

fn record_id(scope: &str, key: &str) -> RecordId {
    RecordId::new(scope, None, &IdempotencyKey::parse(key.as_bytes()).unwrap())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The record of `id` as the store holds it (Redis: the value; Postgres: the
/// `record` column); `None` for the memory store, which holds no bytes.
async fn at_rest(store: &AnyStore, id: &RecordId) -> Option<Vec<u8>> {
    match store {
        AnyStore::Redis(redis, Some(server)) => Some(redis_get(redis, server, id)),
        AnyStore::Postgres(postgres, _) => {
            let server = store.postgres_server().expect("a server");
            Some(postgres_get(postgres, server, id).await)
        }
        _ => None,
    }
}

fn redis_get(store: &RedisStore, server: &RedisServer, id: &RecordId) -> Vec<u8> {
    let reply = server.raw(&[b"GET", store.key_of(id).as_bytes()]);
    // `$<len>\r\n<bytes>\r\n`
    let start = reply
        .iter()
        .position(|&b| b == b'\n')
        .expect("a bulk reply")
        + 1;
    reply[start..reply.len() - 2].to_vec()
}

async fn postgres_get(store: &PostgresStore, server: &PostgresServer, id: &RecordId) -> Vec<u8> {
    let admin = sqlx::PgPool::connect(server.url()).await.unwrap();
    let record: Vec<u8> = sqlx::query_scalar(&format!(
        "SELECT record FROM {} WHERE scope = $1 AND digest = $2",
        store.table()
    ))
    .bind(id.scope())
    .bind(&id.digest()[..])
    .fetch_one(&admin)
    .await
    .expect("the record's row");
    admin.close().await;
    record
}

/// Flips one bit in the middle of the sealed body of `id`'s record, as
/// someone with write access to the store could; `false` for the memory
/// store.
async fn tamper(store: &AnyStore, id: &RecordId) -> bool {
    let Some(raw) = at_rest(store, id).await else {
        return false;
    };
    let Ok(Record::Completed {
        fingerprint,
        response,
    }) = Record::decode(&raw)
    else {
        panic!("a completed record at rest")
    };
    let mut altered = (*response).clone();
    let mut body = altered.body.take().expect("a sealed body").to_vec();
    let middle = body.len() / 2;
    body[middle] ^= 0x01;
    altered.body = Some(body.into());
    let raw = Record::Completed {
        fingerprint,
        response: altered.into(),
    }
    .encode();
    match store {
        AnyStore::Redis(redis, Some(server)) => {
            let reply = server.raw(&[b"SET", redis.key_of(id).as_bytes(), &raw, b"KEEPTTL"]);
            assert_eq!(reply, b"+OK\r\n");
        }
        AnyStore::Postgres(postgres, _) => {
            let server = store.postgres_server().expect("a server");
            let admin = sqlx::PgPool::connect(server.url()).await.unwrap();
            let updated = sqlx::query(&format!(
                "UPDATE {} SET record = $3 WHERE scope = $1 AND digest = $2",
                postgres.table()
            ))
            .bind(id.scope())
            .bind(&id.digest()[..])
            .bind(&raw)
            .execute(&admin)
            .await
            .unwrap();
            assert_eq!(updated.rows_affected(), 1);
            admin.close().await;
        }
        _ => unreachable!(),
    }
    true
}

/// Asserts that `id`'s record is sealed at rest: a runtime without keys
/// cannot read it, one with the ring opens it to a response holding
/// `secret`, and the store's bytes hold no part of it.
async fn assert_sealed(store: &AnyStore, ring: KeyRing, scope: &str, key: &str, secret: &str) {
    let key = IdempotencyKey::parse(key.as_bytes()).unwrap();
    let without_keys = Idempotency::new(store.unguarded());
    assert!(
        matches!(
            without_keys.lookup(scope, None, &key).await,
            Err(StoreError::Corrupt(_))
        ),
        "a runtime without keys must not read the record of {scope}"
    );
    match sealed(store, ring).lookup(scope, None, &key).await {
        Ok(Some(Record::Completed { response, .. })) => {
            let body = response.body.as_deref().expect("a stored body");
            assert!(contains(body, secret.as_bytes()), "{scope}: opened");
        }
        other => panic!("{scope}: the sealed record, opened: {other:?}"),
    }
    if let Some(raw) = at_rest(store, &RecordId::new(scope, None, &key)).await {
        assert!(
            !contains(&raw, secret.as_bytes()),
            "{scope}: secret at rest"
        );
        assert!(contains(&raw, b"idempotent-sealed"));
    }
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// A function whose result carries its caller's secret.
#[idempotent(key = key, scope = "sealed-fn", store = idem, fingerprint = secret)]
async fn remember(idem: &Idempotency, key: &str, secret: &str) -> Result<String, IdempotencyError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(format!("receipt for {secret}"))
}

/// An HTTP door: the first request stores, the retry replays the same
/// bytes, and what is stored is sealed.
async fn through_http<A: Adapter>(store: &AnyStore) {
    let env = Env::with_runtime::<A>(store.clone(), sealed(store, ring("k1", K1))).await;
    let key = unique("k");
    let secret = unique("iban-DE89370400440532013000");
    let first = env
        .post("/default")
        .key(&key)
        .json(json!({"tag": secret}))
        .send()
        .await;
    assert_eq!(first.status, 201);
    let again = env
        .post("/default")
        .key(&key)
        .json(json!({"tag": secret}))
        .send()
        .await;
    assert!(again.replayed());
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(executions(&secret), 1);
    assert_sealed(store, ring("k1", K1), "default", &key, &secret).await;
}

async fn through_a_function(store: &AnyStore) {
    let idem = sealed(store, ring("k1", K1));
    let key = unique("k");
    let secret = unique("card-4111111111111111");
    let before = RUNS.load(Ordering::SeqCst);
    let first = remember(&idem, &key, &secret).await.unwrap();
    assert_eq!(remember(&idem, &key, &secret).await.unwrap(), first);
    assert_eq!(RUNS.load(Ordering::SeqCst), before + 1);
    assert_sealed(store, ring("k1", K1), "sealed-fn", &key, &secret).await;
}

async fn through_grpc(store: &AnyStore) {
    let addr = grpc_app::start(sealed(store, ring("k1", K1))).await;
    let mut client = grpc_app::client(addr).await;
    let key = unique("k");
    let secret = unique("account-0532013000");
    let message = || CreateRequest {
        tag: secret.clone(),
        ..Default::default()
    };
    let first = client
        .create(grpc_app::keyed(&key, message()))
        .await
        .expect("created")
        .into_inner();
    let again = client
        .create(grpc_app::keyed(&key, message()))
        .await
        .expect("replayed")
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(executions(&secret), 1);
    assert_sealed(
        store,
        ring("k1", K1),
        "/conformance.v1.Things/Create",
        &key,
        &secret,
    )
    .await;
}

/// Every door over one store.
async fn every_door_seals(store: AnyStore) {
    through_http::<Axum>(&store).await;
    through_http::<Actix>(&store).await;
    through_a_function(&store).await;
    through_grpc(&store).await;
}

/// Rotation, a wrong key, an unknown key id, no keys, tampering, and
/// plaintext records, over one store.
async fn opening_fails_closed(store: AnyStore) {
    let first = Env::with_runtime::<Axum>(store.clone(), sealed(&store, ring("k1", K1))).await;
    let post = |env: &Env, key: &str, tag: &str| {
        env.post("/default")
            .key(key)
            .json(json!({"tag": tag}))
            .send()
    };
    let (old_key, old_tag) = (unique("k"), unique("old"));
    let stored = post(&first, &old_key, &old_tag).await;
    assert_eq!(stored.status, 201);

    // Rotated: k2 seals, k1 still opens.
    let rotated_ring = || ring("k2", K2).with_older_key("k1", K1).expect("two keys");
    let rotated = Env::with_runtime::<Axum>(store.clone(), sealed(&store, rotated_ring())).await;
    let replayed = post(&rotated, &old_key, &old_tag).await;
    assert!(
        replayed.replayed(),
        "sealed under k1, opened after rotation"
    );
    assert_eq!(replayed.body, stored.body);
    let (new_key, new_tag) = (unique("k"), unique("new"));
    assert_eq!(post(&rotated, &new_key, &new_tag).await.status, 201);
    assert_sealed(&store, rotated_ring(), "default", &new_key, &new_tag).await;
    // The ring of before the rotation cannot open what k2 sealed.
    post(&first, &new_key, &new_tag)
        .await
        .assert_problem(500, "record-unreadable");

    // Another key under the id k1; a ring without k1; no ring at all.
    let wrong = Env::with_runtime::<Axum>(store.clone(), sealed(&store, ring("k1", K2))).await;
    post(&wrong, &old_key, &old_tag)
        .await
        .assert_problem(500, "record-unreadable");
    let unknown = Env::with_runtime::<Axum>(store.clone(), sealed(&store, ring("k3", K1))).await;
    post(&unknown, &old_key, &old_tag)
        .await
        .assert_problem(500, "record-unreadable");
    let plain = Env::with_runtime::<Axum>(store.clone(), Idempotency::new(store.unguarded())).await;
    post(&plain, &old_key, &old_tag)
        .await
        .assert_problem(500, "record-unreadable");
    assert_eq!(executions(&old_tag), 1, "never run again");

    // A record altered at rest.
    if tamper(&store, &record_id("default", &old_key)).await {
        post(&rotated, &old_key, &old_tag)
            .await
            .assert_problem(500, "record-unreadable");
        assert_eq!(executions(&old_tag), 1, "never run again");
    }

    // A plaintext record (stored before encryption was turned on): refused
    // by a strict ring, replayed by one that accepts them.
    let (plain_key, plain_tag) = (unique("k"), unique("plain"));
    assert_eq!(post(&plain, &plain_key, &plain_tag).await.status, 201);
    post(&first, &plain_key, &plain_tag)
        .await
        .assert_problem(500, "record-unreadable");
    let lenient = Env::with_runtime::<Axum>(
        store.clone(),
        sealed(&store, ring("k1", K1).accept_unsealed()),
    )
    .await;
    assert!(post(&lenient, &plain_key, &plain_tag).await.replayed());
    assert_eq!(executions(&plain_tag), 1);
}

macro_rules! over {
    ($store:ident, $factory:ty) => {
        mod $store {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_door_seals_what_it_stores() {
                let Some(store) = <$factory>::make().await else {
                    return;
                };
                every_door_seals(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn opening_fails_closed_and_keys_rotate() {
                let Some(store) = <$factory>::make().await else {
                    return;
                };
                opening_fails_closed(store).await;
            }
        }
    };
}

over!(memory, idempotent_tests::stores::Memory);
over!(redis, idempotent_tests::stores::Redis);
over!(postgres, idempotent_tests::stores::Postgres);

/// The claim in the handler's own transaction (Postgres, a handler that
/// takes `Tx`) commits the sealed record with the handler's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_handler_commits_a_sealed_record() {
    let Some(store) = idempotent_tests::stores::Postgres::make().await else {
        return;
    };
    let server = store.postgres_server().expect("a server").clone();
    let pool = idempotent_tests::behaviour::tx_writes_pool(server.url()).await;

    let env = Env::with_runtime::<Axum>(store.clone(), sealed(&store, ring("k1", K1))).await;
    let key = unique("k");
    let secret = unique("tx-secret");
    let first = env
        .post("/tx")
        .key(&key)
        .json(json!({"tag": secret}))
        .send()
        .await;
    assert_eq!(first.status, 201);
    let again = env
        .post("/tx")
        .key(&key)
        .json(json!({"tag": secret}))
        .send()
        .await;
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(
        idempotent_tests::behaviour::tx_rows(&pool, &secret).await,
        1
    );
    assert_sealed(&store, ring("k1", K1), "tx", &key, &secret).await;
}
