//! Drives `axum-payments` and `actix-payments` as real processes over HTTP:
//! the README session, the batch route, a clean stop on SIGTERM, and one
//! script whose answers must be identical on both.

use std::process::Command;
use std::time::Duration;

use idempotent_tests::{Remote, Resp};
use serde_json::json;

mod common;

use common::{start as start_with, Running, ACTIX, AXUM};

const SERVERS: [&str; 2] = [AXUM, ACTIX];

fn start(bin: &str) -> Running {
    start_with(bin, &[])
}

fn payment(amount: i64) -> serde_json::Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// The answers of the README's curl session, in order.
async fn readme_session(bin: &str) {
    let server = start(bin);
    let api = Remote::new(server.addr);

    let first = api
        .post("/payments")
        .key("order-1")
        .json(payment(1000))
        .send()
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(
        first.json(),
        json!({"id": "pay_1", "amount": 1000, "currency": "EUR"})
    );
    assert!(!first.replayed());

    let retry = api
        .post("/payments")
        .key("order-1")
        .json(payment(1000))
        .send()
        .await;
    assert_eq!(retry.status, 201);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);

    let slow = json!({"amount": 500, "currency": "EUR", "delay_ms": 1500});
    let running = api
        .post("/payments")
        .key("order-2")
        .json(slow.clone())
        .spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dup = api.post("/payments").key("order-2").json(slow).send().await;
    dup.assert_problem(409, "request-in-progress");
    assert_eq!(dup.header("retry-after"), Some("1"));

    let reused = api
        .post("/payments")
        .key("order-1")
        .json(payment(2000))
        .send()
        .await;
    reused.assert_problem(422, "key-reused");

    assert_eq!(running.await.unwrap().status, 201);
    let list = api.get("/payments").send().await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json().as_array().map(Vec::len),
        Some(2),
        "two payments, not four"
    );
}

#[tokio::test]
async fn readme_session_axum() {
    readme_session(SERVERS[0]).await;
}

#[tokio::test]
async fn readme_session_actix() {
    readme_session(SERVERS[1]).await;
}

/// One script, both servers: status, content type, replay and retry headers,
/// and body must match byte for byte.
#[tokio::test]
async fn both_servers_answer_identically() {
    let servers: Vec<_> = SERVERS.iter().map(|b| start(b)).collect();
    let mut transcripts = Vec::new();
    for server in &servers {
        let api = Remote::new(server.addr);
        let mut t: Vec<(String, Resp)> = Vec::new();
        let mut step = |name: &str, r: Resp| t.push((name.to_owned(), r));
        step(
            "first",
            api.post("/payments")
                .key("k1")
                .json(payment(10))
                .send()
                .await,
        );
        step(
            "replay",
            api.post("/payments")
                .key("k1")
                .json(payment(10))
                .send()
                .await,
        );
        step(
            "quoted key",
            api.post("/payments")
                .key("\"k1\"")
                .json(payment(10))
                .send()
                .await,
        );
        step(
            "reused",
            api.post("/payments")
                .key("k1")
                .json(payment(11))
                .send()
                .await,
        );
        step(
            "missing key",
            api.post("/payments").json(payment(10)).send().await,
        );
        step(
            "empty key",
            api.post("/payments").key("").json(payment(10)).send().await,
        );
        step(
            "long key",
            api.post("/payments")
                .key(&"x".repeat(256))
                .json(payment(10))
                .send()
                .await,
        );
        step(
            "two keys",
            api.post("/payments")
                .key("a")
                .key("b")
                .json(payment(10))
                .send()
                .await,
        );
        step(
            "too large",
            api.post("/payments")
                .key("big")
                .header("content-type", "application/json")
                .body(vec![b' '; 1024 * 1024 + 1])
                .send()
                .await,
        );
        let fail = json!({"amount": 1, "currency": "EUR", "fail": true});
        step(
            "failed",
            api.post("/payments")
                .key("f")
                .json(fail.clone())
                .send()
                .await,
        );
        step(
            "failed replay",
            api.post("/payments").key("f").json(fail).send().await,
        );
        let slow = json!({"amount": 2, "currency": "EUR", "delay_ms": 1000});
        let running = api.post("/payments").key("slow").json(slow.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(300)).await;
        step(
            "in flight",
            api.post("/payments")
                .key("slow")
                .json(slow.clone())
                .send()
                .await,
        );
        step("in flight", running.await.unwrap());
        step(
            "after",
            api.post("/payments").key("slow").json(slow).send().await,
        );
        step("list", api.get("/payments").send().await);
        transcripts.push(t);
    }
    let (axum, actix) = (&transcripts[0], &transcripts[1]);
    assert_eq!(axum.len(), actix.len());
    for ((name, a), (_, b)) in axum.iter().zip(actix) {
        assert_eq!(a.status, b.status, "{name}: status");
        for h in ["content-type", "idempotent-replayed", "retry-after"] {
            assert_eq!(a.header(h), b.header(h), "{name}: {h}");
        }
        assert_eq!(a.body, b.body, "{name}: body");
    }
    // And the script exercised what it claims to.
    let statuses: Vec<u16> = axum.iter().map(|(_, r)| r.status).collect();
    assert_eq!(
        statuses,
        [201, 201, 201, 422, 400, 400, 400, 400, 413, 500, 500, 409, 201, 201, 200]
    );
}

async fn batch_items_are_idempotent_one_by_one(bin: &str) {
    let server = start(bin);
    let api = Remote::new(server.addr);
    let item = |key: &str, amount: i64| json!({"key": key, "amount": amount, "currency": "EUR"});
    let first = api
        .post("/payments/batch")
        .json(json!({"items": [item("a", 1), item("b", 2)]}))
        .send()
        .await;
    assert_eq!(first.status, 200);
    let again = api
        .post("/payments/batch")
        .json(json!({"items": [item("a", 1), item("c", 3), item("b", 9)]}))
        .send()
        .await
        .json();
    assert_eq!(again[0]["replayed"], true);
    assert_eq!(again[0]["payment"], first.json()[0]["payment"]);
    assert_eq!(again[1]["replayed"], false);
    assert_eq!(again[2]["status"], 422, "same key, other payload");
    let list = api.get("/payments").send().await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn batch_axum() {
    batch_items_are_idempotent_one_by_one(SERVERS[0]).await;
}

#[tokio::test]
async fn batch_actix() {
    batch_items_are_idempotent_one_by_one(SERVERS[1]).await;
}

#[tokio::test]
async fn both_stop_cleanly_on_sigterm() {
    for bin in SERVERS {
        let mut server = start(bin);
        let api = Remote::new(server.addr);
        assert_eq!(api.get("/payments").send().await.status, 200);
        let pid = server.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                assert!(status.success(), "{bin}: exit status {status}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{bin} still running 40 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[test]
fn unreachable_redis_is_a_clear_startup_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for bin in SERVERS {
        let out = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--store", "redis", "--redis-url"])
            .arg(format!("redis://127.0.0.1:{port}"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot use Redis"),
            "{bin}"
        );
    }
}
