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
