use idempotent_runtime::axum::idempotent;

#[idempotent(cache = "success", retry_inviting = "store")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
