use idempotent_runtime::axum::idempotent;

#[idempotent(ttl = "30m", lease = "1h")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
