use idempotent_runtime::axum::idempotent;

#[idempotent(lease = "500ms")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
