//! The conformance suite: every behaviour an idempotent handler promises (the
//! key checks, replays, conflicts, limits, caching rules, principals, leases
//! and hang-ups of README's "What a request gets"), written once, run for
//! every adapter × store by [`conformance_suite!`](crate::conformance_suite).

use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::memory::{MemoryStore, WhenFull};
use idempotent_runtime::store::{Claim, Store};
use idempotent_runtime::{
    Fingerprint, Idempotency, IdempotencyKey, Limits, OwnerToken, Record, RecordId,
};
use serde_json::json;
use tokio::sync::Barrier;

use crate::behaviour::executions;
use crate::{eventually, unique, AnyStore, Env};

fn input(tag: &str) -> serde_json::Value {
    json!({ "tag": tag })
}

async fn futures_join_all<F: std::future::Future<Output = crate::Resp> + Send + 'static>(
    tasks: Vec<F>,
) -> Vec<crate::Resp> {
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

/// This file's text, for the check that no case sits outside the invocation
/// below.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("cases.rs");

// Every case: `conformance_suite!` runs each function defined in this one
// invocation, for every adapter × store; there is no other list of them.
conformance_cases!(
    pub async fn missing_key_is_400(env: &Env) {
        let tag = unique("t");
        let r = env.post("/default").json(input(&tag)).send().await;
        r.assert_problem(400, "missing-key");
        assert!(r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
        assert_eq!(executions(&tag), 0);
    }

    pub async fn invalid_keys_are_400(env: &Env) {
        let tag = unique("t");
        let long = "k".repeat(256);
        for bad in [
            "",
            "two words",
            long.as_str(),
            "\"unterminated",
            "caf\u{e9}",
        ] {
            let r = env.post("/default").key(bad).json(input(&tag)).send().await;
            r.assert_problem(400, "invalid-key");
        }
        // 255 characters is still fine.
        let ok = "k".repeat(255);
        let r = env.post("/default").key(&ok).json(input(&tag)).send().await;
        assert_eq!(r.status, 201);
        assert_eq!(executions(&tag), 1);
    }

    pub async fn first_request_executes_and_retry_replays(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let first = env
            .post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(first.status, 201);
        assert!(!first.replayed());
        assert_eq!(first.json()["n"], 1);
        for _ in 0..3 {
            let again = env
                .post("/default")
                .key(&key)
                .json(input(&tag))
                .send()
                .await;
            assert_eq!(again.status, 201);
            assert!(again.replayed());
            assert_eq!(again.body, first.body);
        }
        assert_eq!(executions(&tag), 1);
    }

    pub async fn replay_keeps_status_and_headers_but_not_cookies(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "status": 202});
        let first = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(first.status, 202);
        assert_eq!(first.header("set-cookie"), Some("session=s1"));
        tokio::time::sleep(Duration::from_millis(1100)).await; // a new `Date`
        let again = env.post("/default").key(&key).json(body).send().await;
        assert_eq!(again.status, 202);
        for h in ["location", "etag", "x-custom", "content-type"] {
            assert_eq!(again.header(h), first.header(h), "header {h}");
        }
        assert_eq!(
            again.header("set-cookie"),
            None,
            "Set-Cookie is never replayed"
        );
        assert_ne!(again.header("date"), first.header("date"), "Date is fresh");
        assert!(again.replayed());
        assert_eq!(again.body, first.body);
        assert_eq!(executions(&tag), 1);
    }

    pub async fn sf_string_key_is_the_same_key(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let first = env
            .post("/default")
            .key(&format!("\"{key}\""))
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(first.status, 201);
        let bare = env
            .post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(bare.replayed());
        assert_eq!(bare.body, first.body);
        assert_eq!(executions(&tag), 1);
    }

    pub async fn different_payload_is_422(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        env.post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        let other = env
            .post("/default")
            .key(&key)
            .json(json!({"tag": tag, "status": 200}))
            .send()
            .await;
        other.assert_problem(422, "key-reused");
        // Also while the first is still in progress.
        let key2 = unique("k");
        let slow = json!({"tag": tag, "delay_ms": 800});
        let first = env.post("/default").key(&key2).json(slow).spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = env
            .post("/default")
            .key(&key2)
            .json(input(&tag))
            .send()
            .await;
        r.assert_problem(422, "key-reused");
        assert_eq!(first.await.unwrap().status, 201);
        assert_eq!(executions(&tag), 2);
    }

    pub async fn different_query_is_422(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let a = env
            .post("/shapes/7?x=1")
            .key(&key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("tag={tag}"))
            .send()
            .await;
        assert_eq!(a.status, 200);
        let b = env
            .post("/shapes/7?x=2")
            .key(&key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("tag={tag}"))
            .send()
            .await;
        b.assert_problem(422, "key-reused");
        assert_eq!(executions(&tag), 1);
    }

    pub async fn duplicate_in_flight_is_409_with_retry_after(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "delay_ms": 800});
        let first = env.post("/default").key(&key).json(body.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let dup = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        dup.assert_problem(409, "request-in-progress");
        assert_eq!(dup.header("retry-after"), Some("1"));
        let first = first.await.unwrap();
        assert_eq!(first.status, 201);
        let after = env.post("/default").key(&key).json(body).send().await;
        assert!(after.replayed());
        assert_eq!(after.body, first.body);
        assert_eq!(executions(&tag), 1);
    }

    /// 200 duplicates released together: exactly one execution; every other answer
    /// is a 409 or an identical replay; no 5xx.
    pub async fn concurrent_duplicates_execute_once(env: &Env) {
        const N: usize = 200;
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "delay_ms": 300});
        let barrier = Arc::new(Barrier::new(N));
        let mut tasks = Vec::with_capacity(N);
        for _ in 0..N {
            let req = env.post("/default").key(&key).json(body.clone());
            let barrier = barrier.clone();
            tasks.push(async move {
                barrier.wait().await;
                req.send().await
            });
        }
        let answers = futures_join_all(tasks).await;
        let executed: Vec<_> = answers
            .iter()
            .filter(|r| r.status == 201 && !r.replayed())
            .collect();
        assert_eq!(executed.len(), 1, "exactly one execution answered");
        let original = executed[0].body.clone();
        for r in &answers {
            match r.status {
                201 => assert_eq!(r.body, original, "replays are identical"),
                409 => r.assert_problem(409, "request-in-progress"),
                s => panic!("unexpected status {s}: {:?}", r.body),
            }
        }
        assert_eq!(executions(&tag), 1);
        // And a second wave after completion: all replays.
        let again = env.post("/default").key(&key).json(body).send().await;
        assert!(again.replayed());
        assert_eq!(executions(&tag), 1);
    }

    pub async fn wait_mode_replays_after_first_finishes(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "delay_ms": 700});
        let first = env.post("/wait").key(&key).json(body.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let req = env.post("/wait").key(&key).json(body.clone());
                async move { req.send().await }
            })
            .collect();
        let answers = futures_join_all(waiters).await;
        let first = first.await.unwrap();
        assert_eq!(first.status, 201);
        for r in answers {
            assert_eq!(r.status, 201, "{:?}", r.body);
            assert!(r.replayed());
            assert_eq!(r.body, first.body);
        }
        assert_eq!(executions(&tag), 1);
    }

    pub async fn wait_mode_gives_409_when_wait_runs_out(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "delay_ms": 2000});
        let first = env.post("/wait-short").key(&key).json(body.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let dup = env.post("/wait-short").key(&key).json(body).send().await;
        dup.assert_problem(409, "request-in-progress");
        assert_eq!(first.await.unwrap().status, 201);
        assert_eq!(executions(&tag), 1);
    }

    pub async fn bad_json_does_not_consume_key(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let bad = env
            .post("/default")
            .key(&key)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await;
        assert_eq!(bad.status, 400, "the extractor's own rejection");
        assert_ne!(bad.header("content-type"), Some("application/problem+json"));
        let good = env
            .post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(good.status, 201);
        assert!(!good.replayed());
        assert_eq!(executions(&tag), 1);
    }

    pub async fn body_over_limit_is_413(env: &Env) {
        let key = unique("k");
        let big = vec![b' '; 1024 * 1024 + 1];
        let r = env
            .post("/default")
            .key(&key)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await;
        r.assert_problem(413, "request-too-large");
        // A smaller limit, configured.
        let small = env
            .sibling(env.store.clone(), {
                let mut limits = Limits::default();
                limits.max_request_body = 64;
                limits
            })
            .await;
        let tag = unique("t");
        let r = small
            .post("/default")
            .key(&unique("k"))
            .json(json!({"tag": tag, "padding": "x".repeat(100)}))
            .send()
            .await;
        r.assert_problem(413, "request-too-large");
        assert_eq!(executions(&tag), 0);
    }

    pub async fn response_over_limit_is_sent_then_410(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "size": 1024 * 1024 + 10});
        let first = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(first.status, 201);
        assert_eq!(
            first.body.len(),
            1024 * 1024 + 10,
            "the client gets all of it"
        );
        let again = env.post("/default").key(&key).json(body).send().await;
        again.assert_problem(410, "response-not-stored");
        assert_eq!(executions(&tag), 1, "never executed again");
    }

    pub async fn cache_all_replays_server_errors(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "status": 500});
        let first = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(first.status, 500);
        let again = env.post("/default").key(&key).json(body).send().await;
        assert_eq!(again.status, 500);
        assert!(again.replayed());
        assert_eq!(executions(&tag), 1);
    }

    pub async fn cache_success_releases_on_error(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let failing = json!({"tag": tag, "status": 503});
        assert_eq!(
            env.post("/success-only")
                .key(&key)
                .json(failing.clone())
                .send()
                .await
                .status,
            503
        );
        let retry = env
            .post("/success-only")
            .key(&key)
            .json(failing)
            .send()
            .await;
        assert_eq!(retry.status, 503);
        assert!(!retry.replayed(), "not stored: executed again");
        assert_eq!(executions(&tag), 2);
        let key2 = unique("k");
        let ok = json!({"tag": tag});
        assert_eq!(
            env.post("/success-only")
                .key(&key2)
                .json(ok.clone())
                .send()
                .await
                .status,
            201
        );
        assert!(env
            .post("/success-only")
            .key(&key2)
            .json(ok)
            .send()
            .await
            .replayed());
        assert_eq!(executions(&tag), 3);
    }

    pub async fn cache_non_server_error_stores_4xx_not_5xx(env: &Env) {
        let tag = unique("t");
        let (k4, k5) = (unique("k"), unique("k"));
        let b4 = json!({"tag": tag, "status": 404});
        let b5 = json!({"tag": tag, "status": 502});
        env.post("/non-server-error")
            .key(&k4)
            .json(b4.clone())
            .send()
            .await;
        assert!(env
            .post("/non-server-error")
            .key(&k4)
            .json(b4)
            .send()
            .await
            .replayed());
        env.post("/non-server-error")
            .key(&k5)
            .json(b5.clone())
            .send()
            .await;
        assert!(!env
            .post("/non-server-error")
            .key(&k5)
            .json(b5)
            .send()
            .await
            .replayed());
        assert_eq!(executions(&tag), 3);
    }

    pub async fn no_store_response_is_not_stored(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "no_store": true});
        let first = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(first.status, 201);
        let again = env.post("/default").key(&key).json(body).send().await;
        assert_eq!(again.status, 201);
        assert!(!again.replayed());
        assert_eq!(again.json()["n"], 2);
        assert_eq!(executions(&tag), 2);
    }

    pub async fn optional_key_runs_without_idempotency(env: &Env) {
        let tag = unique("t");
        for n in 1..=2 {
            let r = env.post("/optional").json(input(&tag)).send().await;
            assert_eq!(r.status, 201);
            assert_eq!(r.json()["n"], n);
        }
        let key = unique("k");
        env.post("/optional")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(env
            .post("/optional")
            .key(&key)
            .json(input(&tag))
            .send()
            .await
            .replayed());
        assert_eq!(executions(&tag), 3);
    }

    pub async fn custom_header_and_replay_header(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        // The default header is not the key here.
        env.post("/custom")
            .key(&key)
            .json(input(&tag))
            .send()
            .await
            .assert_problem(400, "missing-key");
        let first = env
            .post("/custom")
            .header("X-Request-Id", &key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(first.status, 201);
        let again = env
            .post("/custom")
            .header("X-Request-Id", &key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(again.header("x-replayed"), Some("true"));
        assert_eq!(again.header("idempotent-replayed"), None);
        assert_eq!(executions(&tag), 1);
    }

    pub async fn scopes_are_separate(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let a = env
            .post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        let b = env.post("/other").key(&key).json(input(&tag)).send().await;
        assert!(!a.replayed() && !b.replayed());
        assert_eq!(executions(&tag), 2);
    }

    pub async fn principal_header_scopes_keys(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let alice = env
            .post("/principal")
            .key(&key)
            .header("X-Api-Key", "alice")
            .json(input(&tag))
            .send()
            .await;
        let bob = env
            .post("/principal")
            .key(&key)
            .header("X-Api-Key", "bob")
            .json(input(&tag))
            .send()
            .await;
        assert!(!bob.replayed(), "bob never sees alice's response");
        assert_ne!(alice.body, bob.body);
        let alice_again = env
            .post("/principal")
            .key(&key)
            .header("X-Api-Key", "alice")
            .json(input(&tag))
            .send()
            .await;
        assert!(alice_again.replayed());
        assert_eq!(alice_again.body, alice.body);
        env.post("/principal")
            .key(&key)
            .json(input(&tag))
            .send()
            .await
            .assert_problem(400, "missing-principal");
        assert_eq!(executions(&tag), 2);
    }

    pub async fn principal_function_scopes_keys(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let a = env
            .post("/principal-fn")
            .key(&key)
            .header("X-Tenant", "Acme")
            .json(input(&tag))
            .send()
            .await;
        let a2 = env
            .post("/principal-fn")
            .key(&key)
            .header("X-Tenant", "ACME")
            .json(input(&tag))
            .send()
            .await;
        assert!(a2.replayed(), "the function decides: same tenant");
        assert_eq!(a2.body, a.body);
        let b = env
            .post("/principal-fn")
            .key(&key)
            .header("X-Tenant", "Globex")
            .json(input(&tag))
            .send()
            .await;
        assert!(!b.replayed());
        env.post("/principal-fn")
            .key(&key)
            .json(input(&tag))
            .send()
            .await
            .assert_problem(400, "missing-principal");
        assert_eq!(executions(&tag), 2);
    }

    /// The client hangs up mid-handler: the handler still finishes, its response
    /// is stored, and the retry is a replay.
    pub async fn client_disconnect_still_completes(env: &Env) {
        use tokio::io::AsyncWriteExt;
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "delay_ms": 600}).to_string();
        let mut conn = tokio::net::TcpStream::connect(env.server.addr)
            .await
            .unwrap();
        let req = format!(
            "POST /default HTTP/1.1\r\nhost: test\r\nidempotency-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(conn);
        assert!(
            eventually(Duration::from_secs(20), || executions(&tag) == 1).await,
            "the handler ran to completion after the client left"
        );
        let mut retry;
        loop {
            retry = env
                .post("/default")
                .key(&key)
                .json(serde_json::from_str(&body).unwrap())
                .send()
                .await;
            if retry.status != 409 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(retry.status, 201);
        assert!(retry.replayed());
        assert_eq!(retry.json()["n"], 1);
        assert_eq!(executions(&tag), 1);
    }

    pub async fn panic_releases_claim_and_server_keeps_serving(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "panic_first": true});
        let first = env
            .post("/default")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        first.assert_problem(500, "handler-failed");
        // The server still serves, and the key is free again: the retry executes.
        let retry = env.post("/default").key(&key).json(body).send().await;
        assert_eq!(retry.status, 201);
        assert!(!retry.replayed());
        assert_eq!(retry.json()["n"], 2);
        assert_eq!(executions(&tag), 2);
    }

    /// `lease = "1s"`, the handler runs 2.5 s: without renewal the claim would lapse
    /// after 1 s and a duplicate would execute a second time.
    pub async fn lease_is_renewed_while_handler_runs(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "delay_ms": 2500});
        let first = env.post("/lease").key(&key).json(body.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let dup = env.post("/lease").key(&key).json(body.clone()).send().await;
        let first = first.await.unwrap();
        assert_eq!(first.status, 201);
        // Not a second execution: a 409, or (if the blocked thread delayed the
        // duplicate until the first finished) the identical replay.
        if dup.status == 409 {
            dup.assert_problem(409, "request-in-progress");
        } else {
            assert!(
                dup.replayed(),
                "second execution: {} {:?}",
                dup.status,
                dup.body
            );
            assert_eq!(dup.body, first.body);
        }
        assert!(env
            .post("/lease")
            .key(&key)
            .json(body)
            .send()
            .await
            .replayed());
        assert_eq!(executions(&tag), 1);
    }

    /// A claim whose owner died (claimed in the store, never renewed) blocks
    /// retries until its lease ends, then the retry executes.
    pub async fn expired_lease_lets_retry_execute(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = input(&tag).to_string();
        let id = RecordId::new(
            "default",
            None,
            &IdempotencyKey::parse(key.as_bytes()).unwrap(),
        );
        let fp = Fingerprint::of_request("POST", "/default", None, body.as_bytes());
        let claim = env
            .store
            .claim(&id, fp, OwnerToken::generate(), Duration::from_millis(700))
            .await
            .unwrap();
        assert_eq!(claim, Claim::Acquired);
        let blocked = env
            .post("/default")
            .key(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        blocked.assert_problem(409, "request-in-progress");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let r = env
            .post("/default")
            .key(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        assert_eq!(r.status, 201);
        assert!(!r.replayed());
        assert_eq!(executions(&tag), 1);
    }

    pub async fn expired_ttl_lets_key_run_again(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        env.post("/short-ttl")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(env
            .post("/short-ttl")
            .key(&key)
            .json(input(&tag))
            .send()
            .await
            .replayed());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = env
            .post("/short-ttl")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(!r.replayed(), "the record expired with its ttl");
        assert_eq!(executions(&tag), 2);
    }

    pub async fn operator_lookup_and_forget(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        env.post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        let ops = Idempotency::new(env.store.clone());
        let k = IdempotencyKey::parse(key.as_bytes()).unwrap();
        match ops.lookup("default", None, &k).await.unwrap() {
            Some(Record::Completed { response, .. }) => assert_eq!(response.status, 201),
            other => panic!("expected a completed record, got {other:?}"),
        }
        assert!(ops.forget("default", None, &k).await.unwrap());
        assert_eq!(ops.lookup("default", None, &k).await.unwrap(), None);
        let r = env
            .post("/default")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(!r.replayed(), "a forgotten key runs again");
        assert_eq!(executions(&tag), 2);
    }

    /// A memory store that refuses when full answers 503 and never evicts a
    /// record to make room.
    pub async fn refusing_store_full_is_503(env: &Env) {
        let store = MemoryStore::builder()
            .max_entries(3)
            .when_full(WhenFull::Refuse)
            .build();
        let small = env
            .sibling(AnyStore::Memory(store.clone()), Limits::default())
            .await;
        let tag = unique("t");
        let keys: Vec<_> = (0..3).map(|_| unique("k")).collect();
        for k in &keys {
            assert_eq!(
                small
                    .post("/default")
                    .key(k)
                    .json(input(&tag))
                    .send()
                    .await
                    .status,
                201
            );
        }
        let r = small
            .post("/default")
            .key(&unique("k"))
            .json(input(&tag))
            .send()
            .await;
        r.assert_problem(503, "store-full");
        assert!(r.header("retry-after").is_some());
        for k in &keys {
            assert!(
                small
                    .post("/default")
                    .key(k)
                    .json(input(&tag))
                    .send()
                    .await
                    .replayed(),
                "nothing evicted"
            );
        }
        assert_eq!(executions(&tag), 3);
    }

    /// The default memory store, full of completed records, evicts one to
    /// serve a new key (no burst locks new keys out); full of running
    /// claims, it answers 503: a claim is never evicted.
    pub async fn default_store_full_evicts_completed_never_claims(env: &Env) {
        let store = MemoryStore::builder().max_entries(3).build();
        let small = env
            .sibling(AnyStore::Memory(store.clone()), Limits::default())
            .await;
        let tag = unique("t");
        let keys: Vec<_> = (0..4).map(|_| unique("k")).collect();
        for k in &keys {
            let r = small.post("/default").key(k).json(input(&tag)).send().await;
            assert_eq!(r.status, 201, "a new key is served: {:?}", r.body);
        }
        let id = |k: &str| {
            RecordId::new(
                "default",
                None,
                &IdempotencyKey::parse(k.as_bytes()).unwrap(),
            )
        };
        let mut kept = 0;
        for k in &keys {
            if store.get(&id(k)).await.unwrap().is_some() {
                kept += 1;
            }
        }
        assert_eq!(kept, 3, "one completed record made room");
        assert!(store.get(&id(&keys[3])).await.unwrap().is_some());

        let claims = MemoryStore::builder().max_entries(3).build();
        let busy = env
            .sibling(AnyStore::Memory(claims), Limits::default())
            .await;
        let slow = json!({"tag": tag, "delay_ms": 800});
        let running: Vec<_> = (0..3)
            .map(|_| {
                busy.post("/default")
                    .key(&unique("k"))
                    .json(slow.clone())
                    .spawn()
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = busy
            .post("/default")
            .key(&unique("k"))
            .json(input(&tag))
            .send()
            .await;
        r.assert_problem(503, "store-full");
        for r in running {
            assert_eq!(r.await.unwrap().status, 201, "no running claim was evicted");
        }
    }

    pub async fn extractor_shapes_work(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let form = |k: &str| {
            env.post("/shapes/5?a=b")
                .key(k)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("tag={tag}"))
        };
        let first = form(&key).send().await;
        assert_eq!(first.status, 200);
        assert_eq!(
            first.json(),
            json!({"prefix": "things", "id": 5, "q": {"a": "b"}, "n": 1})
        );
        assert!(form(&key).send().await.replayed());
        // Early `return` and `?` answer as written and are stored like any answer.
        let missing = env
            .post("/shapes/5")
            .key(&unique("k"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("other=1")
            .send()
            .await;
        assert_eq!(missing.status, 400);
        assert_eq!(&missing.body[..], b"no tag");
        // A path rejection is the extractor's own (400 on axum, 404 on actix);
        // nothing is claimed, so the key still works.
        let k2 = unique("k");
        let bad_path = env
            .post("/shapes/notanumber")
            .key(&k2)
            .body("")
            .send()
            .await;
        assert!(matches!(bad_path.status, 400 | 404), "{}", bad_path.status);
        assert_ne!(
            bad_path.header("content-type"),
            Some("application/problem+json")
        );
        let tag2 = unique("t");
        let ok = env
            .post("/shapes/6")
            .key(&k2)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("tag={tag2}"))
            .send()
            .await;
        assert_eq!(ok.status, 200);
        assert!(!ok.replayed());
        assert_eq!(executions(&tag2), 1);
        // Bytes body.
        let k3 = unique("k");
        let tag3 = unique("t");
        env.post("/bytes")
            .key(&k3)
            .body(input(&tag3).to_string())
            .send()
            .await;
        assert!(env
            .post("/bytes")
            .key(&k3)
            .body(input(&tag3).to_string())
            .send()
            .await
            .replayed());
        assert_eq!(executions(&tag), 1);
        assert_eq!(executions(&tag3), 1);
    }

    /// Routes under a prefix with a parameter (`/accounts/{id}/pay`): the
    /// fingerprint covers the full path, so the same key and body for another
    /// account is a different request (422), not a replay of the first.
    pub async fn nested_routes_fingerprint_the_full_path(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let first = env
            .post("/accounts/1/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(first.status, 201);
        assert!(env
            .post("/accounts/1/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await
            .replayed());
        let other = env
            .post("/accounts/2/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        other.assert_problem(422, "key-reused");
        assert_eq!(executions(&tag), 1);
    }

    /// A key header sent twice (a proxy appending its own) is refused rather than
    /// read as either value.
    pub async fn repeated_key_header_is_400(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let r = env
            .post("/default")
            .key(&key)
            .key(&unique("k"))
            .json(input(&tag))
            .send()
            .await;
        r.assert_problem(400, "invalid-key");
        let p = env
            .post("/principal")
            .key(&key)
            .header("X-Api-Key", "alice")
            .header("X-Api-Key", "mallory")
            .json(input(&tag))
            .send()
            .await;
        p.assert_problem(400, "missing-principal");
        assert_eq!(executions(&tag), 0);
    }

    /// The life cycle as middleware over plain handlers (`/layered/pay` has no
    /// attribute): the same replay, 409, 422 and 400 as the macro.
    pub async fn middleware_makes_plain_handlers_idempotent(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let first = env
            .post("/layered/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(first.status, 201);
        let again = env
            .post("/layered/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(again.replayed());
        assert_eq!(again.body, first.body);
        env.post("/layered/pay")
            .key(&key)
            .json(json!({"tag": tag, "status": 200}))
            .send()
            .await
            .assert_problem(422, "key-reused");
        env.post("/layered/pay")
            .json(input(&tag))
            .send()
            .await
            .assert_problem(400, "missing-key");
        let slow_key = unique("k");
        let slow = json!({"tag": tag, "delay_ms": 600});
        let running = env
            .post("/layered/pay")
            .key(&slow_key)
            .json(slow.clone())
            .spawn();
        tokio::time::sleep(Duration::from_millis(150)).await;
        env.post("/layered/pay")
            .key(&slow_key)
            .json(slow)
            .send()
            .await
            .assert_problem(409, "request-in-progress");
        assert_eq!(running.await.unwrap().status, 201);
        assert_eq!(executions(&tag), 2);
    }

    /// The middleware forms leave safe methods alone: listing needs no key.
    pub async fn safe_methods_pass_the_middleware(env: &Env) {
        let r = env.get("/layered/pay").send().await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"listed");
        let again = env.get("/layered/pay").key(&unique("k")).send().await;
        assert_eq!(again.status, 200);
        assert!(!again.replayed());
    }

    /// With `include_safe_methods(true)`, the middleware puts safe methods
    /// through the life cycle too: a key is required and the answer replays.
    pub async fn safe_methods_can_be_included(env: &Env) {
        env.get("/layered-all/pay")
            .send()
            .await
            .assert_problem(400, "missing-key");
        let key = unique("k");
        let first = env.get("/layered-all/pay").key(&key).send().await;
        assert_eq!(first.status, 200, "{:?}", first.body);
        assert!(!first.replayed());
        let again = env.get("/layered-all/pay").key(&key).send().await;
        assert!(again.replayed(), "{} {:?}", again.status, again.body);
        assert_eq!(&again.body[..], b"listed");
    }

    /// A percent-encoded spelling of the same path is the same request: the
    /// retry replays rather than answering 422.
    pub async fn percent_encoded_path_is_the_same_request(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let first = env
            .post("/accounts/1/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert_eq!(first.status, 201);
        let again = env
            .post("/accounts/%31/pay")
            .key(&key)
            .json(input(&tag))
            .send()
            .await;
        assert!(again.replayed(), "{} {:?}", again.status, again.body);
        assert_eq!(again.body, first.body);
        assert_eq!(executions(&tag), 1);
    }

    /// An answer that invites a retry (503, 429) is not stored under the
    /// default `cache = "all"`: the retry runs the handler again.
    pub async fn retry_inviting_answers_are_not_stored(env: &Env) {
        for status in [503, 429] {
            let (tag, key) = (unique("t"), unique("k"));
            let body = json!({"tag": tag, "status": status});
            let first = env
                .post("/default")
                .key(&key)
                .json(body.clone())
                .send()
                .await;
            assert_eq!(first.status, status);
            let retry = env.post("/default").key(&key).json(body).send().await;
            assert_eq!(retry.status, status);
            assert!(!retry.replayed());
            assert_eq!(executions(&tag), 2, "status {status}");
        }
    }

    /// `retry_inviting = "store"` keeps a retry-inviting answer like any
    /// other: the retry gets the stored 503, and the handler ran once.
    pub async fn retry_inviting_answers_can_be_stored(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "status": 503});
        let first = env
            .post("/store-retry-inviting")
            .key(&key)
            .json(body.clone())
            .send()
            .await;
        assert_eq!(first.status, 503);
        let retry = env
            .post("/store-retry-inviting")
            .key(&key)
            .json(body)
            .send()
            .await;
        assert_eq!(retry.status, 503);
        assert!(retry.replayed());
        assert_eq!(retry.body, first.body);
        assert_eq!(executions(&tag), 1);
    }

    /// A declared `Content-Length` over the limit is refused (413) before any
    /// of the body is sent or read.
    pub async fn declared_oversized_body_is_413_before_the_body(env: &Env) {
        let lines =
            crate::answers_to_head_only(env.server.addr, "/default", &unique("k"), 2 * 1024 * 1024)
                .await;
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(last.starts_with("HTTP/1.1 413"), "answers: {lines:?}");
    }

    /// `lease = "1s"`, and the handler *blocks its thread* for 2.5 s (a
    /// synchronous call): renewals must not depend on that thread (actix workers
    /// are single-threaded), or the claim lapses and a duplicate runs again.
    pub async fn blocking_handler_keeps_its_lease(env: &Env) {
        let (tag, key) = (unique("t"), unique("k"));
        let body = json!({"tag": tag, "block_ms": 2500});
        let first = env.post("/lease").key(&key).json(body.clone()).spawn();
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let dup = env.post("/lease").key(&key).json(body.clone()).send().await;
        let first = first.await.unwrap();
        assert_eq!(first.status, 201);
        // Not a second execution: a 409, or (if the blocked thread delayed the
        // duplicate until the first finished) the identical replay.
        if dup.status == 409 {
            dup.assert_problem(409, "request-in-progress");
        } else {
            assert!(
                dup.replayed(),
                "second execution: {} {:?}",
                dup.status,
                dup.body
            );
            assert_eq!(dup.body, first.body);
        }
        assert!(env
            .post("/lease")
            .key(&key)
            .json(body)
            .send()
            .await
            .replayed());
        assert_eq!(executions(&tag), 1);
    }
);
