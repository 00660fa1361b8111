//! axum-specific behaviour (the rest is in the shared conformance suite).

use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::stores::{Memory, StoreFactory};
use idempotent_tests::{unique, Env};

/// axum's `.layer()` covers only routes added before it. A handler added
/// after the app's `IdempotencyLayer` answers 500 instead of silently using
/// a per-process default store (which would break exactly-once across
/// processes sharing the installed one).
#[tokio::test]
async fn handler_outside_the_layer_fails_closed() {
    let env = Env::start::<Axum>(Memory::make().await.expect("memory store")).await;
    let tag = unique("t");
    let r = env
        .post("/outside")
        .key(&unique("k"))
        .json(serde_json::json!({ "tag": tag }))
        .send()
        .await;
    r.assert_problem(500, "no-store");
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("IdempotencyLayer"));
    assert_eq!(executions(&tag), 0);
}

/// On axum the body-limit decision comes before hyper is asked for the body,
/// so a client that sent `Expect: 100-continue` with an oversized declared
/// length gets the 413 and no `100 Continue` inviting it to send the body.
/// (actix-web answers `100 Continue` itself, before any handler runs.)
#[tokio::test]
async fn oversized_declared_body_gets_no_100_continue() {
    let env = Env::start::<Axum>(Memory::make().await.expect("memory store")).await;
    let lines =
        idempotent_tests::answers_to_head_only(env.server.addr, "/default", &unique("k"), 2 << 20)
            .await;
    assert_eq!(lines.len(), 1, "answers: {lines:?}");
    assert!(lines[0].starts_with("HTTP/1.1 413"), "answers: {lines:?}");
}
