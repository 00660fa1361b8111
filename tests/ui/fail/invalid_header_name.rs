use idempotent_runtime::axum::idempotent;

#[idempotent(header = "Idempotency Key")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
