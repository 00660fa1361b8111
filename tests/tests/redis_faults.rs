//! Redis faults, through real HTTP on both adapters: Redis gone means 503 and
//! no execution; Redis back means service back, without restarting the app;
//! a record that cannot be decoded is a clear error, never a panic.

use std::time::Duration;

use idempotent_runtime::IdempotencyKey;
use idempotent_runtime::RecordId;
use idempotent_tests::actix_app::Actix;
use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::stores::{Redis, StoreFactory};
use idempotent_tests::{unique, Adapter, AnyStore, Env};
use serde_json::json;

async fn redis_down_then_back<A: Adapter>() {
    let Some(store) = Redis::make().await else {
        return;
    };
    let server = store
        .redis_server()
        .expect("a server of the test's own")
        .clone();
    let env = Env::start::<A>(store).await;
    let tag = unique("t");
    assert_eq!(
        env.post("/default")
            .key(&unique("k"))
            .json(json!({"tag": tag}))
            .send()
            .await
            .status,
        201
    );

    server.stop();
    let started = tokio::time::Instant::now();
    let r = env
        .post("/default")
        .key(&unique("k"))
        .json(json!({"tag": tag}))
        .send()
        .await;
    r.assert_problem(503, "store-unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast, not after a hang"
    );
    assert_eq!(
        executions(&tag),
        1,
        "the handler did not run without its store"
    );

    server.restart();
    let key = unique("k");
    let mut answer = None;
    for _ in 0..100 {
        let r = env
            .post("/default")
            .key(&key)
            .json(json!({"tag": tag}))
            .send()
            .await;
        if r.status != 503 {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = answer.expect("service back within 10 s of Redis coming back");
    assert_eq!(r.status, 201);
    assert!(env
        .post("/default")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await
        .replayed());
    assert_eq!(executions(&tag), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back_axum() {
    redis_down_then_back::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back_actix() {
    redis_down_then_back::<Actix>().await;
}

async fn corrupt_record_is_a_clear_error<A: Adapter>() {
    let Some(store) = Redis::make().await else {
        return;
    };
    let AnyStore::Redis(redis_store, Some(server)) = &store else {
        unreachable!()
    };
    let key = unique("k");
    let id = RecordId::new(
        "default",
        None,
        &IdempotencyKey::parse(key.as_bytes()).unwrap(),
    );
    let redis_key = redis_store.key_of(&id);
    assert_eq!(
        server.raw(&[b"SET", redis_key.as_bytes(), b"\x01\x02garbage"]),
        b"+OK\r\n"
    );
    let env = Env::start::<A>(store.clone()).await;
    let tag = unique("t");
    let r = env
        .post("/default")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await;
    r.assert_problem(500, "record-unreadable");
    assert_eq!(executions(&tag), 0);
    // The server is fine; other keys work.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_is_a_clear_error_axum() {
    corrupt_record_is_a_clear_error::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_is_a_clear_error_actix() {
    corrupt_record_is_a_clear_error::<Actix>().await;
}

/// A Redis that hangs (frozen, connections open) hits the command timeout:
/// 503, handler not run; once it answers again, so does the service.
async fn redis_hangs_then_recovers<A: Adapter>() {
    let Some(store) = Redis::make().await else {
        return;
    };
    let server = store
        .redis_server()
        .expect("a server of the test's own")
        .clone();
    let env = Env::start::<A>(store).await;
    let tag = unique("t");
    assert_eq!(
        env.post("/default")
            .key(&unique("k"))
            .json(json!({"tag": tag}))
            .send()
            .await
            .status,
        201
    );

    server.pause();
    let started = tokio::time::Instant::now();
    let key = unique("k");
    let r = env
        .post("/default")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await;
    server.resume();
    r.assert_problem(503, "store-unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the command timeout, not a hang"
    );
    assert_eq!(executions(&tag), 1);

    // The frozen Redis ran the timed-out claim once it woke up; that claim is
    // released in the background, so the client's retry of the same key gets
    // through within seconds, not blocked for a whole lease (30 s) by a claim
    // nobody holds.
    let mut status = 0;
    for _ in 0..100 {
        status = env
            .post("/default")
            .key(&key)
            .json(json!({"tag": tag}))
            .send()
            .await
            .status;
        if status != 503 && status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201);
    assert_eq!(executions(&tag), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hangs_then_recovers_axum() {
    redis_hangs_then_recovers::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hangs_then_recovers_actix() {
    redis_hangs_then_recovers::<Actix>().await;
}

/// Redis freezes while a handler runs, so its completion cannot be written
/// at once. Documented outcome: the client still gets the handler's answer;
/// the completion is retried in the background while the claim holds the
/// key (duplicates get 409); once Redis answers, the retry is a replay.
/// Nothing runs twice, since Redis kept its data.
async fn redis_freezes_mid_handler<A: Adapter>() {
    let Some(store) = Redis::make().await else {
        return;
    };
    let server = store
        .redis_server()
        .expect("a server of the test's own")
        .clone();
    let env = Env::start::<A>(store).await;
    let (tag, key) = (unique("t"), unique("k"));
    let body = json!({"tag": tag, "delay_ms": 800});
    let first = env.post("/default").key(&key).json(body.clone()).spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.pause();
    let first = first.await.unwrap();
    server.resume();
    assert_eq!(first.status, 201, "the client gets the handler's answer");
    let mut last = None;
    for _ in 0..200 {
        let r = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        if r.status != 409 && r.status != 503 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.expect("the completion lands within 20 s of Redis answering");
    assert!(r.replayed(), "{} {:?}", r.status, r.body);
    assert_eq!(r.body, first.body);
    assert_eq!(executions(&tag), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_freezes_mid_handler_axum() {
    redis_freezes_mid_handler::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_freezes_mid_handler_actix() {
    redis_freezes_mid_handler::<Actix>().await;
}

/// With the replay cache, a completed record is replayed from this process
/// even while Redis does not answer (no round trip); a claim is never
/// cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cache_serves_completed_records_only() {
    use idempotent_runtime::store::redis::RedisStore;
    use idempotent_runtime::store::{Claim, Store};
    use idempotent_runtime::{Fingerprint, OwnerToken, Record, StoredResponse};
    use std::sync::Arc;

    let Some(server) = idempotent_tests::redis_server::RedisServer::for_test() else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .prefix(unique("cache"))
        .replay_cache(100, Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let id = |k: &str| RecordId::new("cache", None, &IdempotencyKey::parse(k.as_bytes()).unwrap());
    let (done, running) = (id("done"), id("running"));
    let fp = Fingerprint::of_bytes(b"x");
    let owner = OwnerToken::generate();
    let long = Duration::from_secs(60);
    assert_eq!(
        store.claim(&done, fp, owner, long).await.unwrap(),
        Claim::Acquired
    );
    assert!(store
        .complete(
            &done,
            owner,
            fp,
            Arc::new(StoredResponse::new(201, "ok")),
            long
        )
        .await
        .unwrap());
    assert_eq!(
        store
            .claim(&running, fp, OwnerToken::generate(), long)
            .await
            .unwrap(),
        Claim::Acquired
    );

    server.pause();
    let replay = store.claim(&done, fp, OwnerToken::generate(), long).await;
    let in_progress = store
        .claim(&running, fp, OwnerToken::generate(), long)
        .await;
    server.resume();
    assert!(
        matches!(replay, Ok(Claim::Existing(Record::Completed { .. }))),
        "served from the cache: {replay:?}"
    );
    assert!(
        in_progress.is_err(),
        "claims go to Redis (which did not answer): {in_progress:?}"
    );
}
