use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "payments", ttl "24h")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
