#![deny(warnings)]
use axum::routing::post;
use axum::{Json, Router};
use idempotent_runtime::axum::idempotent;
use idempotent_runtime::RequestHead;

fn account(head: &RequestHead<'_>) -> Option<String> {
    head.header("x-account").map(str::to_owned)
}

#[idempotent(
    header = "X-Idempotency-Key",
    ttl = "7d",
    scope = "payouts",
    required = false,
    lease = "1m",
    on_conflict = "wait",
    wait = "5s",
    cache = "non_server_error",
    retry_inviting = "store",
    replay_header = "X-Served-From-Cache",
    principal = account,
    state = (),
)]
async fn payout(Json(n): Json<u64>) -> Json<u64> {
    Json(n)
}

#[idempotent(principal = "Authorization", cache = "success", retry_inviting = "release", on_conflict = "reject", ttl = "90s", lease = "1s")]
async fn by_header(Json(n): Json<u64>) -> Json<u64> {
    Json(n)
}

/// Waits for the runtime's default time.
#[idempotent(on_conflict = "wait")]
async fn waits(Json(n): Json<u64>) -> Json<u64> {
    Json(n)
}

fn main() {
    let _app: Router = Router::new().route("/payouts", post(payout)).route("/h", post(by_header)).route("/w", post(waits));
}
