use idempotent_runtime::axum::idempotent;

#[idempotent(ttl = "500ms")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
