use idempotent_runtime::axum::idempotent;

#[idempotent(wait = "10s")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
