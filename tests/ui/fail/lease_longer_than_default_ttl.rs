use idempotent_runtime::axum::idempotent;

// Longer than the default `ttl` (24h), which the runtime holds.
#[idempotent(lease = "2d")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
