//! Shutdown of the example servers: on SIGTERM they stop accepting, let the
//! running handlers finish (those whose client hung up included), and exit 0,
//! leaving no claim behind in a shared Redis.

use std::time::{Duration, Instant};

use idempotent_tests::redis_server::RedisServer;
use idempotent_tests::{unique, Remote};
use serde_json::json;

mod common;

use common::{raw_post, start, ACTIX, AXUM};

/// How a client hangs up.
#[derive(Clone, Copy, Debug)]
enum HangUp {
    /// Closes its connection (FIN).
    Close,
    /// Aborts it (RST), as a crashed or timed-out client may: actix-web
    /// keeps serving a half-closed connection, but drops one reset.
    Reset,
}

/// A client sends a keyed payment whose handler takes 2 s, hangs up 0.3 s
/// in, and SIGTERM follows at 0.4 s: the process finishes the handler before
/// it exits (0), so that after a restart on the same Redis the retry is the
/// replay of that one payment, not a 409 for the lease's 30 s, nor a second
/// payment.
async fn detached_handler_survives_sigterm(bin: &str, hang_up: HangUp) {
    let Some(redis) = RedisServer::for_test() else {
        return;
    };
    let args = ["--store", "redis", "--redis-url", redis.url()];
    let mut server = start(bin, &args);
    let key = unique("hung-up");
    let body = json!({"amount": 700, "currency": "EUR", "delay_ms": 2000});

    let sent = Instant::now();
    let conn = raw_post(server.addr, &key, &body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    match hang_up {
        HangUp::Close => drop(conn),
        HangUp::Reset => {
            conn.set_nonblocking(true).unwrap();
            let conn = tokio::net::TcpStream::from_std(conn).unwrap();
            conn.set_zero_linger().unwrap();
            drop(conn);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.terminate_and_wait(), "{bin}: exit status 0");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "{bin} ({hang_up:?}): exited {:?} after the request, before its 2 s handler finished",
        sent.elapsed()
    );

    let server = start(bin, &args);
    let api = Remote::new(server.addr);
    let retry = api.post("/payments").key(&key).json(body).send().await;
    assert_eq!(retry.status, 201, "{bin} ({hang_up:?}): {:?}", retry.body);
    assert!(
        retry.replayed(),
        "{bin} ({hang_up:?}): the retry is the stored answer"
    );
    let list = api.get("/payments").send().await.json();
    let list = list.as_array().expect("a list");
    assert_eq!(
        list.len(),
        1,
        "{bin} ({hang_up:?}): exactly one payment: {list:?}"
    );
    assert_eq!(retry.json()["id"], list[0]["id"], "the same payment");
    assert_eq!(list[0]["amount"], 700);
}

#[tokio::test]
async fn detached_handler_survives_sigterm_axum_close() {
    detached_handler_survives_sigterm(AXUM, HangUp::Close).await;
}

#[tokio::test]
async fn detached_handler_survives_sigterm_axum_reset() {
    detached_handler_survives_sigterm(AXUM, HangUp::Reset).await;
}

#[tokio::test]
async fn detached_handler_survives_sigterm_actix_close() {
    detached_handler_survives_sigterm(ACTIX, HangUp::Close).await;
}

#[tokio::test]
async fn detached_handler_survives_sigterm_actix_reset() {
    detached_handler_survives_sigterm(ACTIX, HangUp::Reset).await;
}

/// A client still waiting when SIGTERM comes gets its answer: the payment is
/// recorded, then the handler holds the answer back for 1.5 s, across the
/// signal.
fn connected_client_gets_its_answer(bin: &str) {
    let mut server = start(bin, &[]);
    let api = Remote::new(server.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pending = rt.spawn(
        api.post("/payments")
            .key("held")
            .json(json!({"amount": 3, "currency": "EUR", "hold_ms": 1500}))
            .send(),
    );
    std::thread::sleep(Duration::from_millis(400));
    assert!(server.terminate_and_wait(), "{bin}: exit status 0");
    let answer = rt
        .block_on(pending)
        .expect("an answer, not a dropped connection");
    assert_eq!(answer.status, 201, "{bin}: {:?}", answer.body);
    assert!(!answer.replayed());
}

#[test]
fn connected_client_gets_its_answer_axum() {
    connected_client_gets_its_answer(AXUM);
}

#[test]
fn connected_client_gets_its_answer_actix() {
    connected_client_gets_its_answer(ACTIX);
}
