use idempotent_runtime::axum::idempotent;

#[idempotent(ttl = "24h", scope = "payments", ttl = "1h")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
