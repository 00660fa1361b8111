//! Example-server processes, axum and actix mixed, sharing one PostgreSQL
//! database (`--store postgres`): exactly one payment per key however the
//! duplicates are spread; a process killed while its payment sits in its
//! open transaction leaves no payment behind, and the retry after the lease
//! pays exactly once; a handler that outlives its lease is fenced and its
//! payment rolled back.
//!
//! Each test gets a database of its own in the harness's cluster (or at
//! `DATABASE_URL`). Without PostgreSQL the tests are skipped, and fail under
//! `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::{Remote, Resp};
use serde_json::json;
use sqlx::PgConnection;
use tokio::sync::Barrier;
use tokio::time::Instant;

mod common;

use common::{assert_no_answer, raw_post, start as start_server, Database, Running, ACTIX, AXUM};

fn start(bin: &str, db: &Database, extra: &[&str]) -> Running {
    let mut args = vec!["--store", "postgres", "--database-url", db.url.as_str()];
    args.extend_from_slice(extra);
    start_server(bin, &args)
}

/// The payments committed, as `GET /payments` lists them.
async fn payments(api: &Remote) -> Vec<serde_json::Value> {
    let list = api.get("/payments").send().await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    list.json().as_array().expect("a list").clone()
}

/// Waits (up to 20 s) until an insert into `payments` has run, committed
/// or not: the table's sequence is shared by every transaction and not
/// rolled back, so it shows an insert still inside an open transaction,
/// which no `SELECT` from elsewhere can see.
async fn wait_for_insert(conn: &mut PgConnection, inserts: i64) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (last, called): (i64, bool) =
            sqlx::query_as("SELECT last_value, is_called FROM payments_id_seq")
                .fetch_one(&mut *conn)
                .await
                .expect("read the payments sequence");
        if called && last >= inserts {
            return;
        }
        assert!(
            Instant::now() < until,
            "no insert into payments within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows of `payments` visible to a connection of the test's own, which
/// sees only committed ones.
async fn committed(conn: &mut PgConnection) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM payments")
        .fetch_one(&mut *conn)
        .await
        .expect("count payments")
        .0
}

/// Sends `body` with `key` every 250 ms while the answer is 409
/// `request-in-progress` (up to `limit`); returns the first other answer.
async fn retry_while_in_progress(
    api: &Remote,
    key: &str,
    body: &serde_json::Value,
    limit: Duration,
) -> Resp {
    let started = Instant::now();
    loop {
        let r = api
            .post("/payments")
            .key(key)
            .json(body.clone())
            .send()
            .await;
        if !in_progress(&r) {
            return r;
        }
        assert!(
            started.elapsed() < limit,
            "still 409 after {limit:?}: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn in_progress(r: &Resp) -> bool {
    r.status == 409
        && r.json()["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("#request-in-progress"))
}

/// 20 rounds; each sends 200 duplicates of one new key (same body),
/// released together and spread over two processes, one axum and one
/// actix, on one database: exactly one execution per round, every other
/// answer a 409 or an identical replay, and exactly one payment per round
/// in the shared table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_processes_pay_once() {
    const ROUNDS: usize = 20;
    const DUPLICATES: usize = 200;
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let servers = [start(AXUM, &db, &[]), start(ACTIX, &db, &[])];
    let apis: Vec<Remote> = servers.iter().map(|s| Remote::new(s.addr)).collect();
    let (mut replays, mut conflicts) = (0, 0);
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
                201 if r.replayed() => {
                    replays += 1;
                    assert_eq!(r.body, original, "round {round}: replays are identical");
                }
                201 => {}
                409 => {
                    conflicts += 1;
                    r.assert_problem(409, "request-in-progress");
                }
                s => panic!("round {round}: unexpected {s}: {:?}", r.body),
            }
        }
    }
    // Both processes list the same payments: one per round.
    for api in &apis {
        let list = payments(api).await;
        let mut amounts: Vec<i64> = list.iter().map(|p| p["amount"].as_i64().unwrap()).collect();
        amounts.sort_unstable();
        assert_eq!(amounts, (0..ROUNDS as i64).collect::<Vec<_>>(), "{list:?}");
    }
    println!(
        "{ROUNDS} rounds × {DUPLICATES}: {ROUNDS} executions, {replays} replays, {conflicts} × 409"
    );
    drop(servers);
    db.drop_now().await;
}

/// SIGKILL while the handler holds its payment in its open transaction:
/// the request inserts its payment, then holds the answer for 3 s; the
/// process is killed once the insert has run (at least 0.5 s in). The
/// database rolls that transaction back when the connection drops, so
/// after a restart on the same database no payment of the request exists.
/// Its claim, committed on its own when the request came in, blocks
/// retries (409) until its lease ends (5 s here, `--lease-secs 5`); then
/// the retry runs the handler exactly once: one payment (`pay_2`: the
/// killed attempt's insert used id 1 of the sequence, then rolled back),
/// and later retries replay it.
///
/// `shared_redis.rs` runs the same scenario on `--store redis`, where the
/// payment made before the kill survives and the retry pays a second time.
async fn killed_mid_transaction_pays_once(bin: &str) {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let lease = ["--lease-secs", "5"];
    let mut doomed = start(bin, &db, &lease);
    let mut look = db.connect().await;
    let key = "killed-mid-transaction";
    let body = json!({"amount": 4242, "currency": "EUR", "hold_ms": 3000});

    let sent = Instant::now();
    let in_flight = raw_post(doomed.addr, key, &body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_insert(&mut look, 1).await;
    assert_eq!(
        committed(&mut look).await,
        0,
        "{bin}: the payment is inserted but not committed"
    );
    doomed.child.kill().expect("SIGKILL");
    let _ = doomed.child.wait();
    assert_no_answer(in_flight);

    let restarted = start(bin, &db, &lease);
    let api = Remote::new(restarted.addr);
    assert_eq!(
        payments(&api).await,
        Vec::<serde_json::Value>::new(),
        "{bin}: the killed request's payment was rolled back"
    );

    // Until the claim's lease ends: 409. (Asserted only while the lease
    // surely runs, with a second to spare.)
    let first = api
        .post("/payments")
        .key(key)
        .json(body.clone())
        .send()
        .await;
    if sent.elapsed() < Duration::from_secs(4) {
        first.assert_problem(409, "request-in-progress");
    }
    let answer = if in_progress(&first) {
        retry_while_in_progress(&api, key, &body, Duration::from_secs(30)).await
    } else {
        first
    };
    assert_eq!(answer.status, 201, "{bin}: {:?}", answer.body);
    assert!(!answer.replayed(), "{bin}: the retry ran the handler");
    let paid = answer.json();
    assert_eq!(
        paid,
        json!({"id": "pay_2", "amount": 4242, "currency": "EUR"}),
        "{bin}: a new payment, after the rolled-back id 1"
    );
    println!(
        "{bin}: retry ran {:.1} s after the first request",
        sent.elapsed().as_secs_f64()
    );

    for _ in 0..2 {
        let again = api
            .post("/payments")
            .key(key)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(again.status, 201, "{bin}: {:?}", again.body);
        assert!(again.replayed(), "{bin}: later retries replay");
        assert_eq!(again.json(), paid);
    }
    assert_eq!(
        payments(&api).await,
        vec![paid],
        "{bin}: exactly one payment"
    );
    assert_eq!(committed(&mut look).await, 1);
    drop(look);
    drop(restarted);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_transaction_pays_once_axum() {
    killed_mid_transaction_pays_once(AXUM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_transaction_pays_once_actix() {
    killed_mid_transaction_pays_once(ACTIX).await;
}

/// Fencing over HTTP: two attempts of one key run at once, and only one
/// commits; the other's payment rolls back and it answers 409 `lease-lost`.
///
/// With `--lease-secs 5` claims live 5 s, and renewals still come only
/// every 10 s (a third of the handler's own 30 s lease; see the examples'
/// `LeaseOverride`), so a handler that runs longer loses its claim. Request
/// A inserts its payment and holds its answer for 7.5 s. Once A's claim has
/// run out (at 5 s), B (same key, same body) takes the key over and runs
/// the handler too, inserting a payment of its own. Each attempt's record
/// is written in its own transaction, fenced: only if that attempt still
/// owns the claim, or if no live claim is left at all. When A finishes
/// (7.5 s), B's claim (from 5 s on, for 5 s) is live: A's transaction rolls
/// back and A answers 409 `lease-lost`; B commits (`pay_2`) when it
/// finishes, and later retries replay B's answer.
///
/// Should the machine be so slow that B takes over only after A finished,
/// A's completion finds no live claim and commits, and B is fenced instead:
/// either way exactly one attempt commits and one payment exists. Which one
/// is asserted only when B took over with a second to spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_past_their_lease_commit_once() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let running = start(AXUM, &db, &["--lease-secs", "5"]);
    let api = Remote::new(running.addr);
    let mut look = db.connect().await;
    let key = "outlives-its-lease";
    let body = json!({"amount": 77, "currency": "EUR", "hold_ms": 7500});

    let sent = Instant::now();
    let a = api.post("/payments").key(key).json(body.clone()).spawn();
    wait_for_insert(&mut look, 1).await;
    // B: 409 while A's claim is live, then it takes over and runs. (The
    // answers before are 409s, quick: the last attempt's send time is
    // about when B took over.)
    let (b, b_sent) = loop {
        let at = sent.elapsed();
        let r = api
            .post("/payments")
            .key(key)
            .json(body.clone())
            .send()
            .await;
        if !in_progress(&r) {
            break (r, at);
        }
        assert!(at < Duration::from_secs(30), "still 409 after 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let a = a.await.expect("A's answer");
    // B ran the handler: its insert took id 2 of the sequence.
    wait_for_insert(&mut look, 2).await;

    let (winner, loser, id) = match (a.status, b.status) {
        (201, _) => (a, b, "pay_1"),
        (_, 201) => (b, a, "pay_2"),
        _ => panic!("no attempt committed: A {:?}, B {:?}", a.body, b.body),
    };
    println!(
        "fencing: B took over {:.1} s after A was sent; the attempt that paid {id} committed, the other was fenced",
        b_sent.as_secs_f64()
    );
    if b_sent < Duration::from_millis(6500) {
        assert_eq!(id, "pay_2", "B took over while A ran: A is fenced");
    }
    loser.assert_problem(409, "lease-lost");
    assert!(!winner.replayed());
    let paid = winner.json();
    assert_eq!(paid, json!({"id": id, "amount": 77, "currency": "EUR"}));
    assert_eq!(
        payments(&api).await,
        vec![paid.clone()],
        "the fenced attempt's payment rolled back"
    );
    let again = api.post("/payments").key(key).json(body).send().await;
    assert!(again.replayed(), "{:?}", again.body);
    assert_eq!(again.json(), paid);
    drop(look);
    drop(running);
    db.drop_now().await;
}

/// `--store postgres` answers as the other stores do (first answer,
/// replay, 409 while running, 422 for a reused key, 500 stored, 503 not
/// stored, the batch route), and a held payment is committed only with its
/// answer: while the handler holds it, no other connection sees it.
async fn answers_as_the_other_stores(bin: &str) {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let running = start(bin, &db, &[]);
    let api = Remote::new(running.addr);
    let post = |key: &str, body: serde_json::Value| api.post("/payments").key(key).json(body);

    let first = post("order-1", json!({"amount": 1000, "currency": "EUR"}))
        .send()
        .await;
    assert_eq!(first.status, 201, "{bin}: {:?}", first.body);
    assert_eq!(
        first.json(),
        json!({"id": "pay_1", "amount": 1000, "currency": "EUR"})
    );
    let retry = post("order-1", json!({"amount": 1000, "currency": "EUR"}))
        .send()
        .await;
    assert!(retry.replayed() && retry.body == first.body, "{bin}");
    post("order-1", json!({"amount": 2000, "currency": "EUR"}))
        .send()
        .await
        .assert_problem(422, "key-reused");

    // Held: inserted, not committed until the answer.
    let held = json!({"amount": 8, "currency": "EUR", "hold_ms": 1500});
    let pending = post("held", held.clone()).spawn();
    let mut look = db.connect().await;
    wait_for_insert(&mut look, 2).await;
    assert_eq!(payments(&api).await.len(), 1, "{bin}: not committed yet");
    post("held", held)
        .send()
        .await
        .assert_problem(409, "request-in-progress");
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, 201, "{bin}: {:?}", answer.body);
    assert_eq!(payments(&api).await.len(), 2, "{bin}: committed with it");

    // 500 is stored and replayed; 503 is not stored, its retry runs again.
    let fail = json!({"amount": 5, "currency": "EUR", "fail": true});
    let failed = post("fails", fail.clone()).send().await;
    assert_eq!(failed.status, 500, "{bin}");
    assert!(post("fails", fail).send().await.replayed(), "{bin}");
    let down = json!({"amount": 9, "currency": "EUR", "unavailable": true});
    for attempt in ["first", "retry"] {
        let r = post("down", down.clone()).send().await;
        assert_eq!(r.status, 503, "{bin} {attempt}: {:?}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(!r.replayed(), "{bin} {attempt}: ran again");
    }
    let back = post("down", json!({"amount": 9, "currency": "EUR"}))
        .send()
        .await;
    assert_eq!(back.status, 201, "{bin}: {:?}", back.body);

    // The batch route: items keyed on their own (written outside a `Tx`).
    let batch = json!({"items": [
        {"key": "b-1", "amount": 11, "currency": "EUR"},
        {"key": "b-1", "amount": 11, "currency": "EUR"},
    ]});
    let items = api.post("/payments/batch").json(batch).send().await.json();
    assert_eq!(items[0]["status"], 201, "{bin}: {items}");
    assert_eq!(items[1]["replayed"], true, "{bin}: {items}");

    let amounts: Vec<i64> = payments(&api)
        .await
        .iter()
        .map(|p| p["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [1000, 8, 9, 11], "{bin}");
    drop(look);
    drop(running);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_the_other_stores_axum() {
    answers_as_the_other_stores(AXUM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_the_other_stores_actix() {
    answers_as_the_other_stores(ACTIX).await;
}
