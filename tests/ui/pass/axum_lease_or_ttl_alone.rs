#![deny(warnings)]
//! One of `lease` and `ttl` written, the other the runtime's default: the
//! compile-time check passes when the lease does not outlive the TTL.
use axum::routing::post;
use axum::Router;
use idempotent_runtime::axum::idempotent;

#[idempotent(lease = "2m")]
async fn lease_only() -> &'static str {
    "ok"
}

#[idempotent(ttl = "1h")]
async fn ttl_only() -> &'static str {
    "ok"
}

#[idempotent(ttl = "30s")]
async fn ttl_as_long_as_the_default_lease() -> &'static str {
    "ok"
}

fn main() {
    let _app: Router = Router::new()
        .route("/lease", post(lease_only))
        .route("/ttl", post(ttl_only))
        .route("/ttl-30s", post(ttl_as_long_as_the_default_lease));
}
