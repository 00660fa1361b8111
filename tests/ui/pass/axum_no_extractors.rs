#![deny(warnings)]
use axum::routing::post;
use axum::Router;
use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "ping")]
async fn ping() -> &'static str {
    "pong"
}

#[idempotent(scope = "unit")]
async fn unit() {}

fn main() {
    let _app: Router = Router::new().route("/ping", post(ping)).route("/unit", post(unit));
}
