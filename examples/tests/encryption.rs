//! The example servers with `IDEMPOTENT_ENCRYPTION_KEYS`: what they store
//! holds no byte of a payment, replays survive a key rotation across a
//! restart, a server without the key answers 500 problem+json and pays
//! nothing again, and malformed keys stop start-up.

use std::process::Command;

use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::{IdempotencyKey, RecordId};
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::{unique, Remote};
use serde_json::json;

mod common;

use common::{start_with_env, Database, Running, ACTIX, AXUM};

const KEYS_VAR: &str = "IDEMPOTENT_ENCRYPTION_KEYS";

fn keys(entries: &[(&str, u8)]) -> String {
    entries
        .iter()
        .map(|(id, byte)| format!("{id}:{}", format!("{byte:02x}").repeat(32)))
        .collect::<Vec<_>>()
        .join(",")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Pays once under `k1`, then checks the record at rest with `at_rest`,
/// restarts the server with k2 current and k1 older (the payment replays),
/// then with k3 only (500 `record-unreadable`, nothing paid again).
async fn pays_once_through_rotations(
    start: impl Fn(&str) -> Running,
    at_rest: impl AsyncFn(&str) -> Vec<u8>,
) {
    let key = unique("pay");
    let body = json!({"amount": 4242, "currency": "EUR"});
    let server = start(&keys(&[("k1", 0x11)]));
    let api = Remote::new(server.addr);
    let paid = api
        .post("/payments")
        .key(&key)
        .json(body.clone())
        .send()
        .await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let id = paid.json()["id"].as_str().expect("a payment id").to_owned();

    let raw = at_rest(&key).await;
    assert!(!contains(&raw, id.as_bytes()), "the payment id at rest");
    assert!(!contains(&raw, b"4242") && !contains(&raw, b"EUR"));
    assert!(contains(&raw, b"idempotent-sealed") && contains(&raw, b"k1"));
    drop(server);

    let rotated = start(&keys(&[("k2", 0x22), ("k1", 0x11)]));
    let api = Remote::new(rotated.addr);
    let replayed = api
        .post("/payments")
        .key(&key)
        .json(body.clone())
        .send()
        .await;
    assert!(replayed.replayed(), "{:?}", replayed.body);
    assert_eq!(replayed.body, paid.body);
    drop(rotated);

    let without = start(&keys(&[("k3", 0x33)]));
    let api = Remote::new(without.addr);
    api.post("/payments")
        .key(&key)
        .json(body)
        .send()
        .await
        .assert_problem(500, "record-unreadable");
    let list = api.get("/payments").send().await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "paid once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_over_redis_seals_what_it_stores() {
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let start = |ring: &str| {
        start_with_env(
            AXUM,
            &["--store", "redis", "--redis-url", redis.url()],
            &[(KEYS_VAR, ring)],
        )
    };
    // The servers' prefix, to find the record's key.
    let store = RedisStore::builder(redis.url())
        .prefix("idempotent-examples")
        .build()
        .await
        .expect("connect");
    let at_rest = async |key: &str| {
        let id = RecordId::new(
            "payments",
            None,
            &IdempotencyKey::parse(key.as_bytes()).unwrap(),
        );
        let reply = redis.raw(&[b"GET", store.key_of(&id).as_bytes()]);
        assert!(reply.starts_with(b"$"), "a stored record: {reply:?}");
        reply
    };
    pays_once_through_rotations(start, at_rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_over_postgres_seals_what_it_stores() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let start = |ring: &str| {
        start_with_env(
            ACTIX,
            &["--store", "postgres", "--database-url", &db.url],
            &[(KEYS_VAR, ring)],
        )
    };
    let at_rest = async |key: &str| {
        let id = RecordId::new(
            "payments",
            None,
            &IdempotencyKey::parse(key.as_bytes()).unwrap(),
        );
        let mut conn = db.connect().await;
        sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT record FROM payments_idempotency WHERE scope = $1 AND digest = $2",
        )
        .bind(id.scope())
        .bind(&id.digest()[..])
        .fetch_one(&mut conn)
        .await
        .expect("the record's row")
    };
    pays_once_through_rotations(start, at_rest).await;
    db.drop_now().await;
}

/// Keys that cannot be used stop start-up with a message naming the
/// variable, and never echo a key.
#[test]
fn malformed_keys_stop_start_up() {
    let secret_hex = "ab".repeat(31);
    for (bin, spec) in [
        (AXUM, format!("k1:{secret_hex}")),
        (ACTIX, "k1".to_owned()),
        (AXUM, format!("k1:{secret_hex}ab,k1:{secret_hex}ab")),
    ] {
        let out = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--store", "memory"])
            .env(KEYS_VAR, &spec)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin} {spec}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(KEYS_VAR), "{bin}: {stderr}");
        assert!(
            !stderr.contains(&secret_hex),
            "{bin} echoed a key: {stderr}"
        );
    }
}
