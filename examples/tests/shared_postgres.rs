//! Example-server processes, axum and actix mixed, sharing one PostgreSQL
//! database (`--store postgres`): exactly one payment per key however the
//! duplicates are spread; a process killed while its payment sits in its
//! open transaction leaves nothing behind (no payment, no claim), so the
//! retry runs at once and pays exactly once.
//!
//! Each test gets a database of its own in the harness's cluster (or at
//! `DATABASE_URL`). Without PostgreSQL the tests are skipped, and fail under
//! `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::Remote;
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

/// A crash mid-transaction: a request inserts its payment and holds its
/// answer for 3 s inside its still-open transaction, and the process is
/// killed once the insert has run (at least 0.5 s in). The database rolls
/// that transaction back when the connection drops, and with it the key's
/// lock: the claim was the transaction, so nothing at all is left. After a
/// restart on the same database there is no payment, and the very first
/// retry runs the handler (no 409, no lease to wait out): one payment
/// (`pay_2`: the killed attempt's insert used id 1 of the sequence, then
/// rolled back), and later retries replay it.
///
/// `shared_redis.rs` runs the same scenario on `--store redis`, where the
/// payment made before the kill survives and the retry pays a second time.
async fn killed_mid_transaction_pays_once(bin: &str) {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let db = Database::create(&server).await;
    let mut doomed = start(bin, &db, &[]);
    let mut look = db.connect().await;
    let key = "killed-mid-transaction";
    let body = json!({"amount": 4242, "currency": "EUR", "hold_ms": 3000});

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

    let restarted = start(bin, &db, &[]);
    let api = Remote::new(restarted.addr);
    let up = Instant::now();
    assert_eq!(
        payments(&api).await,
        Vec::<serde_json::Value>::new(),
        "{bin}: the killed request's payment was rolled back"
    );
    // The first retry runs at once: nothing of the killed attempt holds the
    // key. (It holds its own answer 3 s too, being the same request: how
    // soon it runs shows in its insert.)
    let retry = api.post("/payments").key(key).json(body.clone()).spawn();
    wait_for_insert(&mut look, 2).await;
    let running_after = up.elapsed();
    let answer = retry.await.expect("the retry's answer");
    assert_eq!(answer.status, 201, "{bin}: {:?}", answer.body);
    assert!(!answer.replayed(), "{bin}: the retry ran the handler");
    let paid = answer.json();
    assert_eq!(
        paid,
        json!({"id": "pay_2", "amount": 4242, "currency": "EUR"}),
        "{bin}: a new payment, after the rolled-back id 1"
    );
    println!(
        "{bin}: the first retry after the restart was running (its payment inserted) {} ms after the restart",
        running_after.as_millis()
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
