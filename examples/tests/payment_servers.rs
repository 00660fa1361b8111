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
        // On a connection of its own: answered 413 before its body is read,
        // the connection is then closed (axum says nothing of it, so a pooled
        // client reusing it would fail the next step, not this one).
        step(
            "too large",
            Remote::new(server.addr)
                .post("/payments")
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
        let down = json!({"amount": 1, "currency": "EUR", "unavailable": true});
        step(
            "unavailable",
            api.post("/payments")
                .key("u")
                .json(down.clone())
                .send()
                .await,
        );
        step(
            "unavailable again",
            api.post("/payments").key("u").json(down).send().await,
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
        [201, 201, 201, 422, 400, 400, 400, 400, 413, 500, 500, 503, 503, 409, 201, 201, 200]
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

/// In production (`APP_ENV=production`) the memory store, whose records
/// live in one process, is refused at start-up with a message that names
/// the fix; outside production it starts, and says once that it is
/// process-local.
#[test]
fn production_refuses_a_process_local_store() {
    for bin in SERVERS {
        let out = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--store", "memory"])
            .env("APP_ENV", "production")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("a shared idempotency store is required")
                && stderr.contains("--store redis"),
            "{bin}: {stderr}"
        );
        let mut running = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--store", "memory"])
            .env("RUST_LOG", "idempotent=warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(running.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        assert!(first.starts_with("listening on"), "{bin}: {first}");
        let _ = running.kill();
        let out = running.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("idempotency records live in this process only"),
            "{bin}: {stderr}"
        );
    }
}

#[test]
fn unreachable_postgres_is_a_clear_startup_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for bin in SERVERS {
        let out = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--store",
                "postgres",
                "--database-url",
            ])
            .arg(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot use PostgreSQL"),
            "{bin}"
        );
    }
}

/// `"unavailable": true` answers 503 with `Retry-After: 1` and creates
/// nothing; the answer is not stored, so each retry with the same key runs
/// the handler again, and once the dependency is back (the same key without
/// the flag) the payment is made.
async fn unavailable_is_not_stored(bin: &str) {
    let server = start(bin);
    let api = Remote::new(server.addr);
    let down = json!({"amount": 9, "currency": "EUR", "unavailable": true});
    for attempt in ["first", "retry"] {
        let r = api
            .post("/payments")
            .key("dep-down")
            .json(down.clone())
            .send()
            .await;
        assert_eq!(r.status, 503, "{attempt}: {:?}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"), "{attempt}");
        assert!(!r.replayed(), "{attempt}: run, not replayed");
        assert_eq!(
            r.json(),
            json!({"error": "payment service unavailable"}),
            "{attempt}: the handler's answer"
        );
    }
    assert_eq!(
        api.get("/payments").send().await.json(),
        json!([]),
        "no payment while unavailable"
    );
    let back = api
        .post("/payments")
        .key("dep-down")
        .json(payment(9))
        .send()
        .await;
    assert_eq!(back.status, 201, "{:?}", back.body);
    assert!(!back.replayed());
    let list = api.get("/payments").send().await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn unavailable_is_not_stored_axum() {
    unavailable_is_not_stored(SERVERS[0]).await;
}

#[tokio::test]
async fn unavailable_is_not_stored_actix() {
    unavailable_is_not_stored(SERVERS[1]).await;
}

/// A batch item's key means what the `Idempotency-Key` header means: `q-7f3a`,
/// `"q-7f3a"` (RFC 8941 string) and ` q-7f3a` are one key, so the same item
/// under the three spellings is one payment, then two replays.
async fn batch_item_keys_are_parsed_not_spelled(bin: &str) {
    let server = start(bin);
    let api = Remote::new(server.addr);
    let mut answers = Vec::new();
    for key in ["q-7f3a", "\"q-7f3a\"", " q-7f3a"] {
        let r = api
            .post("/payments/batch")
            .json(json!({"items": [{"key": key, "amount": 42, "currency": "EUR"}]}))
            .send()
            .await;
        assert_eq!(r.status, 200);
        answers.push(r.json()[0].clone());
    }
    let statuses: Vec<_> = answers.iter().map(|a| a["status"].clone()).collect();
    assert_eq!(statuses, [201, 201, 201], "{answers:?}");
    let replayed: Vec<_> = answers.iter().map(|a| a["replayed"].clone()).collect();
    assert_eq!(replayed, [false, true, true], "{answers:?}");
    assert_eq!(answers[1]["payment"], answers[0]["payment"]);
    assert_eq!(answers[2]["payment"], answers[0]["payment"]);
    let list = api.get("/payments").send().await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn batch_item_keys_axum() {
    batch_item_keys_are_parsed_not_spelled(SERVERS[0]).await;
}

#[tokio::test]
async fn batch_item_keys_actix() {
    batch_item_keys_are_parsed_not_spelled(SERVERS[1]).await;
}

/// `hold_ms`: the payment is recorded first, then the answer is held back
/// that long, the key still claimed meanwhile.
async fn hold_answers_after_recording(bin: &str) {
    let server = start(bin);
    let api = Remote::new(server.addr);
    let body = json!({"amount": 8, "currency": "EUR", "hold_ms": 2000});
    let running = api.post("/payments").key("held").json(body.clone()).spawn();
    let started = tokio::time::Instant::now();
    let listed = loop {
        let list = api.get("/payments").send().await.json();
        if let Some(p) = list.as_array().and_then(|l| l.first()) {
            break p.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no payment recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !running.is_finished(),
        "recorded, but the answer is still held back"
    );
    let dup = api.post("/payments").key("held").json(body).send().await;
    dup.assert_problem(409, "request-in-progress");
    let answer = running.await.unwrap();
    assert_eq!(answer.status, 201);
    assert_eq!(answer.json(), listed, "the answer is the recorded payment");
}

#[tokio::test]
async fn hold_axum() {
    hold_answers_after_recording(SERVERS[0]).await;
}

#[tokio::test]
async fn hold_actix() {
    hold_answers_after_recording(SERVERS[1]).await;
}

/// A connection whose request head never ends (or never starts) is closed
/// (or answered 408) in seconds, not kept open: the bound here is generous,
/// the servers' timeout is about 5 s.
fn unfinished_heads_are_timed_out(bin: &str) {
    use std::io::{Read, Write};
    let server = start(bin);
    let heads: [&'static [u8]; 3] = [
        b"POST /payments HTTP/1.1\r\nhost: x\r\nidempotency-key: slow\r\n",
        b"",
        // A prefix of the HTTP/2 preface.
        b"PRI * HT",
    ];
    let waits: Vec<_> = heads
        .into_iter()
        .map(|head| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                conn.write_all(head).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut answer = Vec::new();
                match conn.read_to_end(&mut answer) {
                    // Closed, with a 408 or nothing.
                    Ok(_) => assert!(
                        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
                        "{:?}: {:?}",
                        String::from_utf8_lossy(head),
                        String::from_utf8_lossy(&answer)
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    Err(e) => panic!(
                        "{:?}: still open after 30 s ({e})",
                        String::from_utf8_lossy(head)
                    ),
                }
            })
        })
        .collect();
    for (wait, head) in waits.into_iter().zip(heads) {
        if wait.join().is_err() {
            panic!("{bin}: {:?}", String::from_utf8_lossy(head));
        }
    }
}

#[test]
fn unfinished_heads_are_timed_out_axum() {
    unfinished_heads_are_timed_out(SERVERS[0]);
}

#[test]
fn unfinished_heads_are_timed_out_actix() {
    unfinished_heads_are_timed_out(SERVERS[1]);
}

/// Every refusal either server gives is a problem (`application/problem+json`
/// with type, title, status and detail): body rejections on both POST
/// routes, unknown paths, wrong methods (with `Allow`). A body refused on
/// `POST /payments` leaves its key free for the corrected request.
async fn every_refusal_is_a_problem(bin: &str) {
    let server = start(bin);
    let api = Remote::new(server.addr);
    let json = Some("application/json");
    for path in ["/payments", "/payments/batch"] {
        for (content_type, body, status, kind) in [
            (json, "{", 400, "malformed-body"),
            (json, "", 400, "malformed-body"),
            (None, "{}", 415, "unsupported-media-type"),
            (Some("text/plain"), "{}", 415, "unsupported-media-type"),
            (
                json,
                r#"{"amount": "ten", "currency": "EUR", "items": 3}"#,
                422,
                "invalid-body",
            ),
            (json, "{}", 422, "invalid-body"),
            (
                json,
                r#"{"amount": 1.5, "currency": "EUR", "items": [{"key": "k", "amount": 1.5, "currency": "EUR"}]}"#,
                422,
                "invalid-body",
            ),
        ] {
            let mut req = api.post(path).key("refused-1").body(body);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let r = req.send().await;
            r.assert_problem(status, kind);
            let problem = r.json();
            assert_eq!(problem["status"], status, "{bin} {path} {body}");
            assert!(problem["title"].is_string() && problem["detail"].is_string());
        }
    }
    // The key of those refusals is free: this runs, and is not a replay.
    let paid = api
        .post("/payments")
        .key("refused-1")
        .json(payment(7))
        .send()
        .await;
    assert_eq!(paid.status, 201, "{bin}: {:?}", paid.body);
    assert!(!paid.replayed());
    // An integer written as JSON Schema allows it.
    let whole = api
        .post("/payments")
        .key("whole-1")
        .json(json!({"amount": 7.0, "currency": "EUR"}))
        .send()
        .await;
    assert_eq!(whole.status, 201, "{bin}: {:?}", whole.body);
    assert_eq!(whole.json()["amount"], 7);

    api.get("/nowhere")
        .send()
        .await
        .assert_problem(404, "not-found");
    for (method, path, allowed) in [
        ("PUT", "/payments", ["GET", "POST"].as_slice()),
        ("DELETE", "/payments/batch", ["POST"].as_slice()),
    ] {
        let r = api.request(method, path).send().await;
        r.assert_problem(405, "method-not-allowed");
        let allow = r.header("allow").unwrap_or_default().to_owned();
        for m in allowed {
            assert!(allow.contains(m), "{bin} {method} {path}: Allow: {allow}");
        }
    }
}

#[tokio::test]
async fn every_refusal_is_a_problem_axum() {
    every_refusal_is_a_problem(AXUM).await;
}

#[tokio::test]
async fn every_refusal_is_a_problem_actix() {
    every_refusal_is_a_problem(ACTIX).await;
}
