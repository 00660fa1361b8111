//! `Idempotency::ready`, the readiness probe: ready while the store answers
//! its ping, not ready (within the bound given) while Redis or PostgreSQL
//! is stopped or frozen, ready again when it is back; never ready while
//! draining.

use std::time::{Duration, Instant};

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::store::StoreError;
use idempotent_runtime::{Idempotency, NotReady};
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::stores::{postgres_store, AnyStore};
use idempotent_tests::unique;

/// What the probes give the store.
const WITHIN: Duration = Duration::from_secs(2);
/// The probe answers within its bound, and a little more.
const ANSWERS_WITHIN: Duration = Duration::from_secs(4);

/// Probes once; asserts it answered within [`ANSWERS_WITHIN`].
async fn probe(idempotency: &Idempotency) -> Result<(), NotReady> {
    let started = Instant::now();
    let answer = idempotency.ready(WITHIN).await;
    assert!(
        started.elapsed() < ANSWERS_WITHIN,
        "the probe took {:?}",
        started.elapsed()
    );
    answer
}

/// Probes until it is ready (a reconnecting store may fail once more).
async fn ready_again(idempotency: &Idempotency) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match probe(idempotency).await {
            Ok(()) => return,
            Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not ready again: {e}"),
        }
    }
}

#[tokio::test]
async fn memory_is_ready_until_draining() {
    let idempotency = Idempotency::new(MemoryStore::default());
    probe(&idempotency)
        .await
        .expect("the memory store is ready");
    idempotency.drain(Duration::from_millis(10)).await;
    let e = probe(&idempotency).await.unwrap_err();
    assert!(matches!(e, NotReady::ShuttingDown), "{e:?}");
    assert_eq!(e.to_string(), "shutting down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_or_frozen_is_not_ready() {
    let Some(server) = RedisServer::for_test() else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .prefix(unique("ready"))
        .build()
        .await
        .expect("connect to the test's Redis");
    // Through the tests' store type too: it forwards the ping.
    let idempotency = Idempotency::new(AnyStore::Redis(store, None));
    probe(&idempotency).await.expect("ready with Redis up");

    server.stop();
    let e = probe(&idempotency).await.unwrap_err();
    assert!(matches!(e, NotReady::Store(_)), "{e:?}");

    server.restart();
    ready_again(&idempotency).await;

    server.pause();
    let e = probe(&idempotency).await.unwrap_err();
    assert!(
        matches!(e, NotReady::Store(StoreError::Timeout)),
        "a frozen Redis times out: {e:?}"
    );
    server.resume();
    ready_again(&idempotency).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_is_not_ready() {
    let Some(server) = PostgresServer::for_test() else {
        return;
    };
    let store: PostgresStore = postgres_store(&server, |b| {
        b.acquire_timeout(Duration::from_secs(1))
            .statement_timeout(Duration::from_secs(1))
    })
    .await;
    let idempotency = Idempotency::new(AnyStore::postgres(store, server.clone()));
    probe(&idempotency).await.expect("ready with PostgreSQL up");

    server.stop();
    let e = probe(&idempotency).await.unwrap_err();
    assert!(matches!(e, NotReady::Store(_)), "{e:?}");

    server.start_again();
    ready_again(&idempotency).await;
}
