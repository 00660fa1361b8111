use idempotent_runtime::axum::idempotent;

#[idempotent(headr = "Idempotency-Key")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
