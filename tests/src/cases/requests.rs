//! Conformance cases: keys, replays, mismatches and conflicts (what a
//! retry gets).

use super::*;

/// This file's text, for the check that no case sits outside the invocation
/// below.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("requests.rs");

// `conformance_suite!` runs each function defined in this invocation, for
// every adapter × store; there is no other list of them.
conformance_cases!(
    __conformance_cases_requests;
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
);
