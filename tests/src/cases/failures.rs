//! Conformance cases: hang-ups, panics, leases, expiry, operators and a
//! full store (what survives when things go wrong).

use super::*;

/// This file's text, for the check that no case sits outside the invocation
/// below.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("failures.rs");

// `conformance_suite!` runs each function defined in this invocation, for
// every adapter × store; there is no other list of them.
conformance_cases!(
    __conformance_cases_failures;
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
);
