use idempotent_runtime::axum::idempotent;

#[idempotent(ttl = "30m", lease = "1h")]
async fn create() -> &'static str {
    "created"
}

#[idempotent(ttl = "10s")]
async fn shorter_than_default_lease() -> &'static str {
    "created"
}

fn main() {}
