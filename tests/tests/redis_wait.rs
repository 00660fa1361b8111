//! `on_conflict = "wait"` across processes: the waiter is woken by the
//! completion published in Redis, not by polling.

use std::time::Duration;

use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::{
    Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, OnConflict, StoredResponse,
};
use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::unique;

static WAITING: HandlerConfig =
    HandlerConfig::new("redis-wait").on_conflict(OnConflict::Wait(Duration::from_secs(50)));

async fn runtime_on(server: &RedisServer, prefix: &str, recheck: Duration) -> Idempotency {
    let store = RedisStore::builder(server.url())
        .prefix(prefix)
        .build()
        .await
        .expect("connect");
    Idempotency::builder(store).wait_recheck(recheck).build()
}

/// Two runtimes on one Redis stand for two processes. The waiter re-reads
/// only every 60 s on its own, so answering within 20 s means the published
/// completion woke it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_in_another_process_is_woken_by_the_completion() {
    let Some(server) = RedisServer::for_test() else {
        return;
    };
    let prefix = unique("wait");
    let runner = runtime_on(&server, &prefix, Duration::from_millis(500)).await;
    let waiter = runtime_on(&server, &prefix, Duration::from_secs(60)).await;
    // Let the waiter's subscription settle.
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
    assert!(
        publishes(&server) >= 1,
        "the watched completion was published"
    );
}

/// A duplicate that waits only briefly must not end the publishing another,
/// longer waiter still relies on: the long waiter (re-reading only every
/// 60 s) is woken by the completion that comes after the short one gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_waiter_does_not_cut_a_long_waiters_wake_up() {
    static BRIEF: HandlerConfig =
        HandlerConfig::new("redis-wait").on_conflict(OnConflict::Wait(Duration::from_millis(300)));
    let Some(server) = RedisServer::for_test() else {
        return;
    };
    let prefix = unique("wait-short");
    let runner = runtime_on(&server, &prefix, Duration::from_millis(500)).await;
    let long = runtime_on(&server, &prefix, Duration::from_secs(60)).await;
    let short = runtime_on(&server, &prefix, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = IdempotencyKey::parse(unique("k").as_bytes()).unwrap();
    let fp = Fingerprint::of_bytes(b"pay 5");
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&WAITING, None, &key, fp, || async {
                    let _ = finished.await;
                    StoredResponse::new(201, "paid once")
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = {
        let key = key.clone();
        tokio::spawn(async move {
            long.run(&WAITING, None, &key, fp, || async {
                StoredResponse::new(201, "paid twice")
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let brief = short
        .run(&BRIEF, None, &key, fp, || async {
            StoredResponse::new(201, "paid three times")
        })
        .await;
    assert_eq!(brief.unwrap_err().status, 409, "the brief waiter gives up");
    // Past the brief waiter's wait: a mark it had shortened is gone now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    finish.send(()).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("woken by the notification, long before the 60 s re-read")
        .unwrap()
        .expect("an answer");
    assert!(second.is_replay());
    assert_eq!(second.response().body.as_deref(), Some(&b"paid once"[..]));
    assert!(!first.await.unwrap().unwrap().is_replay());
}

/// `PUBLISH` commands Redis has run.
fn publishes(server: &RedisServer) -> u64 {
    String::from_utf8_lossy(&server.raw(&[b"INFO", b"commandstats"]))
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A completion or release is published only when a duplicate waits for it:
/// publishing every one would wake the subscriber of every process once per
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_nobody_waits_for_are_not_published() {
    let Some(server) = RedisServer::for_test() else {
        return;
    };
    let runtime = runtime_on(&server, &unique("quiet"), Duration::from_millis(500)).await;
    let fp = Fingerprint::of_bytes(b"pay 5");
    for i in 0..50 {
        let key = IdempotencyKey::parse(unique(&format!("k{i}")).as_bytes()).unwrap();
        let stored = i % 2 == 0;
        let outcome = runtime
            .run(&WAITING, None, &key, fp, move || async move {
                let r = StoredResponse::new(201, "paid");
                // `no-store`: the claim is released instead of completed.
                if stored {
                    r
                } else {
                    r.with_header("cache-control", "no-store")
                }
            })
            .await
            .unwrap();
        assert!(!outcome.is_replay());
    }
    assert_eq!(publishes(&server), 0);
}

/// One subscriber connection per store, however many runtimes are built on
/// it (an operator endpoint building one per call must not open one each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_per_store() {
    let Some(server) = RedisServer::for_test() else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .prefix(unique("sub"))
        .build()
        .await
        .unwrap();
    let subscribers = || {
        String::from_utf8_lossy(&server.raw(&[b"CLIENT", b"LIST"]))
            .lines()
            .filter(|l| l.contains(" sub=1 "))
            .count()
    };
    let runtimes: Vec<_> = (0..5).map(|_| Idempotency::new(store.clone())).collect();
    for _ in 0..100 {
        if subscribers() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give any further subscribers time to appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(subscribers(), 1);
    drop(runtimes);
}
