use idempotent_runtime::axum::idempotent;

#[idempotent(retry_inviting = "keep")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
