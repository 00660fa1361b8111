//! Conformance cases: limits and caching rules, optional keys, custom
//! headers, scopes and principals (what is stored, under which identity).

use super::*;

/// This file's text, for the check that no case sits outside the invocation
/// below.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("storing.rs");

// `conformance_suite!` runs each function defined in this invocation, for
// every adapter × store; there is no other list of them.
conformance_cases!(
    __conformance_cases_storing;
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
);
