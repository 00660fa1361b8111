//! Drives the `axum-payments` binary as a real process over HTTP: the session
//! the README shows, the batch route, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idempotent_tests::Remote;
use serde_json::json;

struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum-payments"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start axum-payments");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .parse()
        .expect("an address");
    Running { child, addr }
}

fn payment(amount: i64) -> serde_json::Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// The four answers of the README's curl session, in order.
#[tokio::test]
async fn readme_session() {
    let server = start(&[]);
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
async fn failed_payment_is_stored_and_missing_key_is_400() {
    let server = start(&[]);
    let api = Remote::new(server.addr);
    let fail = json!({"amount": 1, "currency": "EUR", "fail": true});
    let r = api
        .post("/payments")
        .key("f-1")
        .json(fail.clone())
        .send()
        .await;
    assert_eq!(r.status, 500);
    assert!(api
        .post("/payments")
        .key("f-1")
        .json(fail)
        .send()
        .await
        .replayed());
    api.post("/payments")
        .json(payment(1))
        .send()
        .await
        .assert_problem(400, "missing-key");
    assert_eq!(api.get("/payments").send().await.json(), json!([]));
}

/// The batch route makes each item idempotent on its own key.
#[tokio::test]
async fn batch_items_are_idempotent_one_by_one() {
    let server = start(&[]);
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
async fn stops_cleanly_on_sigterm() {
    let mut server = start(&[]);
    let api = Remote::new(server.addr);
    assert_eq!(api.get("/payments").send().await.status, 200);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn redis_store_is_refused_until_supported() {
    let out = Command::new(env!("CARGO_BIN_EXE_axum-payments"))
        .args(["--listen", "127.0.0.1:0", "--store", "redis"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without Redis support"));
}
