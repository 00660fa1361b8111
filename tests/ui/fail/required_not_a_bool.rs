use idempotent_runtime::axum::idempotent;

#[idempotent(required = "yes")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
