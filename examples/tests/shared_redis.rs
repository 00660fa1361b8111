//! Several example-server processes, axum and actix mixed, sharing one Redis:
//! exactly one execution per key however the duplicates are spread, and a
//! process killed mid-handler blocks its key only until its lease ends.

use std::sync::Arc;
use std::time::Duration;

use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::Remote;
use serde_json::json;
use tokio::sync::Barrier;

mod common;

use common::{assert_no_answer, raw_post, start as start_server, Running, ACTIX, AXUM};

fn start(bin: &str, redis: &RedisServer) -> Running {
    start_server(bin, &["--store", "redis", "--redis-url", redis.url()])
}

/// 20 rounds; each sends 200 duplicates of one new key, released together
/// and spread over three processes (two axum, one actix): exactly one
/// execution per round, every other answer a 409 or an identical replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_processes_execute_once() {
    const ROUNDS: usize = 20;
    const DUPLICATES: usize = 200;
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let servers = [
        start(AXUM, &redis),
        start(ACTIX, &redis),
        start(AXUM, &redis),
    ];
    let apis: Vec<Remote> = servers.iter().map(|s| Remote::new(s.addr)).collect();
    for round in 0..ROUNDS {
        let key = format!("round-{round}");
        let body = json!({"amount": round, "currency": "EUR", "delay_ms": 50});
        let barrier = Arc::new(Barrier::new(DUPLICATES));
        let tasks: Vec<_> = (0..DUPLICATES)
            .map(|i| {
                let req = apis[i % apis.len()]
                    .post("/payments")
                    .key(&key)
                    .json(body.clone());
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    req.send().await
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(DUPLICATES);
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let executed: Vec<_> = answers
            .iter()
            .filter(|r| r.status == 201 && !r.replayed())
            .collect();
        assert_eq!(
            executed.len(),
            1,
            "round {round}: exactly one execution answered"
        );
        let original = executed[0].body.clone();
        for r in &answers {
            match r.status {
                201 => assert_eq!(r.body, original, "round {round}: replays are identical"),
                409 => r.assert_problem(409, "request-in-progress"),
                s => panic!("round {round}: unexpected {s}: {:?}", r.body),
            }
        }
    }
    // Every process sees the same list: one payment per round.
    for api in &apis {
        let list = api.get("/payments").send().await.json();
        assert_eq!(list.as_array().map(Vec::len), Some(ROUNDS));
    }
}

/// A process dies (SIGKILL) in the middle of a handler: until its lease
/// (30 s by default) ends, a retry on another process gets 409; after, the
/// retry runs, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_blocks_its_key_until_the_lease_ends() {
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let mut doomed = start(AXUM, &redis);
    let survivor = start(ACTIX, &redis);
    let (a, b) = (Remote::new(doomed.addr), Remote::new(survivor.addr));
    // The same body throughout (another would be 422): the handler sleeps 3 s
    // before creating the payment, and the process dies half a second in.
    let body = json!({"amount": 5, "currency": "EUR", "delay_ms": 3000});
    let in_flight = a.post("/payments").key("dies").json(body.clone()).spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.child.kill().expect("SIGKILL");
    let _ = doomed.child.wait();
    // Its client sees the connection die (the task ends with an error).
    assert!(in_flight.await.is_err(), "no answer from a killed process");

    let r = b
        .post("/payments")
        .key("dies")
        .json(body.clone())
        .send()
        .await;
    r.assert_problem(409, "request-in-progress");

    // Once the lease ends, the retry runs the handler, exactly once.
    let started = tokio::time::Instant::now();
    let answer = loop {
        let r = b
            .post("/payments")
            .key("dies")
            .json(body.clone())
            .send()
            .await;
        if r.status != 409 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still 409 a minute after the kill"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert!(!answer.replayed());
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "not before the 30 s lease ran out"
    );
    assert!(b
        .post("/payments")
        .key("dies")
        .json(body)
        .send()
        .await
        .replayed());
    let list = b.get("/payments").send().await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

/// The Postgres test's scenario (`shared_postgres.rs`,
/// `killed_mid_transaction_pays_once_*`) on `--store redis`, to document the
/// difference: **Redis pays twice.**
///
/// The request writes its payment, then holds its answer for 3 s; the
/// process is SIGKILLed once the payment is visible (at least 0.5 s in).
/// With Redis, the payment and the idempotency record are two writes to a
/// store without transactions: the payment was written (and stays) before
/// the completed record could be, so after the restart the payment is still
/// listed while the key holds only the dead process's claim. Once its lease
/// ends (5 s here, `--lease-secs 5`), the retry finds no outcome and runs
/// the handler again: a second payment. Later retries replay that second
/// one. With Postgres the same kill rolls the first payment back, and the
/// retry's payment is the only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_paying_pays_twice_on_redis() {
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let args = [
        "--store",
        "redis",
        "--redis-url",
        redis.url(),
        "--lease-secs",
        "5",
    ];
    let mut doomed = start_server(AXUM, &args);
    let api = Remote::new(doomed.addr);
    let key = "killed-after-paying";
    let body = json!({"amount": 4242, "currency": "EUR", "hold_ms": 3000});

    let sent = tokio::time::Instant::now();
    let in_flight = raw_post(doomed.addr, key, &body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while payments(&api).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "no payment within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.child.kill().expect("SIGKILL");
    let _ = doomed.child.wait();
    assert_no_answer(in_flight);

    let restarted = start_server(AXUM, &args);
    let api = Remote::new(restarted.addr);
    let before = payments(&api).await;
    assert_eq!(
        before,
        vec![json!({"id": "pay_1", "amount": 4242, "currency": "EUR"})],
        "the payment made before the kill survives"
    );

    let first = api
        .post("/payments")
        .key(key)
        .json(body.clone())
        .send()
        .await;
    if sent.elapsed() < Duration::from_secs(4) {
        first.assert_problem(409, "request-in-progress");
    }
    let started = tokio::time::Instant::now();
    let mut answer = first;
    while answer.status == 409 {
        answer.assert_problem(409, "request-in-progress");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still 409 30 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        answer = api
            .post("/payments")
            .key(key)
            .json(body.clone())
            .send()
            .await;
    }
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert!(!answer.replayed(), "the retry ran the handler again");
    let second = answer.json();
    assert_eq!(
        second,
        json!({"id": "pay_2", "amount": 4242, "currency": "EUR"})
    );
    let again = api.post("/payments").key(key).json(body).send().await;
    assert!(again.replayed(), "later retries replay the second payment");
    assert_eq!(again.json(), second);
    let after = payments(&api).await;
    assert_eq!(after.len(), 2, "one request, two payments: {after:?}");
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], second);
}

async fn payments(api: &Remote) -> Vec<serde_json::Value> {
    let list = api.get("/payments").send().await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    list.json().as_array().expect("a list").clone()
}
