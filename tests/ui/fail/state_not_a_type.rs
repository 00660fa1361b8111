use idempotent_runtime::axum::idempotent;

#[idempotent(state = "AppState")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
