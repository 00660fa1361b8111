//! Conformance cases: handler shapes, paths, the middleware forms,
//! retry-inviting answers and blocking handlers.

use super::*;

/// This file's text, for the check that no case sits outside the invocation
/// below.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("shapes.rs");

// `conformance_suite!` runs each function defined in this invocation, for
// every adapter × store; there is no other list of them.
conformance_cases!(
    __conformance_cases_shapes;
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

    /// The framework's body rejections are problems (through `ProblemJson`
    /// and `json_config`), whether the body is extracted before the claim
    /// (the attribute) or after it (the middleware), and leave the key free
    /// for the corrected request; an unknown path is a 404 problem.
    pub async fn body_rejections_are_problems_and_leave_the_key_free(env: &Env) {
        for path in ["/default", "/layered/pay"] {
            let (tag, key) = (unique("t"), unique("k"));
            let raw = |content_type: Option<&str>, body: &'static str| {
                let req = env.post(path).key(&key).body(body);
                match content_type {
                    Some(ct) => req.header("content-type", ct),
                    None => req,
                }
            };
            let json = Some("application/json");
            for (content_type, body, status, kind) in [
                (json, "{", 400, "malformed-body"),
                (None, "{}", 415, "unsupported-media-type"),
                (json, r#"{"tag": 5}"#, 422, "invalid-body"),
            ] {
                let refused = raw(content_type, body).send().await;
                refused.assert_problem(status, kind);
                assert_eq!(refused.header("cache-control"), Some("no-store"), "{path}");
            }
            let ran = env.post(path).key(&key).json(input(&tag)).send().await;
            assert_eq!(ran.status, 201, "{path}: {:?}", ran.body);
            assert!(!ran.replayed(), "{path}: the key was left free");
            assert_eq!(executions(&tag), 1);
        }
        env.get("/nowhere")
            .send()
            .await
            .assert_problem(404, "not-found");
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
